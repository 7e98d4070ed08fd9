"""Where things live. Every location comes from the environment, with embedded defaults.

The defaults put everything under one data folder (`WAP_DATA_DIR`, default `<repo>/data`):
an Iceberg SQL catalog on SQLite, a warehouse on local disk, a SQLite run ledger and the
landed source files. Deployed, the same code reads Postgres/S3 URLs from the same variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    landing_dir: Path
    catalog_name: str
    catalog_uri: str
    warehouse: str
    ledger_url: str
    spark_remote: str | None
    sql_dir: Path
    expectations_dir: Path
    dags_dir: Path

    @property
    def catalog_properties(self) -> dict[str, str]:
        return {"type": "sql", "uri": self.catalog_uri, "warehouse": self.warehouse}


def load_settings() -> Settings:
    """Read the settings from the environment (cheap; call it where you need it)."""
    env = os.environ
    data_dir = Path(env.get("WAP_DATA_DIR", REPO_ROOT / "data")).resolve()
    return Settings(
        data_dir=data_dir,
        landing_dir=Path(env.get("WAP_LANDING_DIR", data_dir / "landing")),
        catalog_name=env.get("WAP_CATALOG_NAME", "wap"),
        catalog_uri=env.get("WAP_CATALOG_URI", f"sqlite:///{data_dir / 'catalog.db'}"),
        warehouse=env.get("WAP_WAREHOUSE", (data_dir / "warehouse").as_uri()),
        ledger_url=env.get("WAP_LEDGER_URL", f"sqlite:///{data_dir / 'ledger.db'}"),
        spark_remote=env.get("WAP_SPARK_REMOTE") or None,
        sql_dir=Path(env.get("WAP_SQL_DIR", REPO_ROOT / "include" / "sql")),
        expectations_dir=Path(env.get("WAP_EXPECTATIONS_DIR", REPO_ROOT / "expectations")),
        dags_dir=Path(env.get("AIRFLOW__CORE__DAGS_FOLDER", REPO_ROOT / "dags")),
    )
