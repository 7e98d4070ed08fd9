"""docker-compose.yaml, and its Celery variant, checked statically: there is no Docker engine
on the development machines or in CI, so nothing here starts a container or touches the network.

What is checked: the file's shape against the Compose Specification's keys; every image
pinned (compose and Dockerfiles); versions that must agree with requirements.txt (Airflow,
Python, Spark = pyspark, hadoop-aws = the Hadoop pyspark bundles); every environment
variable the pipeline code reads set for the Airflow services (found by scanning `plugins/`
and `dags/`, so a new variable fails here until compose sets it); every `${VAR}` defined
in .env.example; no secret written into the file; mounted paths present; healthchecks on
every long-running service and a condition on every `depends_on`; the databases, landing
folder and service addresses consistent across services.

The Celery variant is the base file with docker-compose.celery.yaml on top (`docker compose
-f docker-compose.yaml -f docker-compose.celery.yaml`). `load_compose` merges the files as
Compose does, so every check above runs on both (`variant`); the `test_celery_*` tests check
what the override adds: one executor, broker and result backend for every Airflow service,
Redis, and workers that run the tasks where the scheduler ran them.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import importlib.util
import json
import re
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
CELERY_FILE = REPO / "docker-compose.celery.yaml"
# The deployments, each the files of its `docker compose -f … -f …`, and its executor.
VARIANTS = {"local": (COMPOSE_FILE,), "celery": (COMPOSE_FILE, CELERY_FILE)}
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
ENV_EXAMPLE = REPO / ".env.example"
CODE_ROOTS = (REPO / "plugins", REPO / "dags")

# The Compose Specification's top-level keys and service keys (compose-spec/schema/compose-spec.json);
# `x-` keys are extensions. A misspelt key (`helthcheck`) is otherwise ignored by no one but Docker.
TOP_LEVEL_KEYS = {"version", "name", "include", "services", "networks", "volumes", "secrets", "configs", "models"}
SERVICE_KEYS = {
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup", "cgroup_parent",
    "command", "configs", "container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota",
    "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus", "cpuset", "credential_spec", "depends_on",
    "deploy", "develop", "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "domainname",
    "entrypoint", "env_file", "environment", "expose", "extends", "external_links", "extra_hosts", "gpus",
    "group_add", "healthcheck", "hostname", "image", "init", "ipc", "isolation", "label_file", "labels",
    "links", "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit",
    "models", "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit",
    "platform", "ports", "post_start", "pre_stop", "privileged", "profiles", "provider", "pull_policy",
    "read_only", "restart", "runtime", "scale", "secrets", "security_opt", "shm_size", "stdin_open",
    "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "use_api_socket",
    "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
AIRFLOW_SERVICES = (*AIRFLOW_COMMANDS, "airflow-init")
SPARK_SERVICES_READING_LANDING = ("spark-connect", "spark-worker")
# What docker-compose.celery.yaml sets for every Airflow service, and for its workers alone.
CELERY_SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
}
CELERY_WORKER_SETTINGS = {"AIRFLOW__CELERY__WORKER_CONCURRENCY", "DUMB_INIT_SETSID"}

# Read by the code (or set by the embedded and test environments) but not for a deployment
# to set, and why. Anything else the code reads must be in compose.
NOT_FOR_DEPLOYMENT = {
    "JAVA_HOME": "only the in-process local Spark needs Java (wap.spark.check_java); deployed, Java is in the Spark images",
    "WAP_SPARK_MASTER": "master of the in-process local Spark; unused once WAP_SPARK_REMOTE is set",
    "WAP_SPARK_DRIVER_MEMORY": "driver memory of the in-process local Spark; the Connect server sets its own",
    "WAP_SPARK_LOG_LEVEL": "log level of the in-process local Spark",
    "PYSPARK_PYTHON": "the Python of a local Spark's (or local Connect server's) UDF workers; the Spark images have their own",
    "AWS_SESSION_TOKEN": "temporary (STS) credentials only; the object store's key here is a static one",
    "AIRFLOW_HOME": "the official Airflow image sets it",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "the embedded setup's switch for tests",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "the tests pick free ports on a shared host; each container has its own",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "the tests pick free ports on a shared host; each container has its own",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "the tests skip the login; compose declares users",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "the tests' fast DAG discovery; the default suits a deployment",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "the tests' allowance for a loaded 2-core machine",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "Airflow's default (INFO) suits a deployment",
}
ENV_NAME = re.compile(r"(?:WAP|OPENLINEAGE)_[A-Z0-9_]+")
VARIABLE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?[^}]*\}|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|ACCESS_KEY", re.IGNORECASE)
SECRET_ASSIGNMENT = re.compile(r"(?i)(password|secret[._-]?key|access[._-]?key|token)=(?!\$\{)\S")
# The user may be empty: Redis URLs carry a password alone (`redis://:PASSWORD@host`).
URL_PASSWORD = re.compile(r"://[^:/@\s]*:(?P<password>[^@\s]+)@")
ADDRESS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?:[^@/\s\"]*@)?(?P<host>[A-Za-z0-9_.-]+)")


# ------------------------------------------------------------------ loading
# Compose's merge of several files (compose-spec 13-merge.md), for the keys these files use:
# mappings merge by key; sequences append, except `volumes` (and `secrets`, `configs`), whose
# entries merge by target; `command`, `entrypoint` and `healthcheck.test` are replaced;
# `environment` merges per variable (its list and mapping forms alike).
REPLACED = {"command", "entrypoint"}
UNIQUE_BY_TARGET = {"volumes", "secrets", "configs"}
# Compose's documentation: `extends` never shares these with the extending service.
NOT_SHARED_BY_EXTENDS = {"depends_on", "volumes_from"}


def merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """`override` merged onto `base`, as Compose merges a later file onto an earlier one
    (and a service onto the one it extends). Returns new containers, never changes either:
    YAML anchors share one object between services."""
    service_key = path[-1] if len(path) == 3 and path[0] == "services" else None
    if service_key == "environment":
        return {**environment({"environment": base}), **environment({"environment": override})}
    if service_key in REPLACED or path[-2:] == ("healthcheck", "test"):
        return copy.deepcopy(override)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value, (*path, key)) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if service_key in UNIQUE_BY_TARGET:
            replaced = {target(item): item for item in override}
            kept = [copy.deepcopy(replaced.pop(target(item), item)) for item in base]
            return kept + [copy.deepcopy(item) for item in override if target(item) in replaced]
        return copy.deepcopy(base + override)
    return copy.deepcopy(override)


def target(item: Any) -> str:
    """The target path of a `volumes` (or `secrets`, `configs`) entry, short or long form."""
    return item["target"] if isinstance(item, dict) else volumes({"volumes": [item]})[0][2]


def extended(service: dict[str, Any], directory: Path) -> dict[str, Any]:
    """A service with its `extends: {file, service}` resolved: the service it names (from that
    file, read alone) with this one merged onto it, less what `extends` does not share."""
    extends = service.get("extends")
    if extends is None:
        return service
    assert isinstance(extends, dict) and extends.get("file"), "extends within one file: not supported here"
    path = directory / extends["file"]
    source = yaml.safe_load(path.read_text(encoding="utf-8"))["services"][extends["service"]]
    source = {k: v for k, v in extended(source, path.parent).items() if k not in NOT_SHARED_BY_EXTENDS}
    local = {k: v for k, v in service.items() if k != "extends"}
    return merge({"services": {"s": source}}, {"services": {"s": local}})["services"]["s"]


def load_compose(*files: Path) -> dict[str, Any]:
    """The configuration of `docker compose -f FILE …`: each file parsed (YAML resolves its own
    anchors and `<<` merges; they do not cross files), its services' `extends` resolved, then
    merged onto the files before it."""
    merged: dict[str, Any] = {}
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict), f"{path.name} is not a mapping"
        services = data.get("services") or {}
        data["services"] = {name: extended(service, path.parent) for name, service in services.items()}
        merged = merge(merged, data)
    return merged


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def compose(variant) -> dict[str, Any]:
    return load_compose(*VARIANTS[variant])


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    assert isinstance(compose.get("services"), dict) and compose["services"], "no services"
    return compose["services"]


def airflow_service_names(services: dict[str, dict[str, Any]]) -> list[str]:
    """The services of the Airflow image: the components, airflow-init, and any worker."""
    scheduler = services["airflow-scheduler"]
    found = [
        name
        for name, service in services.items()
        if service.get("image") == scheduler["image"] or service.get("build") == scheduler["build"]
    ]
    assert set(found) >= set(AIRFLOW_SERVICES), f"Airflow services missing: {set(AIRFLOW_SERVICES) - set(found)}"
    return found


@pytest.fixture(scope="module")
def airflow_services(services) -> list[str]:
    return airflow_service_names(services)


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment, from either form (mapping, or list of NAME=value)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {name: (value if sep else None) for name, sep, value in (item.partition("=") for item in env)}
    return {name: None if value is None else str(value) for name, value in env.items()}


def volumes(service: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(kind, source, target, read_only) of each mount: kind is `bind` or `volume`."""
    mounts = []
    for item in service.get("volumes") or []:
        if isinstance(item, str):
            source, _, rest = item.partition(":")
            target, _, mode = rest.partition(":")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            mounts.append((kind, source, target, "ro" in mode.split(",")))
        else:
            mounts.append((item["type"], item.get("source", ""), item["target"], bool(item.get("read_only"))))
    return mounts


