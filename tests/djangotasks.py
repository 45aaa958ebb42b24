"""Django `@task` functions the Django-task tests enqueue (a worker's child imports them)."""

import asyncio
import logging
import sys
import time

from django.tasks import task

from taskrunner import child

logger = logging.getLogger(__name__)


@task
def add(a, b, *, scale=1):
    print(f"adding {a} and {b}")
    return {"sum": (a + b) * scale, "args": [a, b]}


class ReportFailed(Exception):
    pass


@task
def explode(message):
    print("about to fail")
    raise ReportFailed(message)


@task
def sleeper(seconds):
    """Prints a numbered line every 50 ms until `seconds` are over; for pause and abort."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        print(f"tick {n}", flush=True)
        time.sleep(0.05)
    return n


@task
def chatty(until_input):
    """Logs and prints, then waits for a line on stdin (so a test reads it live)."""
    logger.info("logged by logging %s", until_input)
    print(f"printed by print {until_input}")
    child.progress(1, 2, "halfway")
    line = sys.stdin.readline().strip()
    return {"got": line}


@task
async def async_double(value):
    await asyncio.sleep(0.01)
    return value * 2


@task
def marker(label):
    return label


@task
def whoami():
    """Where and how the function's process runs (for the cold and warm start checks)."""
    import os

    from taskrunner.models import Run

    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "sid": os.getsid(0),
        "pgid": os.getpgid(0),
        "runs": Run.objects.count(),  # its own connection works
        "key": os.environ.get("TASKRUNNER_PROCESS_KEY"),
        "run_id": os.environ.get("TASKRUNNER_RUN_ID"),
    }
