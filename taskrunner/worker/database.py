"""Everything the worker asks of the database, on one thread, in submission order.

One thread keeps one connection (reconnecting before every call cost more
than a log batch) and runs the calls in the order they were made, so a run's
log lines are always stored before its final status. A call that fails
because the database is away (PostgreSQL restarting, SQLite locked past its
busy timeout, a full disk: `taskrunner.unavailable.is_database_unavailable`)
closes the connection, and `call_until_done` waits with exponential backoff
and calls again, for as long as it takes; any other error is a refusal of
that call's data and is raised at once.

Stopping never waits on the database for ever: once the supervisor sets a
`stop_deadline`, a call still failing past it raises `GaveUp`.

The functions below the class are what runs on that thread.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from taskrunner.conf import max_log_bytes
from taskrunner.events.store import append_many
from taskrunner.models import (
    CONTROL_ACTIONS,
    LIVE_STATUSES,
    ActionKind,
    Run,
    RunAction,
    Worker,
)
from taskrunner.process.output import EventKind, Taken
from taskrunner.retention import cap_run_log
from taskrunner.unavailable import is_database_unavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Retrying a database that is away: the first wait, doubled up to the cap.
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0


class GaveUp(Exception):
    """The worker is stopping and its deadline for storing has passed."""


class WorkerDatabase:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="taskrunner-db")
        self.stop_deadline: float | None = None  # monotonic; set when the worker stops
        # Wall-clock time since which this worker has reached the database
        # without a break (dead workers are judged only over such time).
        self.contact_since: datetime = timezone.now()
        self._away = False
        self.abandoned = False  # the thread was left behind, stuck on the database

    def past_deadline(self) -> bool:
        return self.stop_deadline is not None and time.monotonic() >= self.stop_deadline

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the database thread, after what was submitted before."""
        return await self.loop.run_in_executor(self.executor, self._call, fn, args, kwargs)

    async def call_until_done(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call()`, retried while the database is away: what it records must be recorded."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                return await self.call(fn, *args, **kwargs)
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                delay = await self.back_off(exc, delay)

    async def back_off(self, exc: BaseException, delay: float) -> float:
        """Wait after a transient error; the next delay. `GaveUp` past the stop deadline."""
        if self.past_deadline():
            raise GaveUp(str(exc)) from exc
        logger.warning("database unavailable; retrying in %s s error=%s", delay, exc)
        if self.stop_deadline is not None:
            delay = max(0.0, min(delay, self.stop_deadline - time.monotonic()))
        await asyncio.sleep(delay)
        return min(delay * 2, RETRY_MAX_SECONDS)

    def _call(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        if connection.errors_occurred:
            close_old_connections()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if is_database_unavailable(exc):
                self._away = True
                if not connection.in_atomic_block:
                    try:
                        connection.close()  # the next call starts on a fresh one
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        logger.debug("closing the connection failed", exc_info=True)
            raise
        if self._away:
            self._away = False
            self.contact_since = timezone.now()
            logger.info("database reachable again")
        return result

    async def close(self, *, abandon: bool) -> None:
        """Close the connection and the thread; `abandon` when it may be stuck on the database."""
        if abandon:
            self.abandoned = True
            self.executor.shutdown(wait=False, cancel_futures=True)
            return
        # `connection` is per thread: resolve it on the database thread itself.
        await self.loop.run_in_executor(self.executor, lambda: connection.close())
        self.executor.shutdown(wait=True)


# --- what runs on the database thread ----------------------------------------


def boot_id() -> str:
    """This machine's boot: with the hostname, tells whether a pid here means anything."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def register(hostname: str, concurrency: int) -> Worker:
    me = psutil.Process()
    return Worker.objects.create(
        hostname=hostname,
        pid=me.pid,
        create_time=me.create_time(),
        boot_id=boot_id(),
        concurrency=concurrency,
    )


def unregister(worker: Worker) -> None:
    Worker.objects.filter(pk=worker.pk).update(stopped_at=timezone.now())


def heartbeat(worker: Worker) -> bool:
    """Prove this worker alive; False if another already declared it dead (its runs are lost)."""
    alive = Worker.objects.filter(pk=worker.pk, stopped_at__isnull=True)
    return bool(alive.update(heartbeat_at=timezone.now()))


def claim(worker: Worker, limit: int) -> list[Run]:
    """Claim queued runs, in start order, loaded whole (task included: no query later)."""
    ids = Run.objects.claim(worker, limit)
    if not ids:
        return []
    runs = Run.objects.select_related("task", "requested_by").in_bulk(ids)
    return [runs[run_id] for run_id in ids if run_id in runs]  # in the claim's start order


# Log characters stored per live run since this worker claimed it: the log cap
# (TASKRUNNER_MAX_LOG_BYTES) is looked at only when this passes it.
_log_sizes: dict[int, int] = {}


def store_batch(batch: dict[int, Taken]) -> None:
    """Store each run's events, progress and result in one transaction."""
    now = timezone.now()
    capped = []
    with transaction.atomic():
        append_many({run_id: taken.events for run_id, taken in batch.items()})
        for run_id, taken in batch.items():
            events = taken.events
            size = _log_sizes.get(run_id, 0) + sum(
                len(e.text) + 8 for e in events if e.kind == EventKind.LOG
            )
            _log_sizes[run_id] = size
            if size > max_log_bytes():
                capped.append(run_id)
            changes: dict[str, Any] = {}
            if taken.progress is not None:
                changes["progress"] = taken.progress
            if taken.has_result:
                changes["result"] = taken.result
            if changes:
                Run.objects.filter(pk=run_id).update(updated_at=now, **changes)
    for run_id in capped:  # its own short transaction, after the batch is safely stored
        _log_sizes[run_id] = cap_run_log(run_id, _log_sizes[run_id])


def run_exists(run_id: int) -> bool:
    return Run.objects.filter(pk=run_id).exists()


def mark_started(
    run: Run, *, hostname: str, pid: int, pgid: int, create_time: float, key: str
) -> None:
    run.mark_started(
        hostname=hostname, pid=pid, pgid=pgid, create_time=create_time, process_key=key
    )


def finish_run(run: Run, status: str, returncode: int | None, error: str) -> None:
    _log_sizes.pop(run.pk, None)
    run.refresh_from_db()
    run.finish(status, exit_code=returncode, error=error)


def pending_actions(worker: Worker) -> list[RunAction]:
    return list(
        RunAction.objects.filter(
            applied_at__isnull=True,
            run__worker=worker,
            action__in=[*CONTROL_ACTIONS, ActionKind.INPUT],
        ).order_by("id")
    )


def record_applied(run: Run, action: RunAction, outcome: str) -> None:
    action.mark_applied(outcome)
    run.refresh_from_db()  # the status event shows the run as it is now
    if outcome == "paused":
        run.mark_paused()
    elif outcome == "resumed":
        run.mark_resumed()


def record_applied_id(run: Run, action_id: int, outcome: str) -> None:
    """`record_applied` for an action known only by its id (signalled from its wake-up)."""
    try:
        action = RunAction.objects.get(pk=action_id)
    except RunAction.DoesNotExist:
        return  # deleted with its run
    record_applied(run, action, outcome)


def store_samples(samples: dict[int, tuple[float, int]]) -> None:
    now = timezone.now()
    for run_id, (cpu, rss) in samples.items():
        Run.objects.filter(pk=run_id, status__in=LIVE_STATUSES).update(
            cpu_percent=cpu, memory_bytes=rss, updated_at=now
        )
