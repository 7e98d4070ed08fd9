"""The one partition a run is bound to, resolved once, the same way for every DAG.

A pipeline's *grain* says what one partition is: a UTC calendar day (`DAILY`, key
`2024-01-31`), a calendar day in a named time zone (`daily_in("America/New_York")`, the
same key form: the local date), or a UTC hour (`HOURLY`, key `2024-01-31T05`). A partition
value is a `datetime.date` (daily) or a timezone-aware UTC `datetime` on the hour (hourly);
its key is the text the ledger, paths, snapshot summaries and asset events carry. A local
day's window in UTC is computed per day: 23 or 25 hours long on a daylight-saving change.
The key does not carry the zone (a zone's name holds the range separator `/`, and keys are
folder names); the pipeline's grain does, and every place that shows a key to a person or
a machine names the zone next to it (see docs/adr/0021).

A run may also be bound to a *range* of partitions (`PartitionRange`): the ISO 8601 interval
form `2024-01-01/2024-01-31` (hourly `2024-01-01T00/2024-01-01T23`), both ends included,
at most `MAX_RANGE` partitions. One range run does the work of every partition in it in one
pass and gives each its own outcome (`wap.ranges`).

Order of precedence (DESIGN.md, "Resolve"):
1. `params["partition"]`: a manual override, e.g. `airflow dags trigger -c '{"partition": "2024-01-31"}'`;
2. `dag_run.partition_key`: Airflow 3.2+ partitioned runs (partitioned asset events);
3. `logical_date`: scheduled and backfill runs. The UTC day (or hour) it falls in is the partition.

`data_interval_start` is never used: for a CLI-triggered run it is "now".
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wap.errors import PartitionError as PartitionError  # re-exported: callers import it from here

Partition = dt.date | dt.datetime  # a datetime only for sub-daily grains (always UTC, on the hour)


# The calendar a partition may fall in (inclusive). Beyond it, Airflow's timetables and date
# arithmetic (a partition's end, the late-data lookback) overflow or misbehave: a key such as
# 0001-01-01 or 9999-12-31 is a typo or a probe, refused before any work.
FIRST_YEAR, LAST_YEAR = 1900, 2999
# A range run holds at most this many partitions (a year of days; 41 days of hours): its
# ledger rows, staged folders and the commit's summary grow with it.
MAX_RANGE = 1000
RANGE_SEPARATOR = "/"


@dataclass(frozen=True)
class Grain:
    """What one partition of a pipeline is, and how its values are written and read.

    Only strict forms are accepted: anything else (paths, SQL, free text) is rejected before
    it can reach a path or a query.
    """

    name: str  # "daily" or "hourly"
    step: dt.timedelta
    pattern: re.Pattern[str]  # accepted text; group 1 is the key
    form: str  # how a key is written, for messages
    column_type: str  # the partition column's type in a contract: date or timestamp
    unit: str  # in SQL intervals: DAY or HOUR
    spark_key_format: str  # Spark's datetime pattern of the key, for keys computed in a query
    zone: str = "UTC"  # the time zone whose calendar days a daily grain's partitions are

    @property
    def zoned(self) -> bool:
        """Whether partitions are local days of a zone other than UTC."""
        return self.zone != "UTC"

    @property
    def described(self) -> str:
        """`daily`, `hourly`, or `daily in America/New_York`: what messages and the planner say."""
        return f"{self.name} in {self.zone}" if self.zoned else self.name

    @property
    def how_to_pass(self) -> str:
        return (
            f'Pass a partition: trigger with conf {{"partition": "{self.form}"}}, '
            "or run with a logical date (scheduled run, backfill, or dag.test(logical_date=...))."
        )

    def spark_key(self, instant: Any) -> Any:
        """The key of the partition an instant (a Spark TIMESTAMP column) falls in, in Spark:
        for a local day, the instant is first seen on the zone's clock (Spark's session time
        zone is UTC). Not for a DATE column: a date is its own key."""
        from pyspark.sql import functions as F

        return F.date_format(F.from_utc_timestamp(instant, self.zone) if self.zoned else instant, self.spark_key_format)

    def parse(self, value: object, *, source: str = "partition") -> Partition:
        """Validate a partition value (text, date or datetime) and return it; `PartitionError` otherwise.

        The one validation of a partition: the resolver, the CLI and the planner all call it."""
        if isinstance(value, dt.datetime):
            return self._in_calendar(self.floor(value), source)
        if isinstance(value, dt.date):
            if self.unit == "HOUR":
                raise PartitionError(f"{source} must be an hour ({self.form}, UTC), got the date {value}")
            return self._in_calendar(value, source)
        found = self.pattern.fullmatch(value) if isinstance(value, str) else None
        if not found:
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise PartitionError(
                f"{source} must be a {self.name} partition written {self.form} (ASCII digits, {self.zone}), got {shown}. "
                f"{self.how_to_pass}"
            )
        key = found.group(1)
        try:
            if self.unit == "DAY":
                parsed: Partition = dt.date.fromisoformat(key)
            else:
                parsed = dt.datetime.strptime(key, "%Y-%m-%dT%H").replace(tzinfo=dt.UTC)
        except ValueError:
            raise PartitionError(
                f"{source} {value!r} is not a real calendar {'date' if self.unit == 'DAY' else 'hour'} "
                f"(written {self.form}, {self.zone})"
            ) from None
        return self._in_calendar(parsed, source)

    def parse_range(self, value: object, *, source: str = "partition") -> PartitionRange:
        """Validate a range `FIRST/LAST` (ISO 8601 interval of two partition keys, both
        included) and return it; `PartitionError` otherwise."""
        text = value if isinstance(value, str) else ""
        parts = text.split(RANGE_SEPARATOR)
        if len(parts) != 2:
            raise PartitionError(
                f"{source} must be a range of {self.name} partitions written {self.form}/{self.form} "
                f"(both ends included, {self.zone}), got {value!r}"
            )
        first = self.parse(parts[0], source=f"{source} (its start)")
        last = self.parse(parts[1], source=f"{source} (its end)")
        span = PartitionRange(first, last, self)
        if last < first:
            raise PartitionError(f"{source} {value!r}: its end {self.key(last)} is before its start {self.key(first)}")
        if len(span) > MAX_RANGE:
            raise PartitionError(
                f"{source} {value!r} holds {len(span)} partitions; a range run holds at most {MAX_RANGE}: "
                "split it (wap run --from --to does, in batches of the pipeline's batch_size)"
            )
        return span

    def parse_span(self, value: object, *, source: str = "partition") -> Partition | PartitionRange:
        """A partition, or a range of them if the text holds `/` (`parse`, `parse_range`)."""
        if isinstance(value, str) and RANGE_SEPARATOR in value:
            return self.parse_range(value, source=source)
        return self.parse(value, source=source)

    def _in_calendar(self, partition: Partition, source: str) -> Partition:
        if not FIRST_YEAR <= partition.year <= LAST_YEAR:
            raise PartitionError(
                f"{source} {self.key(partition)} is outside the supported calendar: partitions are from "
                f"{FIRST_YEAR}-01-01 to {LAST_YEAR}-12-31"
            )
        return partition

    def floor(self, moment: dt.datetime) -> Partition:
        """The partition a moment falls in (naive moments are taken as UTC)."""
        moment = moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
        if self.unit == "DAY":
            return moment.astimezone(_zone(self.zone)).date() if self.zoned else moment.date()
        return moment.replace(minute=0, second=0, microsecond=0)

    def key(self, partition: Partition) -> str:
        """The partition's text: `2024-01-31` or `2024-01-31T05` (path-safe: no colon)."""
        if self.unit == "DAY":
            return partition.isoformat() if not isinstance(partition, dt.datetime) else partition.date().isoformat()
        return self.floor(partition).strftime("%Y-%m-%dT%H")  # type: ignore[arg-type]

    def start(self, partition: Partition) -> dt.datetime:
        """The partition's first instant, in UTC: a local day's is its midnight on the zone's clock
        (or the first instant after it, where a daylight-saving change skips midnight)."""
        if isinstance(partition, dt.datetime):
            return partition
        if not self.zoned:
            return dt.datetime.combine(partition, dt.time(), tzinfo=dt.UTC)
        # 00:00 on the zone's clock, as UTC. Where a spring-forward skips midnight (Sao Paulo until
        # 2019), zoneinfo takes the skipped wall time at the old offset: the day's first real instant.
        local = dt.datetime.combine(partition, dt.time(), tzinfo=_zone(self.zone))
        return local.astimezone(dt.UTC)

    def window(self, partition: Partition) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) of the partition in UTC; a local day's end is the next day's start, so a
        day with a daylight-saving change is 23 or 25 hours long."""
        start = self.start(partition)
        if self.zoned and self.unit == "DAY":
            return start, self.start(self.next(partition))
        return start, start + self.step

    def next(self, partition: Partition, periods: int = 1) -> Partition:
        return partition + self.step * periods

    def between(self, first: Partition, last: Partition) -> Iterator[Partition]:
        """Every partition from `first` to `last`, both included."""
        current = first
        while current <= last:
            yield current
            current = self.next(current)


DAILY = Grain(
    name="daily",
    step=dt.timedelta(days=1),
    # A partition key may also be a midnight timestamp (CronPartitionTimetable's default key format).
    pattern=re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(?:T00:00:00(?:Z|\+00:00)?)?"),
    form="YYYY-MM-DD",
    column_type="date",
    unit="DAY",
    spark_key_format="yyyy-MM-dd",
)
HOURLY = Grain(
    name="hourly",
    step=dt.timedelta(hours=1),
    pattern=re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2})(?::00(?::00)?)?(?:Z|\+00:00)?"),
    form="YYYY-MM-DDTHH",
    column_type="timestamp",
    unit="HOUR",
    spark_key_format="yyyy-MM-dd'T'HH",
)
GRAINS = {grain.name: grain for grain in (DAILY, HOURLY)}


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def daily_in(zone: str) -> Grain:
    """A daily grain whose partitions are the calendar days of the IANA time zone `zone`
    (`daily_in("America/New_York")`): the key is the local date, its window the local
    midnights in UTC. `daily_in("UTC")` is `DAILY`."""
    if zone == "UTC":
        return DAILY
    try:
        if not isinstance(zone, str) or zone != zone.strip() or not zone:
            raise ValueError
        _zone(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {zone!r}: name an IANA zone such as 'America/New_York' or 'Europe/Paris' "
            "(python -c 'import zoneinfo; print(sorted(zoneinfo.available_timezones()))' lists them)"
        ) from None
    return Grain(**{**DAILY.__dict__, "zone": zone})


@dataclass(frozen=True)
class PartitionRange:
    """Consecutive partitions of one grain, `first` to `last`, both included. The grain is
    given where it is a local day's (`daily_in`); else it is the values' (`grain_of`)."""

    first: Partition
    last: Partition
    grain: Grain = field(default=None, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.grain is None:
            object.__setattr__(self, "grain", grain_of(self.first))

    @property
    def key(self) -> str:
        """`2024-01-01/2024-01-31`: what the ledger's run, the params and lineage carry."""
        return f"{self.grain.key(self.first)}{RANGE_SEPARATOR}{self.grain.key(self.last)}"

    def partitions(self) -> list[Partition]:
        return list(self.grain.between(self.first, self.last))

    def __len__(self) -> int:
        # Counted on the calendar, not in hours: a local day may be 23 or 25 hours long.
        return int((self.last - self.first) / self.grain.step) + 1  # type: ignore[operator]

    def batches(self, size: int) -> list[PartitionRange]:
        """The range cut into consecutive ranges of at most `size` partitions."""
        values = self.partitions()
        return [
            PartitionRange(chunk[0], chunk[-1], self.grain)
            for chunk in (values[i : i + size] for i in range(0, len(values), size))
        ]


