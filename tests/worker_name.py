"""`[core] hostname_callable` of the test cluster's Celery workers: each worker's own name
(`WAP_TEST_WORKER`), so that a task instance's `hostname` (REST API, UI) says which of the
two workers on this one machine ran it."""

import os
import socket


def hostname() -> str:
    return os.environ.get("WAP_TEST_WORKER") or socket.getfqdn()
