"""The Airflow edge: TaskFlow tasks that bind a run to its partition and call the steps.

A DAG file composes them:

    partition = resolve_partition(PIPELINE)
    staged = stage(PIPELINE, partition)
    publish(PIPELINE, audit(PIPELINE, staged))

Errors are translated here, once (`_LineageTask.execute`): a `wap.errors.WapError` that
retrying cannot fix (a bad partition value, a failed quality gate, unreadable landed files,
a contract change without a version bump, a publish lost to another run of the same
partition) becomes `AirflowFailException`, so Airflow fails the task at once instead of
retrying it; a retryable one (and anything unexpected) is left to Airflow's retries.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import time
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.triggers.file import FileTrigger
from airflow.sdk import DAG, BaseSensorOperator, Param, PartitionedAssetTimetable, TriggerRule, task
from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException
from airflow.triggers.base import TriggerEvent

from wap import lineage
from wap import partition as partitions
from wap.errors import DatabaseUnreachableError, GateFailedError, WapError
from wap.pipeline import PER_RANGE, Pipeline
from wap.settings import load_settings


# The params carry no format of their own: the resolve task validates the value, once, at
# the pipeline's grain (`Grain.parse`), and fails the run before any work with a message
# that says which form it wants.
def partition_param(grain: partitions.Grain) -> Param:
    """The DAG's `partition` param for a pipeline of `grain`: its title says the key's form and zone."""
    period = grain.unit.lower()
    return Param(
        None,
        type=["null", "string"],
        title=f"Partition ({grain.form}, {grain.zone}) or range ({grain.form}/{grain.form})",
        description=f"Process this {period} instead of the run's own (logical date or partition key); or every "
        f"{period} of a range, both ends included, in one run with an outcome per {period}.",
    )


PARTITION_PARAM = partition_param(partitions.DAILY)
HOURLY_PARTITION_PARAM = partition_param(partitions.HOURLY)

# Retries are for transient failures (a lost Spark session, an I/O error, a commit
# conflict); data failures fail at once via AirflowFailException. The first retry waits
# WAP_RETRY_DELAY_S (30 s), each next one twice as long; the environment may change it
# (tests, where every fault's retry would otherwise wait half a minute).
DEFAULT_ARGS: dict[str, Any] = {
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=int(os.environ.get("WAP_RETRY_DELAY_S", 30))),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
    "execution_timeout": dt.timedelta(hours=2),
}


# Airflow pools (include/pools.json; `airflow pools import include/pools.json`): one bounds
# how many Spark jobs run at once, one serialises publishes. Publishes are metadata commits
# of ~0.1 s, so one slot for every table costs nothing; the commit itself still refuses to
# overwrite a partition another run published first (`steps.publish`), pools or not.
SPARK_POOL = "wap_spark"
PUBLISH_POOL = "wap_publish"


# How long a run waits for its day's landed files before it fails (no retry): the day's
# data is late or lost, and a person should look. The environment may shorten it (tests).
ARRIVAL_TIMEOUT = dt.timedelta(seconds=int(os.environ.get("WAP_ARRIVAL_TIMEOUT_S", 6 * 3600)))
ARRIVAL_POKE = dt.timedelta(minutes=5)


class ArrivalTrigger(FileTrigger):
    """`FileTrigger` with a deadline of its own: the wait ends with a clear failure even where
    no scheduler enforces the task's timeout (`airflow dags test` runs triggers inline)."""

    def __init__(self, filepath: str, poke_interval: float = 5.0, deadline: float = 0.0, **kwargs: Any) -> None:
        super().__init__(filepath=filepath, poke_interval=poke_interval, **kwargs)
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"filepath": self.filepath, "poke_interval": self.poke_interval, "deadline": self.deadline},
        )

    async def run(self) -> Any:
        import asyncio

        while True:
            if glob.glob(self.filepath):
                yield TriggerEvent({"arrived": True})
                return
            if time.time() >= self.deadline:
                yield TriggerEvent({"arrived": False})
                return
            await asyncio.sleep(max(0.0, min(self.poke_interval, self.deadline - time.time())))


