"""Where things live. Every location comes from the environment, with embedded defaults.

The defaults put everything under one data folder (`WAP_DATA_DIR`, default `<repo>/data`):
an Iceberg SQL catalog on SQLite, a warehouse on local disk, a SQLite run ledger and the
landed source files. Deployed, the same code reads Postgres/S3 URLs from the same variables.

Object store (a warehouse such as `s3://bucket/warehouse`): `WAP_S3_ENDPOINT` (the URL of an
S3-compatible store such as MinIO; unset: AWS), `WAP_S3_PATH_STYLE` (`true` for MinIO/moto,
which serve `host/bucket/key` rather than `bucket.host/key`) and the standard `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`. Each reaches the catalog's FileIO
only when set (unset credentials: the AWS SDK's own chain). Set `AWS_REGION` with a custom
endpoint: without it pyiceberg asks AWS which region the bucket is in.

JDBC drivers for Spark's JDBC reader: `WAP_JDBC_JARS`, comma-separated jar paths (or URLs Spark
accepts) that a local Spark session or local Spark Connect server loads at start. Unset: the
PostgreSQL driver `make` installs (`<repo>/.venv/jars/postgresql.jar`), else Debian's
(`/usr/share/java/postgresql.jar`), else none. Set it empty to load none.

Ledger leases: `WAP_LEASE_SECONDS` (default 60), how long an attempt's hold on its ledger row
lasts unless renewed (every quarter of it, while a step runs). An attempt whose process is
gone is seen dead at once on its own host, and within this time from any other (`wap.ledger`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where the PostgreSQL JDBC driver is looked for when WAP_JDBC_JARS is unset, first found wins.
DEFAULT_JDBC_JARS = (REPO_ROOT / ".venv" / "jars" / "postgresql.jar", Path("/usr/share/java/postgresql.jar"))


@dataclass(frozen=True)
class ObjectStore:
    """How to reach an S3-compatible object store; every field unset means the SDK defaults."""

    endpoint: str | None = None
    path_style: bool | None = None
    region: str | None = None
    # Kept out of repr: settings get logged.
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def io_properties(self) -> dict[str, str]:
        """The pyiceberg FileIO properties (`s3.*`) for what is set: the one mapping of these options.

        The catalog's tables and `staging.file_system` (staging, quarantine, upkeep) both
        build their S3 filesystem from these, so they reach the same store the same way.
        """
        values = {
            "s3.endpoint": self.endpoint,
            "s3.region": self.region,
            "s3.access-key-id": self.access_key_id,
            "s3.secret-access-key": self.secret_access_key,
            "s3.session-token": self.session_token,
        }
        if self.path_style is not None:
            values["s3.force-virtual-addressing"] = "false" if self.path_style else "true"
        return {key: value for key, value in values.items() if value}


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
    object_store: ObjectStore = ObjectStore()
    jdbc_jars: tuple[str, ...] = ()
    lease_seconds: float = 60.0

    def unreachable_database(self, error: BaseException) -> str | None:
        """What `error` means when it is a refused or lost connection to the catalog's or the
        ledger's database: which one, and what to do. None for any other error."""
        import sqlalchemy.exc

        if not isinstance(error, sqlalchemy.exc.DBAPIError):
            return None
        said = str(error.orig or error)
        named = {
            "the Iceberg catalog's database (WAP_CATALOG_URI)": self.catalog_uri,
            "the run ledger's database (WAP_LEDGER_URL)": self.ledger_url,
        }
        # A refused connect names the server; a connection dropped mid-statement is a disconnect.
        which = [name for name, url in named.items() if (at := _address(url)) and at in said]
        if not which and not error.connection_invalidated:
            return None  # another database error (a constraint, a locked SQLite file): not this
        which = which or list(named)
        return (
            f"{' or '.join(which)} cannot be reached: {said.strip().splitlines()[0]}. A retry can succeed once it "
            "answers again (Airflow retries this task; a commit this attempt may have made is found by the "
            "retry, never made twice). If it persists, check the server: `wap tables` connects to the catalog, "
            "`wap ledger` to the ledger."
        )

    @property
    def catalog_properties(self) -> dict[str, str]:
        # A catalog passes its properties on to the FileIO of every table it loads.
        return {
            "type": "sql",
            "uri": self.catalog_uri,
            # As the ledger's engine: a connection the catalog's server closed is replaced, not used.
            "pool_pre_ping": "true",
            "warehouse": self.warehouse,
            **self.object_store.io_properties,
        }


def _address(url: str) -> str | None:
    """How a PostgreSQL driver names the server of `url` in its errors: `"host", port N`."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return f'"{parsed.host}", port {parsed.port or 5432}' if parsed.host else None


def _flag(name: str, value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    word = value.strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


def _jdbc_jars(value: str | None) -> tuple[str, ...]:
    if value is None:
        found = next((path for path in DEFAULT_JDBC_JARS if path.is_file()), None)
        return (str(found),) if found else ()
    return tuple(jar.strip() for jar in value.split(",") if jar.strip())


def _seconds(name: str, value: str | None, default: float) -> float:
    if value is None or not value.strip():
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: use a number of seconds, e.g. 60") from None
    if not 0 < seconds < 10**9:  # also refuses nan and inf
        raise ValueError(f"{name}={value!r}: must be a finite number of seconds, more than 0")
    return seconds


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
        object_store=ObjectStore(
            endpoint=env.get("WAP_S3_ENDPOINT") or None,
            path_style=_flag("WAP_S3_PATH_STYLE", env.get("WAP_S3_PATH_STYLE")),
            region=env.get("AWS_REGION") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        ),
        jdbc_jars=_jdbc_jars(env.get("WAP_JDBC_JARS")),
        lease_seconds=_seconds("WAP_LEASE_SECONDS", env.get("WAP_LEASE_SECONDS"), 60.0),
    )
