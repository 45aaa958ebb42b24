"""The engine's settings, in one place: each `TASKRUNNER_*` name, its type, default and bound.

A site sets them in its Django settings; this site reads each from the
environment under the same name (backoffice/settings.py loops over
`SETTINGS`). Every other module reads them through the functions below,
never through `django.conf.settings` directly, so a default lives here only.
`taskrunner.checks` checks each one (a value of the wrong type or out of
bounds is a system check error with the setting's stable id), so a bad value
stops `manage.py check`, `migrate`, the worker and the web server at start.
"""

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type[int] | type[float]
    default: int | float
    minimum: int | float
    check_id: str  # the system check's stable id for a bad value
    help: str

    def value(self) -> Any:
        return self.kind(getattr(settings, self.name, self.default))


MAX_LINE_BYTES = Setting(
    "TASKRUNNER_MAX_LINE_BYTES", int, 64 * 1024, 1024, "taskrunner.E001",
    "A log line longer than this is split in pieces marked as continued.",
)  # fmt: skip
HEARTBEAT_SECONDS = Setting(
    "TASKRUNNER_HEARTBEAT_SECONDS", float, 5.0, 0.05, "taskrunner.E010",
    "How often a worker proves it is alive.",
)  # fmt: skip
WORKER_DEAD_AFTER = Setting(
    "TASKRUNNER_WORKER_DEAD_AFTER", float, 30.0, 0.1, "taskrunner.E011",
    "A worker silent this long is dead; its runs become lost.",
)  # fmt: skip
SSE_KEEPALIVE_SECONDS = Setting(
    "TASKRUNNER_SSE_KEEPALIVE_SECONDS", float, 15.0, 0.01, "taskrunner.E020",
    "An idle stream sends a keepalive comment this often.",
)  # fmt: skip
SSE_MAX_SECONDS = Setting(
    "TASKRUNNER_SSE_MAX_SECONDS", float, 1800.0, 1.0, "taskrunner.E021",
    "A stream closes after this long (clients resume with Last-Event-ID), so restarts never "
    "wait on open streams.",
)  # fmt: skip
SSE_CLIENT_BUFFER_BYTES = Setting(
    "TASKRUNNER_SSE_CLIENT_BUFFER_BYTES", int, 4 * 1024 * 1024, 64 * 1024, "taskrunner.E022",
    "Unsent bytes one stream may lag behind before it re-reads from the database.",
)  # fmt: skip
SSE_STALL_SECONDS = Setting(
    "TASKRUNNER_SSE_STALL_SECONDS", float, 10.0, 0.1, "taskrunner.E023",
    "A stream whose buffer is full and that took nothing this long is dropped.",
)  # fmt: skip
SSE_MAX_STREAMS_PER_USER = Setting(
    "TASKRUNNER_SSE_MAX_STREAMS_PER_USER", int, 100, 1, "taskrunner.E024",
    "Open event streams one user may have at once (beyond: 429 too_many).",
)  # fmt: skip
SSE_MAX_STREAMS_PER_PROCESS = Setting(
    "TASKRUNNER_SSE_MAX_STREAMS_PER_PROCESS", int, 2000, 1, "taskrunner.E025",
    "Open event streams one web process serves at once (beyond: 429 too_many).",
)  # fmt: skip
WAKE_FALLBACK_SECONDS = Setting(
    "TASKRUNNER_WAKE_FALLBACK_SECONDS", float, 0.5, 0.001, "taskrunner.E012",
    "How often a worker still polls the database for requests when its direct wake-up "
    "(the socket on SQLite, NOTIFY on PostgreSQL) works.",
)  # fmt: skip
WAKE_IDLE_SECONDS = Setting(
    "TASKRUNNER_WAKE_IDLE_SECONDS", float, 1.0, 0.001, "taskrunner.E013",
    "While a worker has no run, its polling of the database (the fallback to the direct "
    "wake-up) backs off up to this interval; a wake-up or a run brings it back at once.",
)  # fmt: skip
KEEP_DAYS = Setting(
    "TASKRUNNER_KEEP_DAYS", int, 30, 0, "taskrunner.E030",
    "Finished runs older than this many days are pruned (a task's keep_days wins).",
)  # fmt: skip
KEEP_RUNS = Setting(
    "TASKRUNNER_KEEP_RUNS", int, 1000, 0, "taskrunner.E031",
    "Finished runs beyond the newest this many of their task are pruned (a task's keep_runs "
    "wins).",
)  # fmt: skip
PRUNE_SECONDS = Setting(
    "TASKRUNNER_PRUNE_SECONDS", float, 60.0, 0.05, "taskrunner.E032",
    "How often each worker prunes, in small batches.",
)  # fmt: skip
MAX_LOG_BYTES = Setting(
    "TASKRUNNER_MAX_LOG_BYTES", int, 256 * 1024 * 1024, 1024, "taskrunner.E033",
    "A run's stored log beyond this loses its oldest lines.",
)  # fmt: skip