class LandedDataSensor(BaseSensorOperator):
    """Waits until a landed source's folder for the run's day (each day of a range run) holds a data file.

    It looks once; if nothing is there it defers to the triggerer (`ArrivalTrigger`), so
    the waiting holds no worker slot. After `ARRIVAL_TIMEOUT` it fails without retry
    (`AirflowSensorTimeout`) and the run stops before staging: an empty partition is never
    published for a day whose data never came.
    """

    template_fields = ("partition",)

    def __init__(self, *, source: Any, partition: Any, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", ARRIVAL_TIMEOUT.total_seconds())
        kwargs.setdefault("poke_interval", ARRIVAL_POKE.total_seconds())
        kwargs.setdefault("execution_timeout", ARRIVAL_TIMEOUT + dt.timedelta(minutes=10))
        super().__init__(**kwargs)
        self.source, self.partition = source, partition

    def _missing(self) -> list[str]:
        """The patterns of the run's folders (one per partition of a range) that match no file yet."""
        span = partitions.span_from_key(self.partition)
        values = span.partitions() if isinstance(span, partitions.PartitionRange) else [span]
        return [pattern for pattern in map(self.source.arrival_pattern, values) if not glob.glob(pattern)]

    def poke(self, context: Any) -> bool:
        return not self._missing()

    def execute(self, context: Any, deadline: float | None = None) -> None:
        if not (missing := self._missing()):
            return
        self.log.info("waiting for %s (and %s more; deferred, up to %s s)", missing[0], len(missing) - 1, self.timeout)
        deadline = deadline or time.time() + self.timeout
        self.defer(
            trigger=ArrivalTrigger(missing[0], self.poke_interval, deadline=deadline),
            method_name="arrived",
            kwargs={"deadline": deadline},
            timeout=dt.timedelta(seconds=self.timeout + 60),  # the trigger's own deadline comes first
        )

    def arrived(self, context: Any, event: Any = None, deadline: float | None = None) -> None:
        if not (event or {}).get("arrived"):
            raise AirflowSensorTimeout(
                f"no landed files matching {self._missing()[0]} after {self.timeout:.0f} s: the day's data is late "
                "or lost; nothing was staged or published. Re-run the day once its files have landed."
            )
        self.execute(context, deadline)  # a range waits for each of its folders in turn


def wait_for_data(pipeline: Pipeline, partition: Any) -> list[Any]:
    """One deferrable sensor per landed source of the pipeline (`wait_for_<dataset>`)."""
    from wap.sources import LandedFiles

    return [
        LandedDataSensor(task_id=f"wait_for_{source.dataset}", source=source, partition=partition)
        for source in pipeline.sources
        if isinstance(source, LandedFiles)
    ]


# Where these DAGs load (the DAG processor, and each task's process before its first event),
# the lineage file transport's folder is made; what cannot be fixed is said in the task log.
_LINEAGE_PROBLEM = lineage.transport_problem()


class _LineageTask(DecoratedOperator, PythonOperator):
    """A TaskFlow task (Airflow's documented custom-decorator pattern: `DecoratedOperator` +
    `PythonOperator`) whose body records its datasets and facets (`wap.lineage.record`); the
    OpenLineage provider asks for them when the task completes or fails. The one place where
    this package's errors become Airflow's."""

    template_fields = ("templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task"

    def __init__(self, *, python_callable: Any, op_args: Any, op_kwargs: Any, **kwargs: Any) -> None:
        upstream = {"python_callable": python_callable, "op_args": op_args, "op_kwargs": op_kwargs}
        super().__init__(kwargs_to_upstream=upstream, **upstream, **kwargs)

    def execute(self, context: Any) -> Any:
        lineage.begin()
        if problem := _LINEAGE_PROBLEM or lineage.transport_problem():
            self.log.warning("%s", problem)
        try:
            return super().execute(context)
        except WapError as exc:
            if exc.retryable:
                raise
            raise AirflowFailException(str(exc)) from exc
        except Exception as exc:
            if said := load_settings().unreachable_database(exc):
                raise DatabaseUnreachableError(said) from exc  # retried, and named
            raise

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return lineage.recorded()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return lineage.recorded()


def wap_task(python_callable: Any = None, **kwargs: Any) -> Any:
    """`@task`, with the task's lineage reported to OpenLineage. Its result is one XCom:
    TaskFlow would push each key of a returned dict again as an XCom of its own (it infers
    `multiple_outputs` from a `dict` return type), and no task here reads one key."""
    kwargs.setdefault("multiple_outputs", False)
    return task_decorator_factory(python_callable=python_callable, decorated_operator_class=_LineageTask, **kwargs)


@wap_task(task_id="resolve_partition")
def _resolve_partition(grain: str = "daily", zone: str = "UTC", **context: Any) -> str:
    # A local day's logical date (its midnight in UTC) is floored on the zone's calendar.
    return partitions.span_key(partitions.resolve_partition(context, partitions.grain_named(grain, zone)))


def resolve_partition(pipeline: Pipeline | None = None) -> Any:
    """The run's partition key (YYYY-MM-DD, or YYYY-MM-DDTHH for an hourly pipeline), or its
    range (FIRST/LAST); fails at once if there is none or it is invalid."""
    if pipeline is None:
        return _resolve_partition("daily")
    return _resolve_partition(pipeline.grain.name, pipeline.grain.zone)


@wap_task(task_id="stage", pool=SPARK_POOL)
def _stage(pipeline: Pipeline, partition: str, **context: Any) -> dict[str, Any]:
    from wap import ranges, steps
    from wap.runtime import Runtime

    span = pipeline.grain.parse_span(partition)
    run_id, try_number = context["run_id"], context["ti"].try_number
    lineage.staging(pipeline, span, run_id, try_number, "running")
    try:
        if isinstance(span, partitions.PartitionRange):
            staged: Any = ranges.stage(Runtime.from_env(), pipeline, span, run_id, try_number)
        else:
            staged = steps.stage(Runtime.from_env(), pipeline, span, run_id, try_number)
    except GateFailedError:
        lineage.staging(pipeline, span, run_id, try_number, "quarantined")
        raise
    lineage.staging(pipeline, span, run_id, try_number, "staged")
    return staged.to_dict()


def _as_range(staged: dict[str, Any]) -> Any:
    """A range run's XCom as a `StagedRange` (None: a single partition's run)."""
    from wap.staging import StagedRange

    return StagedRange.from_dict(staged) if "runs" in staged else None


def _lineage_view(span: Any) -> Any:
    """One `StagedRun` standing for a range run in its lineage events: the range's key, every
    partition's files and rows, each check once with the partitions where it failed."""
    import dataclasses

    from wap import audit as gate

    first = span.runs[0]
    return dataclasses.replace(
        first,
        partition=span.partition,
        files=[f for run in span.runs for f in run.files],
        rows_out=sum(run.rows_out or 0 for run in span.runs),
        assertions=gate.merged_assertions({run.partition: run.assertions for run in span.runs}),
    )


@wap_task(task_id="audit", pool=SPARK_POOL)
def _audit(pipeline: Pipeline, staged: dict[str, Any]) -> dict[str, Any]:
    from wap import ranges, steps
    from wap.runtime import Runtime

    if (span := _as_range(staged)) is not None:
        audited_range = ranges.audit(Runtime.from_env(), pipeline, span)
        if span.runs:  # the candidate: every partition staged; its checks: every partition gated
            status = "audited" if audited_range.runs else "quarantined"
            lineage.audited(pipeline, _lineage_view(span), audited_range.checked, status)
        return audited_range.to_dict()
    run = steps.staging.StagedRun.from_dict(staged)
    try:
        audited = steps.audit(Runtime.from_env(), pipeline, run)
    except GateFailedError as exc:
        lineage.audited(pipeline, run, exc.assertions, "quarantined")
        raise
    lineage.audited(pipeline, run, audited.assertions, "audited")
    return audited.to_dict()


@wap_task(task_id="publish", pool=PUBLISH_POOL)
def _publish(pipeline: Pipeline, staged: dict[str, Any], **context: Any) -> dict[str, Any]:
    from wap import ranges, steps
    from wap.runtime import Runtime

    if (span := _as_range(staged)) is not None:
        result = ranges.publish(Runtime.from_env(), pipeline, span)
        if span.runs:
            rows = {run.partition: run.rows_out for run in span.runs}
            outcomes = {key: {"status": status, "rows": rows[key]} for key, status in result["partitions"].items()}
            lineage.published(pipeline, _lineage_view(span), result["snapshot_id"], result["status"], outcomes)
        keys = result["published"]
        if pipeline.asset_events == PER_RANGE:  # one event per stretch of consecutive partitions
            keys = [partitions.span_key(span) for span in partitions.stretches(keys)]
    else:
        run = steps.staging.StagedRun.from_dict(staged)
        result = steps.publish(Runtime.from_env(), pipeline, run)  # SupersededError: another run published first
        lineage.published(pipeline, run, result["snapshot_id"], result["status"])
        keys = [run.partition]
    if keys:
        _announce(pipeline, keys, result, context)
    return result


def _announce(pipeline: Pipeline, keys: list[str], result: dict[str, Any], context: Any) -> None:
    """The table's asset event for what was published: it carries the partitions, so
    partition-aware consumers run for each."""
    context["outlet_events"][pipeline.asset].add_partitions(keys)
    context["outlet_events"][pipeline.asset].extra = {
        k: str(v) for k, v in result.items() if k in ("status", "snapshot_id", "partition", "rows")
    }


@task(task_id="verdict", multiple_outputs=False)
def _verdict(published: dict[str, Any]) -> dict[str, Any]:
    """Fail the run if partitions of its range did not publish (quarantined, superseded); the
    others are published, and their asset events sent, by then."""
    if published.get("stopped"):
        raise AirflowFailException(published["message"])
    return published


def stage(pipeline: Pipeline, partition: Any) -> Any:
    """Transform and stage the partition (Spark)."""
    return _stage(pipeline, partition)


def audit(pipeline: Pipeline, staged: Any) -> Any:
    """Gate the staged data: contract + expectation suite."""
    return _audit(pipeline, staged)


def publish(pipeline: Pipeline, audited: Any) -> Any:
    """Atomically swap the audited partition (a range's passing partitions) in; emits the table's
    asset event; then the verdict, which fails the run if partitions of a range did not publish.
    If the run quarantined a partition, a person is asked to review it (`quarantine_review`)."""
    verdict = _verdict(_publish.override(outlets=[pipeline.asset])(pipeline, audited))
    request = _request_review.override(outlets=[pipeline.review_asset])(pipeline).operator  # type: ignore[attr-defined]
    # A teardown, so that the run's state stays its verdict's (a failed run stays failed, whatever
    # the request did); its own trigger rule: it runs only when the audit or the verdict failed.
    request.is_teardown = True
    request.trigger_rule = TriggerRule.ONE_FAILED
    [audited, verdict] >> request
    return verdict


@wap_task
def catalog_tables() -> list[str]:
    """Every table of the catalog (the maintenance DAG maps its upkeep over them)."""
    from wap.runtime import Runtime
    from wap.tables import list_tables

    return list_tables(Runtime.from_env().catalog)


@wap_task(max_active_tis_per_dag=2)
def maintain_table(table: str, **context: Any) -> dict[str, Any]:
    """Expire the table's old snapshots and remove its orphaned files (`wap.maintenance`), by the DAG's params."""
    from wap import maintenance
    from wap.runtime import Runtime

    params = context["params"]
    retention = maintenance.Retention.from_env(params["window_days"], params["margin_hours"])
    return maintenance.maintain_table(Runtime.from_env(), table, retention, dry_run=params["dry_run"]).counts()


@task(task_id="late_partitions")
def _late_partitions(audited: dict[str, Any], **context: Any) -> list[dict[str, Any]]:
    """The runs to start for earlier partitions that got late records in this day's folder."""
    dag_run = context["dag_run"]
    conf = dag_run.conf or {}
    # A run the lookback started does not look back again (no cascade); a backfill re-runs
    # its whole range itself.
    if conf.get("lookback") is False or dag_run.run_type == "backfill":
        return []
    return [
        {"trigger_run_id": f"late__{day}__{context['run_id']}"[:250], "conf": {"partition": day, "lookback": False}}
        for day in sorted({d for run in audited.get("runs", [audited]) for d in run.get("late_for", [])})
    ]


def reprocess_late(audited: Any, after: Any) -> Any:
    """Lookback: once this day is published, start a run of each earlier partition (at most
    the source's `late_folders` back) whose records arrived late in this day's folder. One run
    per partition and source run (a retry finds it exists), each idempotent like any run."""
    runs = _late_partitions(audited)
    after >> runs
    return TriggerDagRunOperator.partial(
        task_id="reprocess_late",
        trigger_dag_id="{{ dag.dag_id }}",
        logical_date=None,
        skip_when_already_exists=True,
    ).expand_kwargs(runs)


# ------------------------------------------------------------------ a person's review of a quarantine
# How long a review waits for an answer; then the partition stays quarantined (`wap quarantine`).
REVIEW_TIMEOUT = dt.timedelta(days=7)
RELEASE, DISCARD = "Release", "Discard"


@task(task_id="request_review", trigger_rule=TriggerRule.ONE_FAILED)
def _request_review(pipeline: Pipeline, **context: Any) -> list[str]:
    """An event of the pipeline's review asset for each partition this run quarantined (its key):
    each starts a run of the review DAG. A run that failed for another reason asks nothing."""
    from wap.runtime import Runtime

    rows = Runtime.from_env().ledger.rows(pipeline.name)
    keys = sorted({r["partition"] for r in rows if r["run_id"] == context["run_id"] and r["status"] == "quarantined"})
    if not keys:
        raise AirflowSkipException("nothing of this run is quarantined: no review to ask for")
    context["outlet_events"][pipeline.review_asset].add_partitions(keys)
    return keys


class ReviewOperator(HITLBranchOperator):
    """Asks a person, in Airflow's UI (Required actions), to release or discard the partition's
    quarantined run, with a reason; the answer branches to `release` or `discard`. No answer
    by the deadline fails the task without a retry, and the partition stays quarantined."""

    def __init__(self, *, pipeline: Pipeline, response_timeout: dt.timedelta = REVIEW_TIMEOUT, **kwargs: Any) -> None:
        kwargs.pop("params", None)  # the DAG's (the partition): they join the task's when it joins the DAG
        super().__init__(
            task_id="review",
            subject=f"{pipeline.name}: a quarantined partition",
            options=[RELEASE, DISCARD],
            options_mapping={RELEASE: "release", DISCARD: "discard"},
            params={
                # Airflow validates a task's params before it runs, so the reason cannot be required
                # by its schema; a decision without one is refused by `quarantine` (nothing changes).
                "reason": Param(
                    "", type="string", title="Why", description="Required: kept in the ledger with the decision."
                ),
            },
            response_timeout=response_timeout,
            **kwargs,
        )
        self.pipeline = pipeline

    @property
    def serialized_params(self) -> dict[str, dict[str, Any]]:
        # The form asks for the reason alone: the DAG's params (the partition) are merged into
        # the task's when it joins the DAG, and would be asked for, and required, too.
        return {k: v for k, v in HITLBranchOperator.serialized_params.fget(self).items() if k == "reason"}  # type: ignore[attr-defined]

    def execute(self, context: Any) -> Any:
        from wap import quarantine
        from wap.errors import QuarantineError
        from wap.runtime import Runtime

        key = partitions.span_key(partitions.resolve_partition(context, self.pipeline.grain))
        try:
            row = quarantine.find(Runtime.from_env(), self.pipeline.name, key)
        except QuarantineError:
            raise AirflowSkipException(f"{self.pipeline.name} {key} is not quarantined (decided meanwhile)") from None
        self.subject = f"{self.pipeline.name} {key} is quarantined: release it, or discard it?"
        self.body = (
            f"The partitions view: [{self.pipeline.name} {key}](/wap/partitions/{self.pipeline.name}/{key})\n\n"
            f"```\n{quarantine.describe(row)}\n```"
        )
        context["ti"].xcom_push(key="quarantined", value={"partition": key, "run_token": row["run_token"]})
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            held = context["ti"].xcom_pull(task_ids=self.task_id, key="quarantined")
            who = event.get("responded_by_user") or {}
            decision = {
                **held,
                "option": event["chosen_options"][0],
                "reason": (event.get("params_input") or {}).get("reason", ""),
                "by": who.get("name") or who.get("id") or "airflow",
            }
            context["ti"].xcom_push(key="decision", value=decision)
        return super().execute_complete(context, event)

    def process_trigger_event_error(self, event: dict[str, Any]) -> None:
        if event.get("error_type") == "timeout":
            raise AirflowFailException(
                f"no answer by the deadline: {self.pipeline.name} stays quarantined. Decide with "
                f"wap quarantine release|discard {self.pipeline.name} PARTITION --reason ..."
            )
        super().process_trigger_event_error(event)


def _carry_out(decide: Any, pipeline: Pipeline, context: Any) -> tuple[str, dict[str, Any]]:
    """The review's decision carried out by `decide` (`quarantine.release` or `discard`): the
    partition and the result."""
    from wap.runtime import Runtime

    decision = context["ti"].xcom_pull(task_ids="review", key="decision")
    partition = decision["partition"]
    result = decide(
        Runtime.from_env(),
        pipeline.name,
        partition,
        reason=decision["reason"],
        run_token=decision["run_token"],
        by=decision["by"],
    )
    return partition, result


@task(task_id="release", pool=PUBLISH_POOL)
def _release(pipeline: Pipeline, **context: Any) -> dict[str, Any]:
    """Publish the reviewed run's staged files (`quarantine.release`: the same atomic swap as a
    run's), recorded with who and why; the table's asset event carries the partition."""
    from wap import quarantine

    partition, result = _carry_out(quarantine.release, pipeline, context)
    _announce(pipeline, [partition], result, context)
    return result


@task(task_id="discard")
def _discard(pipeline: Pipeline, **context: Any) -> dict[str, Any]:
    """Delete the reviewed run's quarantined files (`quarantine.discard`), recorded with who and why."""
    from wap import quarantine

    return _carry_out(quarantine.discard, pipeline, context)[1]


def quarantine_review(pipeline: Pipeline, *, owner: str, timeout: dt.timedelta = REVIEW_TIMEOUT) -> DAG:
    """The pipeline's review DAG, `<pipeline>__review`: one run per partition a run of the
    pipeline quarantined (its review asset's events), asking a person to release or discard it.
    The same code as `wap quarantine release|discard`; the ledger records who, why and when."""
    with DAG(
        dag_id=f"{pipeline.name}__review",
        schedule=PartitionedAssetTimetable(assets=pipeline.review_asset),
        start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=16,  # a review mostly waits for a person: several at once
        params={"partition": partition_param(pipeline.grain)},
        default_args={"owner": owner, **DEFAULT_ARGS},
        tags=["review", pipeline.name],
        doc_md=quarantine_review.__doc__,
    ) as review:
        ReviewOperator(pipeline=pipeline, response_timeout=timeout) >> [
            _release.override(outlets=[pipeline.asset])(pipeline),
            _discard(pipeline),
        ]
    return review