def grain_named(name: str, zone: str = "UTC") -> Grain:
    """The grain `daily` or `hourly`; a daily one in `zone` (`daily_in`)."""
    try:
        grain = GRAINS[name]
    except KeyError:
        raise ValueError(f"unknown grain {name!r}; one of: {', '.join(GRAINS)}") from None
    if zone != "UTC":
        if grain.unit != "DAY":
            raise ValueError(f"a {name} grain is in UTC: an hour is the same hour in every zone (zone {zone!r})")
        return daily_in(zone)
    return grain


def parse_partition(value: object, *, source: str = "partition", grain: Grain = DAILY) -> Partition:
    """Validate a partition value of `grain` (default daily); raise `PartitionError` otherwise."""
    return grain.parse(value, source=source)


def resolve_partition(context: Mapping[str, Any], grain: Grain = DAILY) -> Partition | PartitionRange:
    """Return the partition (or range of partitions) of the run described by an Airflow task context."""
    params = context.get("params") or {}
    override = params.get("partition") if isinstance(params, Mapping) else None
    if override not in (None, ""):
        return grain.parse_span(override, source='params["partition"]')

    dag_run = context.get("dag_run")
    key = getattr(dag_run, "partition_key", None) or context.get("partition_key")
    if key:
        return grain.parse_span(str(key), source="dag_run.partition_key")

    logical_date = context.get("logical_date")
    if logical_date is not None:
        return grain.parse(logical_date, source="logical_date")

    raise PartitionError(
        "This run has no partition: no params['partition'], no partition key and no logical date. " + grain.how_to_pass
    )


