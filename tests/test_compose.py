"""docker-compose.yaml, checked statically: there is no Docker engine on the development
machines or in CI, so nothing here starts a container or touches the network.

What is checked: the file's shape against the Compose Specification's keys; every image
pinned (compose and Dockerfiles); versions that must agree with requirements.txt (Airflow,
Python, Spark = pyspark, hadoop-aws = the Hadoop pyspark bundles); every environment
variable the pipeline code reads set for the Airflow services (found by scanning `plugins/`
and `dags/`, so a new variable fails here until compose sets it); every `${VAR}` defined
in .env.example; no secret written into the file; mounted paths present; healthchecks on
every long-running service and a condition on every `depends_on`; the databases, landing
folder and service addresses consistent across services.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
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
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?P<password>[^@\s]+)@")
ADDRESS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?:[^@/\s\"]*@)?(?P<host>[A-Za-z0-9_.-]+)")


# ------------------------------------------------------------------ loading
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))  # resolves anchors and `<<` merges
    assert isinstance(data, dict), "docker-compose.yaml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    assert isinstance(compose.get("services"), dict) and compose["services"], "no services"
    return compose["services"]


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
    """What tests/airflow_deployment.py sets for the real Airflow the scheduler test starts."""
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


def test_the_airflow_services_of_the_official_layout(services):
    for name, command in AIRFLOW_COMMANDS.items():
        assert name in services, f"no {name} service"
        assert command_text(services[name]).split()[:1] == [command], f"{name} does not run `airflow {command}`"
    assert "airflow-init" in services
    for name in AIRFLOW_SERVICES:
        assert environment(services[name]).get("AIRFLOW__CORE__EXECUTOR") == "LocalExecutor", name


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


def test_airflow_image_matches_requirements(services):
    airflow, python = requirement_pin("apache-airflow"), "3.11"
    lock = re.search(r"--python-version (\S+)", (REPO / "Makefile").read_text())
    assert lock and lock.group(1) == python, "requirements.txt is locked for another Python than the image's"
    build = services["airflow-scheduler"]["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]
    assert from_images(dockerfile) == [f"apache/airflow:{airflow}-python{python}"]
    text = dockerfile.read_text()
    assert re.search(r"pip install .*-r \S*requirements\.txt", text), "the image does not install requirements.txt"
    for name in AIRFLOW_SERVICES:
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


def test_airflow_services_set_every_variable_the_code_reads(services):
    required = {name: why for name, why in required_env().items() if name not in NOT_FOR_DEPLOYMENT}
    for name in AIRFLOW_SERVICES:
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


def test_landed_files_are_shared_at_the_same_path(services):
    landing = environment(services["airflow-scheduler"])["WAP_LANDING_DIR"]
    sources = {}
    for name in (*AIRFLOW_SERVICES, *SPARK_SERVICES_READING_LANDING):
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
