"""Engine settings, each read from Django settings with a default.

TASKRUNNER_MAX_LINE_BYTES   a log line longer than this is split in pieces
                            marked as continued (default 64 KiB).
TASKRUNNER_HEARTBEAT_SECONDS how often a worker proves it is alive (5 s).
TASKRUNNER_WORKER_DEAD_AFTER a worker silent this long is dead; its runs are
                            reconciled as `lost` by the next worker (30 s).
TASKRUNNER_KEEP_DAYS        finished runs older than this many days are pruned (30).
TASKRUNNER_KEEP_RUNS        finished runs beyond the newest this many of a task are pruned (1000).
TASKRUNNER_PRUNE_SECONDS    how often a worker prunes (60 s).
TASKRUNNER_MAX_LOG_BYTES    a run's stored log beyond this loses its oldest lines (256 MiB).
"""

from django.conf import settings


def max_line_bytes() -> int:
    return int(getattr(settings, "TASKRUNNER_MAX_LINE_BYTES", 64 * 1024))


def heartbeat_seconds() -> float:
    return float(getattr(settings, "TASKRUNNER_HEARTBEAT_SECONDS", 5.0))


def worker_dead_after() -> float:
    return float(getattr(settings, "TASKRUNNER_WORKER_DEAD_AFTER", 30.0))


def keep_days() -> int:
    return int(getattr(settings, "TASKRUNNER_KEEP_DAYS", 30))


def keep_runs() -> int:
    return int(getattr(settings, "TASKRUNNER_KEEP_RUNS", 1000))


def prune_seconds() -> float:
    return float(getattr(settings, "TASKRUNNER_PRUNE_SECONDS", 60.0))


def max_log_bytes() -> int:
    return int(getattr(settings, "TASKRUNNER_MAX_LOG_BYTES", 256 * 1024 * 1024))