def grain_of(partition: Partition) -> Grain:
    """The grain of a partition value: a datetime is an hour, a date a day."""
    return HOURLY if isinstance(partition, dt.datetime) else DAILY


def key_of(partition: Partition) -> str:
    """A partition's key; the form tells the grain (`2024-01-31` daily, `2024-01-31T05` hourly)."""
    return grain_of(partition).key(partition)


def from_key(key: str) -> Partition:
    """A partition back from its key (as the ledger, snapshot summaries and XComs carry it)."""
    return (HOURLY if "T" in key else DAILY).parse(key, source="partition key")


def span_key(span: Partition | PartitionRange) -> str:
    """The key of a partition or of a range (`2024-01-31`, `2024-01-01/2024-01-31`)."""
    return span.key if isinstance(span, PartitionRange) else key_of(span)


def span_from_key(key: str) -> Partition | PartitionRange:
    """A partition or a range back from its key."""
    grain = HOURLY if "T" in key else DAILY
    return grain.parse_span(key, source="partition key")


def stretches(keys: list[str]) -> list[Partition | PartitionRange]:
    """Keys of one grain, sorted, as runs of consecutive partitions: a lone partition as
    itself, a longer run as a range (`span_key` of each is what an asset event carries)."""
    found: list[list[Partition]] = []
    for value in sorted(from_key(k) for k in keys):
        if found and grain_of(value).next(found[-1][-1]) == value:
            found[-1].append(value)
        else:
            found.append([value])
    return [run[0] if len(run) == 1 else PartitionRange(run[0], run[-1]) for run in found]
