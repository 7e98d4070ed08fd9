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
        *(r["ratio"] for r in sections["wap"]["sizes"]),
        *(r["gate_rows_per_s"] for r in sections["wap"]["sizes"]),
        sections["backfill"]["ratio"],
        sections["backfill"]["ratio_cold_session_per_task"],
        sections["memory"]["ratio"],
        sections["parse"]["ratio"],
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

    written = json.loads((out / "results.json").read_text())
    assert written["machine"]["cores"] and written["machine"]["pyspark"]
    table = (out / "results.md").read_text()
    assert "| 1 | publish" in table and "| 6 | DAG parse" in table
    assert (out / "publish_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
