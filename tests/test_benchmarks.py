"""The benchmark suite's quick mode: the same code as the full run, on tiny sizes, so the
benchmarks cannot rot. It checks that every figure is produced, not how fast anything is."""

from __future__ import annotations

import json
import math
import sys

from wap.settings import REPO_ROOT


def test_quick_benchmarks_produce_every_figure(data_dir, spark, tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import run as benchmarks

    out = tmp_path / "results"
    results = benchmarks.main(["--quick", "--out", str(out)])

    sections = results["sections"]
    assert set(sections) == set(benchmarks.SECTIONS)
    ratios = [
        sections["publish"]["ratio"],
        *(r[k] for r in sections["wap"]["sizes"] + sections["wap"]["compound"] for k in ("ratio", "gate_rows_per_s")),
        sections["backfill"]["ratio"],
        sections["backfill"]["ratio_cold_session_per_task"],
        sections["airflow"]["outside_steps_s"],
        sections["airflow"]["ratio_fork_vs_thread"],
        sections["memory"]["ratio"],
        sections["parse"]["ratio"],
        *(r[k] for r in sections["ranges"]["sizes"] for k in ("ratio_range_dag", "ratio_per_day", "ratio_range_steps")),
    ]
    assert all(isinstance(r, float) and math.isfinite(r) and r > 0 for r in ratios), ratios
    # Every size of the sweep was published by the swap and by the copying alternatives.
    for row in sections["publish"]["sweep"]:
        assert row["publish_s"] > 0 and row["spark_rewrite_s"] > 0 and row["files"] >= 1
    # The backfill published every day it ran, and its phases add up to no more than its wall time.
    backfill = sections["backfill"]
    assert len(backfill["per_day"]) == backfill["days"]
    for day in backfill["per_day"]:
        assert day["rows"] > 0
        named = sum(day[k] for k in ("spark_session", "read", "transform", "audit", "publish", "ledger", "lineage"))
        assert named <= day["wall_s"] + 1e-6

    # The range section compared every day's checksum across its paths (it raises otherwise).
    assert [r["checksums_equal"] for r in sections["ranges"]["sizes"]] == [True] * len(
        results["config"]["range_orders"]
    )

    # Every timed publish was a commit (a new snapshot each), none `skipped` for repeating
    # what was live: run.py raises NoCommitError otherwise, and records what each committed.
    config = results["config"]
    for row in sections["publish"]["sweep"]:
        commits = row["commits"]
        assert len(commits["swap"]) == config["swap_repeats"], commits
        assert len(commits["iceberg_overwrite"]) == (config["repeats"] if row["iceberg_overwrite_s"] else 0)
        assert len(commits["iceberg_upsert"]) == (config["repeats"] if row["iceberg_upsert_s"] else 0)
        for ids in commits.values():
            assert len(set(ids)) == len(ids), commits
    publishes = [p for r in sections["wap"]["sizes"] + sections["wap"]["compound"] for p in r["publishes"]]
    publishes += sections["memory"]["sizes"] + backfill["per_day"] + sections["airflow"]["per_day"]
    wap_sizes = len(config["wap"]) + len(config["wap_compound"])
    runs = backfill["days"] + config["airflow_days"]
    assert len(publishes) == wap_sizes * config["repeats"] + len(config["memory"]) + runs
    assert {p["status"] for p in publishes} == {"published"}, publishes
    snapshots = [p["snapshot_id"] for p in publishes]
    assert len(set(snapshots)) == len(snapshots), snapshots

    written = json.loads((out / "results.json").read_text())
    assert written["machine"]["cores"] and written["machine"]["pyspark"]
    table = (out / "results.md").read_text()
    assert "| 1 | publish" in table and "| 6 | DAG parse" in table
    assert (out / "publish_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