def strings(node: Any) -> list[str]:
    """Every string in a parsed YAML tree (keys and values)."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*strings(key), *strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command") or ""
    return " ".join(command) if isinstance(command, list) else str(command)


def image_pinned(reference: str) -> bool:
    """A fixed tag (not `latest`) or a digest, and no variable that could move it."""
    if "$" in reference:
        return False
    if "@sha256:" in reference:
        return True
    name = reference.rsplit("/", 1)[-1]
    tag = name.partition(":")[2]
    return bool(tag) and tag != "latest"


def requirement_pin(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert match, f"requirements.txt pins no {name}"
    return match.group(1)


# ------------------------------------------------------------------ what the code reads
def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def env_vars_read(roots: tuple[Path, ...] = CODE_ROOTS) -> dict[str, str]:
    """Each environment variable the code reads -> where. Reads are `os.environ.get/[...]/
    setdefault/pop`, `os.getenv`, the same through an alias (`env = os.environ`), and any
    string that is exactly a WAP_*/OPENLINEAGE_* name (a name passed on to a helper)."""
    found: dict[str, str] = {}
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        aliases = {
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and _is_os_environ(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        } | {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "os"
            for alias in node.names
            if alias.name in ("environ", "getenv")
        }

        def is_environ(node: ast.AST, aliases: set[str] = aliases) -> bool:
            return _is_os_environ(node) or (isinstance(node, ast.Name) and node.id in aliases)

        for node in ast.walk(tree):
            key: ast.AST | None = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                method = isinstance(func, ast.Attribute) and (
                    (func.attr in ("get", "setdefault", "pop") and is_environ(func.value))
                    or (func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os")
                )
                imported = isinstance(func, ast.Name) and func.id in aliases  # getenv imported from os
                if method or imported:
                    key = node.args[0]
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and is_environ(node.value):
                key = node.slice
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.fullmatch(node.value):
                key = node
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                found.setdefault(key.value, f"{where}:{node.lineno}")
    return found


def _dict_keys(node: ast.AST) -> set[str]:
    if not isinstance(node, ast.Dict):
        return set()
    return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def embedded_env_keys() -> set[str]:
    """What `wap.embedded.embedded_env` sets: the environment the pipelines run in embedded."""
    tree = ast.parse((REPO / "plugins" / "wap" / "embedded.py").read_text(encoding="utf-8"))
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "embedded_env")
    return {key for node in ast.walk(function) if isinstance(node, ast.Return) for key in _dict_keys(node.value)}


def deployment_env_keys() -> set[str]:
    """What tests/airflow_deployment.py sets for the real Airflow the cluster test starts."""
    tree = ast.parse((REPO / "tests" / "airflow_deployment.py").read_text(encoding="utf-8"))
    return {
        key
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "env" for t in node.targets)
        for key in _dict_keys(node.value)
    }


def required_env() -> dict[str, str]:
    required = {name: f"read at {where}" for name, where in env_vars_read().items()}
    required.update({name: "set by wap.embedded.embedded_env" for name in embedded_env_keys() - set(required)})
    required.update({name: "set by tests/airflow_deployment.py" for name in deployment_env_keys() - set(required)})
    return required


# ------------------------------------------------------------------ shape
def test_top_level_keys_are_the_compose_specs(compose):
    unknown = {key for key in compose if key not in TOP_LEVEL_KEYS and not str(key).startswith("x-")}
    assert not unknown, f"not Compose Specification top-level keys: {sorted(unknown)}"


def test_service_keys_are_the_compose_specs(services):
    for name, service in services.items():
        assert re.fullmatch(r"[a-zA-Z0-9._-]+", name), f"bad service name {name!r}"
        unknown = {key for key in service if key not in SERVICE_KEYS and not key.startswith("x-")}
        assert not unknown, f"{name}: not Compose Specification service keys: {sorted(unknown)}"
        assert "image" in service or "build" in service, f"{name} has neither image nor build"


def test_the_airflow_services_of_the_official_layout(services, variant, airflow_services):
    for name, command in AIRFLOW_COMMANDS.items():
        assert name in services, f"no {name} service"
        assert command_text(services[name]).split()[:1] == [command], f"{name} does not run `airflow {command}`"
    assert "airflow-init" in services
    for name in airflow_services:
        assert environment(services[name]).get("AIRFLOW__CORE__EXECUTOR") == EXECUTORS[variant], name


def test_airflow_init_migrates_and_imports_the_pools(services):
    init = services["airflow-init"]
    include = [t for kind, s, t, _ in volumes(init) if kind == "bind" and s.rstrip("/") == "./include"]
    assert include, "airflow-init does not mount ./include"
    script = command_text(init)
    assert "airflow db migrate" in script
    assert f"airflow pools import {include[0]}/pools.json" in script, "airflow-init does not import include/pools.json"
    assert (REPO / "include" / "pools.json").is_file()


# ------------------------------------------------------------------ pinned images
def test_every_image_is_pinned(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image (a built service needs a pinned image name too)"
        assert image_pinned(image), f"{name}: image {image!r} is not pinned to a tag other than latest"


def dockerfiles() -> list[Path]:
    return sorted(p for p in (REPO / "docker").rglob("Dockerfile*") if p.suffix != ".dockerignore")


def from_images(dockerfile: Path) -> list[str]:
    images, stages = [], set()
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = [w for w in line.split() if not w.startswith("--")]
        if words and words[0].upper() == "FROM":
            if words[1] not in stages and words[1] != "scratch":
                images.append(words[1])
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.add(words[3])
    return images


def test_every_dockerfile_base_image_is_pinned(services):
    built = [
        REPO / s["build"]["context"] / s["build"].get("dockerfile", "Dockerfile")
        for s in services.values()
        if isinstance(s.get("build"), dict)
    ]
    assert built, "no service builds an image"
    for dockerfile in {*dockerfiles(), *built}:
        images = from_images(dockerfile)
        assert images, f"{dockerfile}: no FROM"
        for image in images:
            assert image_pinned(image), f"{dockerfile.relative_to(REPO)}: FROM {image} is not pinned"


def test_airflow_image_matches_requirements(services, airflow_services):
    airflow, python = requirement_pin("apache-airflow"), "3.11"
    lock = re.search(r"--python-version (\S+)", (REPO / "Makefile").read_text())
    assert lock and lock.group(1) == python, "requirements.txt is locked for another Python than the image's"
    build = services["airflow-scheduler"]["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]
    assert from_images(dockerfile) == [f"apache/airflow:{airflow}-python{python}"]
    text = dockerfile.read_text()
    assert re.search(r"pip install .*-r \S*requirements\.txt", text), "the image does not install requirements.txt"
    for name in airflow_services:
        assert services[name]["build"] == build and services[name]["image"] == services["airflow-scheduler"]["image"]


def test_spark_images_match_pyspark_and_hadoop_aws_matches_its_hadoop(services):
    pyspark = requirement_pin("pyspark")
    spark = {name: s for name, s in services.items() if s["image"].startswith("apache/spark:")}
    assert set(spark) >= {"spark-master", "spark-worker", "spark-connect"}
    for name, service in spark.items():
        tag = service["image"].partition(":")[2]
        assert tag == pyspark or tag.startswith(f"{pyspark}-"), f"{name}: Spark {tag} is not pyspark {pyspark}"
    connect = command_text(services["spark-connect"])
    assert "--master spark://spark-master:7077" in connect
    hadoop_aws = re.search(r"org\.apache\.hadoop:hadoop-aws:(\S+)", connect)
    assert hadoop_aws, "the Spark Connect server loads no hadoop-aws (it cannot write s3a://)"
    spec = importlib.util.find_spec("pyspark")
    if spec is None or importlib.metadata.version("pyspark") != pyspark:
        pytest.skip(f"pyspark {pyspark} is not installed here: cannot read the Hadoop version it bundles")
    jars = Path(next(iter(spec.submodule_search_locations))) / "jars"
    bundled = {re.sub(r"^hadoop-client-api-(.+)\.jar$", r"\1", p.name) for p in jars.glob("hadoop-client-api-*.jar")}
    assert bundled == {hadoop_aws.group(1)}, f"hadoop-aws {hadoop_aws.group(1)} but Spark {pyspark} bundles {bundled}"


# ------------------------------------------------------------------ configuration
def test_the_scan_finds_what_the_code_reads():
    """Guards the scan itself: if these stop being found, it is the scan that broke."""
    reads = env_vars_read()
    assert {"WAP_LEDGER_URL", "WAP_CATALOG_URI", "WAP_WAREHOUSE", "WAP_SPARK_REMOTE", "WAP_LANDING_DIR"} <= set(reads)
    assert "WAP_ROLLBACK_WINDOW_DAYS" in reads  # passed by name to a helper, not read in place
    stale = set(NOT_FOR_DEPLOYMENT) - set(required_env())
    assert not stale, f"exempted but no longer read or set anywhere: {sorted(stale)}"


def test_airflow_services_set_every_variable_the_code_reads(services, airflow_services):
    required = {name: why for name, why in required_env().items() if name not in NOT_FOR_DEPLOYMENT}
    for name in airflow_services:
        env = environment(services[name])
        missing = {var: why for var, why in required.items() if env.get(var) in (None, "")}
        assert not missing, f"{name} does not set: " + "; ".join(f"{k} ({v})" for k, v in sorted(missing.items()))


def test_deployed_settings_point_at_the_services(services):
    env = environment(services["airflow-scheduler"])
    assert env["WAP_SPARK_REMOTE"].startswith("sc://spark-connect:")
    assert env["WAP_WAREHOUSE"].startswith("s3://")
    for name in ("WAP_LEDGER_URL", "WAP_CATALOG_URI", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        assert env[name].startswith("postgresql+psycopg2://"), name
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport["type"] == "http" and transport["endpoint"] == "api/v1/lineage"
    # Every address in the Airflow environment names a service of this file.
    for value in env.values():
        for match in ADDRESS.finditer(re.sub(r"\$\{[^}]*\}", "x", value or "")):  # ${...} may hold spaces
            if match["scheme"] not in ("s3", "s3a", "file") and match["host"] not in ("localhost", "127.0.0.1"):
                assert match["host"] in services, f"{value!r}: no service {match['host']!r}"


def test_one_postgres_holds_every_database(services):
    postgres = services["postgres"]
    scripts = [s for kind, s, t, _ in volumes(postgres) if t.startswith("/docker-entrypoint-initdb.d")]
    assert scripts, "no init script mounted into /docker-entrypoint-initdb.d"
    sql = "\n".join((REPO / s).read_text() for s in scripts)
    created = set(re.findall(r"CREATE DATABASE (\w+)", sql)) | {environment(postgres)["POSTGRES_DB"]}
    roles = set(re.findall(r"CREATE ROLE (\w+)", sql)) | {environment(postgres)["POSTGRES_USER"]}
    env = environment(services["airflow-scheduler"])
    urls = [env[n] for n in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "WAP_LEDGER_URL", "WAP_CATALOG_URI")]
    wanted = {re.search(r"/(\w+)$", url).group(1): re.search(r"://(\w+):", url).group(1) for url in urls}
    marquez = environment(services["marquez"])
    wanted[marquez["POSTGRES_DB"]] = marquez["POSTGRES_USER"]
    assert len(wanted) == 4, f"expected four separate databases, got {wanted}"
    for database, role in wanted.items():
        assert database in created, f"database {database} is never created"
        assert role in roles, f"role {role} is never created"


def test_landed_files_are_shared_at_the_same_path(services, airflow_services):
    landing = environment(services["airflow-scheduler"])["WAP_LANDING_DIR"]
    sources = {}
    for name in (*airflow_services, *SPARK_SERVICES_READING_LANDING):
        mounts = [(kind, source) for kind, source, target, _ in volumes(services[name]) if target == landing]
        assert mounts, f"{name} does not mount the landing folder at {landing}"
        sources[name] = mounts[0]
    assert len(set(sources.values())) == 1, f"the landing folder is not one volume: {sources}"


def test_spark_writes_to_the_object_store_the_tasks_use(services):
    airflow, connect = environment(services["airflow-scheduler"]), command_text(services["spark-connect"])
    assert f"spark.hadoop.fs.s3a.endpoint={airflow['WAP_S3_ENDPOINT']}" in connect
    assert "spark.hadoop.fs.s3a.path.style.access=true" in connect
    for name in SPARK_SERVICES_READING_LANDING:
        spark = environment(services[name])
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert spark.get(key) == airflow[key], f"{name}: {key} differs from the tasks'"


# ------------------------------------------------------------------ credentials
def test_every_variable_is_defined_in_env_example(compose, env_example):
    referenced: dict[str, str | None] = {}
    for text in strings(compose):
        for match in VARIABLE.finditer(text.replace("$$", "")):  # `$$` is a literal `$` for the container
            name, op = match["name"] or match["plain"], match["op"]
            if name not in referenced or (op and "?" in op):  # remember that some use requires it
                referenced[name] = op
    missing = set(referenced) - set(env_example)
    assert not missing, f"used by docker-compose.yaml, not in .env.example: {sorted(missing)}"
    unused = set(env_example) - set(referenced)
    assert not unused, f"in .env.example, unused by docker-compose.yaml: {sorted(unused)}"
    empty = {name for name, op in referenced.items() if op and "?" in op and not env_example[name]}
    assert not empty, f"required but empty in .env.example: {sorted(empty)}"


def test_env_example_is_marked_and_env_is_ignored():
    assert "LOCAL DEVELOPMENT ONLY" in ENV_EXAMPLE.read_text(encoding="utf-8").split("\n\n")[0]
    ignored = {line.strip() for line in (REPO / ".gitignore").read_text().splitlines()}
    assert ignored & {".env", "/.env"}, ".env (local credentials) is not in .gitignore"


def test_no_secret_is_written_into_the_compose_file(services):
    for name, service in services.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and value:
                assert re.fullmatch(r"\$\{[^}]+\}", value), f"{name}: {key} is a literal, not a ${{VAR}} from .env"
        for text in strings(service):
            for match in URL_PASSWORD.finditer(text):
                assert match["password"].startswith("${"), f"{name}: a password written into {text!r}"
            assert not SECRET_ASSIGNMENT.search(text), f"{name}: a secret written into {text!r}"


def test_published_ports_are_local_only(services):
    for name, service in services.items():
        for port in service.get("ports") or []:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port!r} is not on 127.0.0.1"


# ------------------------------------------------------------------ mounts
def test_mounted_paths_exist_and_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} is missing"
            if isinstance(build, dict):
                assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: no Dockerfile"
        for kind, source, target, read_only in volumes(service):
            assert target.startswith("/"), f"{name}: mount target {target!r} is not absolute"
            if kind == "bind":
                assert source.startswith("./"), f"{name}: {source} is not a path inside the repository"
                assert (REPO / source).exists(), f"{name}: mounts {source}, which does not exist"
                assert read_only, f"{name}: the repository's {source} is mounted writable"
            else:
                assert source in declared, f"{name}: volume {source!r} is not declared under top-level volumes"


# ------------------------------------------------------------------ start order and health
def test_every_depends_on_has_a_condition(services):
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on as a list has no conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert isinstance(spec, dict) and spec.get("condition") in CONDITIONS, f"{name} -> {target}: no condition"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} healthy; it has no healthcheck"


def test_every_long_running_service_has_a_healthcheck(services):
    one_shot = {
        target
        for service in services.values()
        for target, spec in (service.get("depends_on") or {}).items()
        if isinstance(spec, dict) and spec.get("condition") == "service_completed_successfully"
    }
    assert one_shot >= {"airflow-init", "minio-init"}
    for name, service in services.items():
        if name in one_shot:
            assert service.get("restart", "no") in ("no", "on-failure"), f"{name} runs once; it must not restart"
            continue
        check = service.get("healthcheck")
        assert check, f"{name} runs for good and has no healthcheck"
        assert set(check) <= HEALTHCHECK_KEYS, f"{name}: unknown healthcheck keys {set(check) - HEALTHCHECK_KEYS}"
        assert not check.get("disable") and check.get("test") and check["test"] != ["NONE"], f"{name}: no test"


# ------------------------------------------------------------------ the Celery variant
@pytest.fixture(scope="module")
def celery_services() -> dict[str, dict[str, Any]]:
    return load_compose(*VARIANTS["celery"])["services"]


def celery_workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if command_text(s).split()[:2] == ["celery", "worker"]}


def url_parts(url: str) -> tuple[str, str | None, list[str], str | None, int | None, str]:
    """(scheme, user, the variables in its password, host, port, path) of a URL whose password
    is a ${VAR} reference (which may hold `?` and spaces, so it is set aside before parsing)."""
    secrets = [match["name"] for match in VARIABLE.finditer(url)]
    parts = urlsplit(re.sub(r"\$\{[^}]*\}", "x", url))
    return parts.scheme, parts.username, secrets, parts.hostname, parts.port, parts.path


def test_load_compose_merges_as_the_spec_says(tmp_path):
    """The examples of compose-spec 13-merge.md, both forms of `environment`, and `extends`."""
    (tmp_path / "base.yaml").write_text(
        textwrap.dedent("""
        services:
          foo: &foo
            key1: value1
            key2: value2
            dns: [1.1.1.1]
            command: [echo, foo]
            volumes: [foo:/work, ./a:/a:ro]
            environment: [A=1, B=2]
            healthcheck: {test: [CMD, "true"], interval: 10s}
            depends_on: {db: {condition: service_healthy}}
          bar: *foo
        """)
    )
    (tmp_path / "override.yaml").write_text(
        textwrap.dedent("""
        services:
          foo:
            key2: VALUE
            key3: value3
            dns: [8.8.8.8]
            command: [echo, bar]
            volumes: [bar:/work, c:/c]
            environment: {B: two, C: 3}
            healthcheck: {test: [CMD, "false"]}
          baz:
            extends: {file: base.yaml, service: foo}
            command: [echo, baz]
        """)
    )
    merged = load_compose(tmp_path / "base.yaml", tmp_path / "override.yaml")["services"]
    assert merged["foo"] == {
        "key1": "value1",
        "key2": "VALUE",
        "key3": "value3",
        "dns": ["1.1.1.1", "8.8.8.8"],
        "command": ["echo", "bar"],
        "volumes": ["bar:/work", "./a:/a:ro", "c:/c"],
        "environment": {"A": "1", "B": "two", "C": "3"},
        "healthcheck": {"test": ["CMD", "false"], "interval": "10s"},
        "depends_on": {"db": {"condition": "service_healthy"}},
    }
    assert merged["bar"]["command"] == ["echo", "foo"], "merging foo changed bar, which shares its anchor"
    assert merged["baz"] == {k: v for k, v in merged["bar"].items() if k != "depends_on"} | {"command": ["echo", "baz"]}


def test_celery_variant_adds_only_the_celery_settings_to_the_base(celery_services):
    base = load_compose(COMPOSE_FILE)["services"]
    airflow = airflow_service_names(base)
    for name, before in base.items():
        after = celery_services[name]
        changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
        if name not in airflow:
            assert not changed, f"{name}: the Celery variant changes {sorted(changed)}"
            continue
        assert changed <= {"environment", "depends_on"}, f"{name}: the Celery variant changes {sorted(changed)}"
        env_before, env_after = environment(before), environment(after)
        changed_env = {var for var in env_before.keys() | env_after.keys() if env_before.get(var) != env_after.get(var)}
        assert changed_env == CELERY_SETTINGS, f"{name}: changes {sorted(changed_env)}, not the Celery settings"
        depends_before, depends_after = before.get("depends_on") or {}, after.get("depends_on") or {}
        assert all(depends_after.get(t) == spec for t, spec in depends_before.items()), f"{name}: depends_on changed"
    added = set(celery_services) - set(base)
    assert added == {"redis", *celery_workers(celery_services)}, f"the Celery variant adds {sorted(added)}"


def test_celery_every_airflow_service_uses_one_broker_and_result_backend(celery_services):
    workers = celery_workers(celery_services)
    airflow = airflow_service_names(celery_services)
    assert workers and set(workers) <= set(airflow), f"no Celery worker of the Airflow image: {sorted(workers)}"
    settings = {}
    for name in airflow:
        env = environment(celery_services[name])
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", f"{name} does not use the CeleryExecutor"
        settings[name] = tuple(env.get(var) for var in sorted(CELERY_SETTINGS))
        assert all(settings[name]), f"{name} does not set all of {sorted(CELERY_SETTINGS)}"
    assert len(set(settings.values())) == 1, f"the Airflow services differ in {sorted(CELERY_SETTINGS)}: {settings}"


def test_celery_broker_is_redis_and_results_go_to_airflows_database(celery_services):
    env = environment(celery_services["airflow-scheduler"])
    scheme, _, _, host, port, _ = url_parts(env["AIRFLOW__CELERY__BROKER_URL"])
    assert scheme == "redis" and host in celery_services, f"the broker {host!r} is not a service"
    assert celery_services[host]["image"].startswith("redis:"), f"the broker {host!r} is not Redis"
    assert port in (None, 6379) and "--port" not in command_text(celery_services[host]), "not Redis's port"

    backend = url_parts(env["AIRFLOW__CELERY__RESULT_BACKEND"])
    metadata = url_parts(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert backend[0].startswith("db+postgresql"), f"not Celery's database backend on PostgreSQL: {backend[0]}"
    assert backend[1:] == metadata[1:], f"the result backend is not Airflow's metadata DB: {backend} vs {metadata}"
    user, secrets, host, port, path = backend[1:]
    postgres = environment(celery_services[host])
    assert celery_services[host]["image"].startswith("postgres:"), f"{host} is not the PostgreSQL service"
    assert (user, path, port) == (postgres["POSTGRES_USER"], f"/{postgres['POSTGRES_DB']}", 5432)
    assert secrets == [m["name"] for m in VARIABLE.finditer(postgres["POSTGRES_PASSWORD"])], "not the DB's password"


def test_celery_workers_run_the_tasks_where_the_scheduler_did(celery_services):
    scheduler = celery_services["airflow-scheduler"]
    workers = celery_workers(celery_services)
    replicas = {name: int((w.get("deploy") or {}).get("replicas", 1)) for name, w in workers.items()}
    assert sum(replicas.values()) >= 2, f"fewer than two Celery workers: {replicas}"
    common_env = environment(scheduler)
    for name, worker in workers.items():
        assert command_text(worker) == "celery worker", f"{name} does not run `airflow celery worker`"
        assert (worker["image"], worker["build"]) == (scheduler["image"], scheduler["build"]), name
        env = environment(worker)
        assert {k: v for k, v in env.items() if k not in CELERY_WORKER_SETTINGS} == common_env, (
            f"{name}: not the environment of the other Airflow services"
        )
        assert env.get("DUMB_INIT_SETSID") == "0", f"{name}: a stop signal would not reach Celery alone (warm shutdown)"
        slots = int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) * sum(replicas.values())
        assert slots == int(common_env["AIRFLOW__CORE__PARALLELISM"]), f"{slots} worker slots, not the parallelism"
        missing = set(volumes(scheduler)) - set(volumes(worker))
        assert not missing, f"{name} does not mount what the scheduler mounts: {sorted(missing)}"
        check = " ".join(worker["healthcheck"]["test"])
        # `$$`: the container's own HOSTNAME, not one interpolated by compose on the host.
        assert "inspect ping" in check and "celery@$${HOSTNAME}" in check, f"{name}: no Celery ping of itself"
        depends = worker.get("depends_on") or {}
        wanted = {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "airflow-init": "service_completed_successfully",
            "airflow-apiserver": "service_healthy",
        }
        wanted |= {target: spec["condition"] for target, spec in (scheduler.get("depends_on") or {}).items()}
        got = {target: spec.get("condition") for target, spec in depends.items()}
        assert got.items() >= wanted.items(), f"{name} waits for {got}, not {wanted}"


def test_celery_redis_is_pinned_healthy_and_internal(celery_services):
    redis = celery_services["redis"]
    assert image_pinned(redis["image"]) and re.fullmatch(r"redis:7\.\d+\.\d+(-[a-z0-9.]+)?", redis["image"]), (
        f"Redis {redis['image']} is not an exact 7.x version"
    )
    check = redis.get("healthcheck") or {}
    assert check.get("test", [None])[0] in ("CMD", "CMD-SHELL") and "redis-cli ping" in " ".join(check["test"])
    assert not redis.get("ports"), "Redis is published on the host"
    assert redis.get("restart") == "always"
