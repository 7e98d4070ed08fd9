"""Every error this package raises on purpose, in one place, each saying whether a retry can help.

    WapError                      retryable = False unless a subclass says otherwise
    ├── DataError                 bad data, a bad declaration or a bad request: the same run
    │   │                         fails the same way again, so Airflow does not retry it
    │   ├── PartitionError        no partition, or not a valid key at the pipeline's grain
    │   ├── SuiteError            a suite that does not fit its contract (found at DAG import)
    │   ├── ContractVersionError  the contract and the table's schema disagree
    │   ├── BadSourceError        landed files the reader refuses (layout, link, compression)
    │   ├── GateFailedError       a blocking check failed; the run is quarantined
    │   ├── SupersededError       another run published the partition first (I5)
    │   ├── PartitionChangedError the swap's signal behind SupersededError
    │   ├── QuarantineError       a release/discard that cannot be done as asked
    │   ├── RollbackError         a rollback that cannot be done as asked
    │   ├── TemplateError         `wap new` cannot create the pipeline as asked
    │   └── UnknownPipelineError  no DAG file declares the pipeline named
    ├── SetupError                this machine lacks something (Java, a JDBC driver): fix it first
    └── TransientError            retryable = True: the same run may succeed later
        ├── SourceMissingError    an upstream table has not published the partition yet
        └── PublishConflictError  commits kept colliding with other writers'

The builtin second parents (`ValueError`, `LookupError`, `RuntimeError`) keep `except
ValueError` callers working. They are translated once at each edge: `wap.tasks` (to
Airflow's fail-without-retry) and `wap.cli` (to an exit code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar


class WapError(Exception):
    """An error this package raises on purpose; its message says what is wrong and what to run next."""

    retryable: ClassVar[bool] = False


class DataError(WapError, ValueError):
    """Bad data or a bad request: retrying the same run cannot fix it (no Airflow retry)."""


class PartitionError(DataError):
    """The run has no partition, or the value given is not a valid one."""


class SuiteError(DataError):
    """A suite that is wrong whatever the data: refused when its pipeline loads, before any work.

    One error for every problem of the suite (`problems`), each naming the expectation, the
    column and the fix.
    """

    def __init__(self, suite: str, problems: list[str], pipeline: str | None = None) -> None:
        self.suite, self.problems, self.pipeline = suite, list(problems), pipeline
        owner = f" (pipeline {pipeline})" if pipeline else ""
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        listed = "\n".join(f"  - {Path(suite).name}: {problem}" for problem in problems)
        super().__init__(
            f"suite {suite}{owner} does not fit its contract ({count}); nothing was run. "
            f"Fix the suite and the pipeline loads again:\n{listed}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, as exceptions crossing processes must be
        return (type(self), (self.suite, self.problems, self.pipeline))


class ContractVersionError(DataError):
    """The code's schema contract and the table's schema disagree in a way not allowed."""


class BadSourceError(DataError):
    """Landed files the pipeline refuses to read (a layout, link, compression or header it
    cannot take): retrying cannot help; the message names the file and what to do."""


class GateFailedError(DataError):
    """The run broke a blocking check; what it made is quarantined and nothing was published."""

    def __init__(self, message: str, assertions: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.assertions = assertions or []  # every check and its result, for lineage

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.assertions))


class SupersededError(DataError):
    """Another run published the partition after this one staged it: the first run to
    publish wins, this one published nothing (I5). Retrying would not change that."""


class PartitionChangedError(DataError):
    """The partition is no longer the version this publish meant to replace: another run
    published it first. The first run to publish a partition wins (I5)."""

    def __init__(self, message: str, live: Any, partition: Any = None) -> None:
        # live: the tables.PublishedVersion now live, or None; partition: the one that changed
        super().__init__(message)
        self.live = live
        self.partition = partition

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.live, self.partition))


class QuarantineError(DataError):
    """A quarantine release or discard that cannot be done as asked; nothing was changed."""


class RollbackError(DataError):
    """A rollback that cannot be done as asked; nothing was changed."""


class TemplateError(DataError):
    """The pipeline cannot be created as asked; nothing was written."""


class UnknownPipelineError(DataError, LookupError):
    """No DAG file declares a pipeline of the name asked for."""


class SetupError(WapError, RuntimeError):
    """This machine lacks something the run needs (Java, a JDBC driver): install it, then run again."""


class JavaMissingError(SetupError):
    """PySpark needs Java 17 and none was found."""


class TransientError(WapError, RuntimeError):
    """A failure the same run may get past when tried again (Airflow's retries are for these)."""

    retryable: ClassVar[bool] = True


class SourceMissingError(TransientError):
    """An upstream input the partition needs is not there (yet)."""


class DatabaseUnreachableError(TransientError):
    """The catalog's or the ledger's database refused or dropped the connection (a restart, a
    network cut): the same task may succeed when it answers again."""


class PublishConflictError(TransientError):
    """Commits to the table kept colliding with others' (a retry may succeed)."""
