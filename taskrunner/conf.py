"""Engine settings, each read from Django settings with a default.

TASKRUNNER_MAX_LINE_BYTES   a log line longer than this is split in pieces
                            marked as continued (default 64 KiB).
TASKRUNNER_HEARTBEAT_SECONDS how often a worker proves it is alive (5 s).
TASKRUNNER_WORKER_DEAD_AFTER a worker silent this long is dead; its runs are
                            reconciled as `lost` by the next worker (30 s).
TASKRUNNER_WARM_STARTS      Django tasks' children are forked from a warm
                            process the worker keeps (True), or started cold.
"""

from django.conf import settings


def max_line_bytes() -> int:
    return int(getattr(settings, "TASKRUNNER_MAX_LINE_BYTES", 64 * 1024))


def heartbeat_seconds() -> float:
    return float(getattr(settings, "TASKRUNNER_HEARTBEAT_SECONDS", 5.0))


def worker_dead_after() -> float:
    return float(getattr(settings, "TASKRUNNER_WORKER_DEAD_AFTER", 30.0))


def warm_starts() -> bool:
    return bool(getattr(settings, "TASKRUNNER_WARM_STARTS", True))