SETTINGS: list[Setting] = [
    MAX_LINE_BYTES,
    HEARTBEAT_SECONDS,
    WORKER_DEAD_AFTER,
    WAKE_FALLBACK_SECONDS,
    WAKE_IDLE_SECONDS,
    SSE_KEEPALIVE_SECONDS,
    SSE_MAX_SECONDS,
    SSE_CLIENT_BUFFER_BYTES,
    SSE_STALL_SECONDS,
    SSE_MAX_STREAMS_PER_USER,
    SSE_MAX_STREAMS_PER_PROCESS,
    KEEP_DAYS,
    KEEP_RUNS,
    PRUNE_SECONDS,
    MAX_LOG_BYTES,
]


def max_line_bytes() -> int:
    return int(MAX_LINE_BYTES.value())


def heartbeat_seconds() -> float:
    return float(HEARTBEAT_SECONDS.value())


def worker_dead_after() -> float:
    return float(WORKER_DEAD_AFTER.value())


def wake_fallback_seconds() -> float:
    return float(WAKE_FALLBACK_SECONDS.value())


def wake_idle_seconds() -> float:
    return float(WAKE_IDLE_SECONDS.value())


def wake_dir() -> Path:
    """TASKRUNNER_WAKE_DIR: where the workers on this host bind their wake sockets (a path)."""
    configured = getattr(settings, "TASKRUNNER_WAKE_DIR", "")
    return Path(configured) if configured else Path(settings.BASE_DIR) / "var" / "wake"


def sse_keepalive_seconds() -> float:
    return float(SSE_KEEPALIVE_SECONDS.value())


def sse_max_seconds() -> float:
    return float(SSE_MAX_SECONDS.value())


def sse_client_buffer_bytes() -> int:
    return int(SSE_CLIENT_BUFFER_BYTES.value())


def sse_stall_seconds() -> float:
    return float(SSE_STALL_SECONDS.value())


def sse_max_streams_per_user() -> int:
    return int(SSE_MAX_STREAMS_PER_USER.value())


def sse_max_streams_per_process() -> int:
    return int(SSE_MAX_STREAMS_PER_PROCESS.value())


HOST = "TASKRUNNER_HOST"  # a string, so not in SETTINGS: any non-empty name will do


def host() -> str:
    """This worker's host: where its runs' processes live (default: the machine's hostname).

    Two workers with the same host may signal each other's runs' processes, so
    it must be unique per machine (or per PID namespace); see the README's
    "Several hosts".
    """
    return str(getattr(settings, HOST, "") or socket.gethostname())


# A switch, not a number (so not in SETTINGS): Django tasks' children are
# forked from a warm process each worker keeps (True), or started cold.
WARM_STARTS_NAME = "TASKRUNNER_WARM_STARTS"


def warm_starts() -> bool:
    return bool(getattr(settings, WARM_STARTS_NAME, True))


def keep_days() -> int:
    return int(KEEP_DAYS.value())


def keep_runs() -> int:
    return int(KEEP_RUNS.value())


def prune_seconds() -> float:
    return float(PRUNE_SECONDS.value())


def max_log_bytes() -> int:
    return int(MAX_LOG_BYTES.value())
