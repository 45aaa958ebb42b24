"""The supervisor: `manage.py taskrunner worker` runs `Supervisor.run()`.

One asyncio loop in the main thread owns every child (spawned from this
thread, read without blocking, exit seen through a pidfd). Database work runs
on one dedicated thread, in submission order, so a run's log lines are always
stored before its final status. psutil work (pausing a tree, sampling CPU)
runs on another thread so a slow /proc walk never stalls the pipes.

Side loops, each a named task: the writer (stores buffered events in batches
as soon as the previous batch is committed: latency is one commit, and a
flood turns into large batches), the watcher (one `DatabaseWaker`: control
requests and new runs are seen within milliseconds), the heartbeat (proves
this worker alive and reconciles dead ones), and the sampler (CPU and memory
of each run's tree).

Signals only record: the first SIGTERM/SIGINT stops claiming and aborts the
children (SIGTERM, SIGKILL after each task's grace) and records their runs as
`aborted` with the reason; a second one kills them at once.

When the database is away (PostgreSQL restarting, SQLite locked past its
busy timeout, a full disk) nothing is dropped: the writer keeps the batch it
holds, closes the connection, waits (exponential backoff, at most
`RETRY_MAX_SECONDS`) and stores the same batch again, for as long as it
takes; the children keep running and, once their buffers reach the water
marks, are slowed by their full pipes. Which errors are "away" and which are
a refusal is `taskrunner.unavailable.is_database_unavailable`. A refusal of
one run's data (a permanent error) never blocks the others: the batch is
stored run by run, the refused run's batch is replaced by a notice in its own
log, and a run whose row disappeared (deleted while running) has its process
ended and its output discarded.

Stopping never waits on the database for ever: after SIGTERM the worker ends
its children as usual, then tries to store what is left until the longest
grace of its runs plus `STOP_STORE_SECONDS` have passed; what it could not
store by then is logged, the worker exits with status 1, and the runs stay
`running` until another worker reconciles them as `lost`.
"""

import asyncio
import json
import logging
import os
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from taskrunner import conf
from taskrunner.models import (
    CONTROL_ACTIONS,
    LIVE_STATUSES,
    ActionKind,
    EventKind,
    Run,
    RunAction,
    RunStatus,
    Task,
    Worker,
    append_events,
)
from taskrunner.params import substitute
from taskrunner.process.lines import Line, parse_protocol
from taskrunner.process.supervised import SupervisedProcess, describe_exit
from taskrunner.process.tree import ProcessTree, process_identity
from taskrunner.unavailable import is_database_unavailable
from taskrunner.wakeup import DatabaseWaker

logger = logging.getLogger(__name__)

# Buffered events per run before the child's pipes are left unread: the child
# then blocks in write() until the database catches up. Memory stays flat.
HIGH_WATER = 20_000
LOW_WATER = 5_000
# The same in characters of log text, so that long lines (up to 64 KiB each)
# cannot make 20,000 buffered events weigh a gigabyte.
HIGH_WATER_CHARS = 8 * 1024 * 1024
LOW_WATER_CHARS = 2 * 1024 * 1024
SAMPLE_SECONDS = 2.0
BATCH_LIMIT = 10_000  # events of one run per transaction
# Retrying a database that is away: the first wait, doubled up to the cap.
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0
# After a stop signal: how long past the longest grace to keep trying to store.
STOP_STORE_SECONDS = 5.0


class GaveUp(Exception):
    """The worker is stopping and its deadline for storing has passed."""


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass
class RunHandle:
    """A run this worker is executing: its process and what is not yet stored."""

    run: Run
    proc: SupervisedProcess
    grace: float
    timeout: float | None
    events: list[tuple] = field(default_factory=list)
    progress: dict | None = None
    result: Any = None
    has_result: bool = False
    paused: bool = False
    stop_reason: str = ""  # "abort", "timeout" or "worker": why we are ending it
    stop_detail: str = ""
    running_since: float = field(default_factory=time.monotonic)
    ran_seconds: float = 0.0  # time spent running before the last resume
    timeout_timer: asyncio.TimerHandle | None = None
    kill_timer: asyncio.TimerHandle | None = None
    backpressured: bool = False
    buffered_chars: int = 0  # log text in `events`
    exited: bool = False  # the process ended and every line was read
    gone: bool = False  # the run's row was deleted: nothing more is stored
    stored: asyncio.Event = field(default_factory=asyncio.Event)  # all stored, after exit

    @property
    def run_id(self) -> int:
        return self.run.pk

    def take(self) -> tuple[list[tuple], dict | None, tuple[bool, Any]]:
        events, self.events = self.events, []
        self.buffered_chars = 0
        progress, self.progress = self.progress, None
        result = (self.has_result, self.result)
        self.has_result, self.result = False, None
        return events, progress, result


class Supervisor:
    def __init__(
        self,
        *,
        concurrency: int = 8,
        until_idle: bool = False,
        max_runs: int | None = None,
        poll_interval: float = 1.0,
    ):
        self.concurrency = max(1, concurrency)
        self.until_idle = until_idle
        self.max_runs = max_runs
        self.poll_interval = poll_interval
        self.hostname = socket.gethostname()
        self.worker: Worker | None = None
        self.handles: dict[int, RunHandle] = {}
        self.supervisions: set[asyncio.Task] = set()
        self.claimed_count = 0
        self.stopping = False
        self.forced = False
        self.stop_signal = ""
        self._idle_seen = False
        self.stop_deadline: float | None = None  # monotonic; set by a stop signal
        # Wall-clock time since which this worker has reached the database
        # without interruption (see `_worker_is_dead`).
        self.db_contact_since = timezone.now()
        self._db_away = False
        self.abandoned_db_thread = False
        self._storing = False  # the writer holds a batch not yet committed
        self.exit_status = 0

    # --- entry points -------------------------------------------------------

    def run(self) -> int:
        return asyncio.run(self.main())

    async def main(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.db = ThreadPoolExecutor(1, thread_name_prefix="taskrunner-db")
        self.procs = ThreadPoolExecutor(1, thread_name_prefix="taskrunner-procs")
        self.wake = asyncio.Event()
        self.dirty = asyncio.Event()
        self.waker = DatabaseWaker()
        self._install_signal_handlers()
        try:
            self.worker = await self.orm(self._register)
            logger.info(
                "worker started worker_id=%s pid=%s concurrency=%s",
                self.worker.pk,
                os.getpid(),
                self.concurrency,
            )
            await self.orm(self._reconcile_dead_workers)
            self.writer = asyncio.create_task(self._forever("writer", self._write_step))
            side = [
                asyncio.create_task(self._forever("watcher", self._watch_step)),
                asyncio.create_task(self._forever("heartbeat", self._heartbeat_step)),
                asyncio.create_task(self._forever("sampler", self._sample_step)),
            ]
            try:
                await self._main_loop()
                await self._shutdown()
            finally:
                for task in side:
                    task.cancel()
                await asyncio.gather(*side, return_exceptions=True)
                await self._stop_writer()
                try:
                    await self.orm_until_done(self._unregister)
                    logger.info("worker stopped worker_id=%s", self.worker.pk)
                except GaveUp:
                    logger.error("worker stopped unrecorded worker_id=%s", self.worker.pk)
                    self.exit_status = 1
        except GaveUp:
            logger.error("worker stopping without a database")
            self.exit_status = 1
        finally:
            await self.waker.close()
            if self.exit_status:
                # The database thread may be stuck in a call that waits on the
                # database (a busy timeout, a connect): never wait for it.
                self.abandoned_db_thread = True
                self.db.shutdown(wait=False, cancel_futures=True)
            else:
                await self.loop.run_in_executor(self.db, lambda: connection.close())
                self.db.shutdown(wait=True)
            self.procs.shutdown(wait=True)
        return self.exit_status

    # --- signals ------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._handle_stop_signal, sig)

    def _handle_stop_signal(self, sig: int) -> None:
        # Only record; the loops act on it.
        now = time.monotonic()
        if self.stopping:
            self.forced = True
            self.stop_deadline = now  # a second signal: store nothing more, go
        else:
            grace = max((handle.grace for handle in self.handles.values()), default=0.0)
            self.stop_deadline = now + grace + STOP_STORE_SECONDS
        self.stopping = True
        self.stop_signal = signal.Signals(sig).name
        self.wake.set()
        self.dirty.set()

    def _past_stop_deadline(self) -> bool:
        return self.stop_deadline is not None and time.monotonic() >= self.stop_deadline

    # --- database thread ----------------------------------------------------

    async def _forever(self, name: str, step) -> None:
        """Repeat `step()`; an error is logged and retried, never the end of a side loop.

        A dead heartbeat would get this worker's runs marked lost by others; a
        dead writer would leave children blocked on full pipes.
        """
        while True:
            try:
                await step()
            except GaveUp:
                logger.warning("stopping without a database loop=%s", name)
                return
            except Exception as exc:
                if is_database_unavailable(exc):
                    logger.warning("database unavailable loop=%s; retrying error=%s", name, exc)
                else:
                    logger.exception("worker loop failed loop=%s; retrying", name)
                await asyncio.sleep(1.0)

    async def orm_until_done(self, fn, *args, **kwargs):
        """`orm()`, retried while the database is away: what it records must be recorded.

        A refusal (any other error) is raised at once: retrying it would
        never end. Raises `GaveUp` once the worker is stopping and past its
        deadline.
        """
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                return await self.orm(fn, *args, **kwargs)
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                delay = await self._wait_for_database(exc, delay)

    async def _wait_for_database(self, exc: BaseException, delay: float) -> float:
        """Back off after a transient error; the next delay. `GaveUp` past the stop deadline."""
        if self._past_stop_deadline():
            raise GaveUp(str(exc)) from exc
        logger.warning("database unavailable; retrying in %s s error=%s", delay, exc)
        if self.stop_deadline is not None:
            delay = max(0.0, min(delay, self.stop_deadline - time.monotonic()))
        await asyncio.sleep(delay)
        return min(delay * 2, RETRY_MAX_SECONDS)

    async def orm(self, fn, *args, **kwargs):
        """Run `fn(*args, **kwargs)` on the database thread, in submission order."""
        return await self.loop.run_in_executor(self.db, self._call_orm, fn, args, kwargs)

    def _call_orm(self, fn, args, kwargs):
        # The thread keeps its connection (reconnecting before every call cost
        # more than the log batch itself); after a transient error it is
        # closed, so the next call starts on a fresh one.
        if connection.errors_occurred:
            close_old_connections()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if is_database_unavailable(exc):
                self._db_away = True
                if not connection.in_atomic_block:
                    try:
                        connection.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        logger.debug("closing the connection failed", exc_info=True)
            raise
        if self._db_away:
            self._db_away = False
            self.db_contact_since = timezone.now()
            logger.info("database reachable again")
        return result

    def _register(self) -> Worker:
        me = psutil.Process()
        return Worker.objects.create(
            hostname=self.hostname,
            pid=me.pid,
            create_time=me.create_time(),
            boot_id=boot_id(),
            concurrency=self.concurrency,
        )

    def _unregister(self) -> None:
        Worker.objects.filter(pk=self.worker.pk).update(stopped_at=timezone.now())

    # --- main loop: claim and start -----------------------------------------

    async def _main_loop(self) -> None:
        while not self.stopping:
            self.wake.clear()
            started = await self._claim_and_start()
            if self._done():
                return
            if not started:
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=self.poll_interval)
                except TimeoutError:
                    pass

    def _done(self) -> bool:
        if self.handles:
            return False
        if self.max_runs is not None and self.claimed_count >= self.max_runs:
            return True
        return self.until_idle and self._idle_seen

    async def _claim_and_start(self) -> int:
        free = self.concurrency - len(self.handles)
        if self.max_runs is not None:
            free = min(free, self.max_runs - self.claimed_count)
        self._idle_seen = False
        if free <= 0:
            return 0
        try:
            runs = await self.orm(self._claim, free)
        except Exception as exc:  # noqa: BLE001 - the next attempt may succeed
            if is_database_unavailable(exc):
                logger.warning("claiming runs failed; retrying error=%s", exc)
            else:
                logger.exception("claiming runs failed; retrying")
            await asyncio.sleep(1.0)
            return 0
        if not runs:
            self._idle_seen = True
            return 0
        self.claimed_count += len(runs)
        for run in runs:
            await self._start(run)
        return len(runs)

    def _claim(self, limit: int) -> list[Run]:
        """Claim up to `limit` queued runs, respecting each task's max_concurrent.

        The task rows are locked (FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE
        transaction locks the whole database), so two workers counting a
        task's active runs at once cannot both take its last free slot.
        """
        claimed: list[int] = []
        # A cheap look first: the claim below takes SQLite's write lock.
        if not Run.objects.queued().filter(task__enabled=True).exists():
            return []
        with transaction.atomic():
            candidates = list(
                Run.objects.queued()
                .filter(task__enabled=True)
                .select_related("task")
                .order_by("id")[: limit * 4 + 10]
            )
            if not candidates:
                return []
            task_ids = sorted({run.task_id for run in candidates})
            list(Task.objects.select_for_update().filter(pk__in=task_ids).order_by("pk"))
            active = {
                task_id: Run.objects.filter(task_id=task_id, status__in=LIVE_STATUSES).count()
                for task_id in task_ids
            }
            now = timezone.now()
            for run in candidates:
                if len(claimed) >= limit:
                    break
                if active[run.task_id] >= run.task.max_concurrent:
                    continue
                # 0 rows is normal: the run was aborted (or claimed) meanwhile.
                changed = Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                    status=RunStatus.RUNNING,
                    worker=self.worker,
                    hostname=self.hostname,
                    started_at=now,
                    updated_at=now,
                )
                if changed:
                    active[run.task_id] += 1
                    claimed.append(run.pk)
        # Loaded whole, task included: the loop thread reads them without queries.
        return list(Run.objects.select_related("task", "requested_by").filter(pk__in=claimed))

    async def _start(self, run: Run) -> None:
        task = run.task
        key = uuid.uuid4().hex
        argv = substitute(task.argv, run.params)
        # The site's secrets (SECRET_KEY, DATABASE_URL) stay with the worker
        # unless the task names them in `pass_env`.
        env = {
            **task.child_environment(dict(os.environ)),
            "TASKRUNNER_RUN_ID": str(run.pk),
            "TASKRUNNER_PARAMS": json.dumps(run.params),
            "TASKRUNNER_PROCESS_KEY": key,
            "PYTHONUNBUFFERED": "1",
        }
        handle_ref: dict[str, RunHandle] = {}

        def on_lines(stream: str, lines: list[Line]) -> None:
            self._on_lines(handle_ref["handle"], stream, lines)

        try:
            proc = SupervisedProcess(
                argv,
                env=env,
                cwd=task.cwd or None,
                key=key,
                on_lines=on_lines,
                max_line_bytes=conf.max_line_bytes(),
            )
        except (OSError, ValueError) as exc:
            logger.warning("run could not start run_id=%s error=%s", run.pk, exc)
            try:
                await self.orm_until_done(
                    run.finish, RunStatus.FAILED, error=f"Could not start: {exc}"
                )
            except Exception:  # noqa: BLE001 - a deleted run, or stopping without a database
                logger.exception("recording a failed start failed run_id=%s", run.pk)
            return
        handle = RunHandle(run=run, proc=proc, grace=task.grace, timeout=task.timeout)
        handle_ref["handle"] = handle
        self.handles[run.pk] = handle
        logger.info("run started run_id=%s task=%s pid=%s", run.pk, task.name, proc.pid)
        self._arm_timeout(handle)
        supervision = asyncio.create_task(self._supervise(handle), name=f"run-{run.pk}")
        self.supervisions.add(supervision)
        supervision.add_done_callback(self.supervisions.discard)

    # --- output -------------------------------------------------------------

    def _on_lines(self, handle: RunHandle, stream: str, lines: list[Line]) -> None:
        if handle.gone:
            return  # its row is deleted: read (so the child is not blocked), never stored
        now = timezone.now()
        chars = 0
        for line in lines:
            chars += len(line.text)
            event = parse_protocol(line.text) if stream == "stdout" and not line.continued else None
            if event is None:
                data = {"continued": True} if line.continued else None
                handle.events.append((EventKind.LOG, stream, line.text, data, now))
            elif event.kind == "progress":
                handle.events.append((EventKind.PROGRESS, "", "", event.data, now))
                handle.progress = event.data
            elif event.kind == "result":
                handle.result, handle.has_result = event.data, True
            else:
                handle.events.append((EventKind.MESSAGE, "", "", event.data, now))
        handle.buffered_chars += chars
        too_much = len(handle.events) > HIGH_WATER or handle.buffered_chars > HIGH_WATER_CHARS
        if too_much and not handle.backpressured:
            handle.backpressured = True
            handle.proc.pause_reading()
        self.dirty.set()

    async def _write_step(self) -> None:
        await self.dirty.wait()
        self.dirty.clear()
        await self._flush_all()

    async def _stop_writer(self) -> None:
        """Let the writer store what is left (until the stop deadline), then end it."""
        self.dirty.set()
        while not self._past_stop_deadline():
            buffered = any(h.events or h.progress is not None for h in self._live())
            if not buffered and not self._storing:
                break
            await asyncio.sleep(0.05)
        self.writer.cancel()
        await asyncio.gather(self.writer, return_exceptions=True)
        left = {h.run_id: len(h.events) for h in self.handles.values() if h.events and not h.gone}
        if left:
            logger.error("events not stored before stopping runs=%s", left)
            self.exit_status = 1

    def _put_back(self, batch: dict[int, tuple]) -> None:
        for run_id, (events, progress, (has_result, result)) in batch.items():
            handle = self.handles.get(run_id)
            if handle is None:
                continue
            handle.events[:0] = events
            handle.buffered_chars += sum(len(event[2]) for event in events)
            if handle.progress is None:
                handle.progress = progress
            if has_result and not handle.has_result:
                handle.result, handle.has_result = result, True

    def _live(self) -> list[RunHandle]:
        return [handle for handle in self.handles.values() if not handle.gone]

    async def _flush_all(self) -> None:
        """Store everything buffered: the same batch is retried until the database takes it."""
        batch = {}
        for run_id, handle in list(self.handles.items()):
            if handle.gone:
                continue
            events, progress, result = handle.take()
            if events or progress is not None or result[0]:
                batch[run_id] = (events, progress, result)
        if batch:
            self._storing = True
            try:
                await self._store_until_done(batch)
            except GaveUp:
                self._put_back(batch)  # counted in what could not be stored
                raise
            finally:
                self._storing = False
        for handle in list(self.handles.values()):
            low = len(handle.events) < LOW_WATER and handle.buffered_chars < LOW_WATER_CHARS
            if handle.backpressured and low:
                handle.backpressured = False
                handle.proc.resume_reading()
            if handle.events and not handle.gone:
                self.dirty.set()
            elif handle.exited and handle.progress is None and not handle.has_result:
                handle.stored.set()  # its supervision may record the final status now

    async def _store_until_done(self, batch: dict[int, tuple]) -> None:
        """Store `batch` in one transaction, retrying while the database is away.

        A refusal falls back to storing run by run, so one run's bad data
        cannot take the other runs' events down.
        """
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                await self.orm(self._store_batch, batch)
                return
            except Exception as exc:
                if is_database_unavailable(exc):
                    # Nothing is lost: the same batch, in the same order, next time.
                    delay = await self._wait_for_database(exc, delay)
                    continue
                if len(batch) == 1:
                    await self._store_refused(batch, exc)
                    return
                logger.warning("storing a batch refused; storing run by run error=%s", exc)
                for run_id, item in batch.items():
                    await self._store_until_done({run_id: item})
                return

    async def _store_refused(self, batch: dict[int, tuple], exc: Exception) -> None:
        """One run's batch the database refuses: say so in its log, or let go of a deleted run."""
        ((run_id, (events, _progress, _result)),) = batch.items()
        if not await self.orm_until_done(self._run_exists, run_id):
            self._run_disappeared(run_id)
            return
        logger.error(
            "dropping events the database refuses run_id=%s events=%s error=%s",
            run_id,
            len(events),
            exc,
        )
        text = f"[taskrunner] {len(events)} event(s) could not be stored and were dropped: {exc}"
        notice = [(EventKind.LOG, "stderr", text[:2000], None, timezone.now())]
        try:
            await self.orm_until_done(self._store_batch, {run_id: (notice, None, (False, None))})
        except GaveUp:
            raise
        except Exception:  # noqa: BLE001 - even the notice is refused: the log says it all
            logger.exception("the notice of dropped events was refused too run_id=%s", run_id)

    @staticmethod
    def _run_exists(run_id: int) -> bool:
        return Run.objects.filter(pk=run_id).exists()

    def _run_disappeared(self, run_id: int) -> None:
        """The run's row was deleted under us: end its process, store nothing more for it."""
        handle = self.handles.get(run_id)
        if handle is None or handle.gone:
            return
        logger.warning("run deleted while running; ending it run_id=%s", run_id)
        handle.gone = True
        handle.take()
        if handle.backpressured:
            handle.backpressured = False
            handle.proc.resume_reading()
        self._end(handle, "gone", "The run was deleted while it ran.")
        handle.stored.set()

    @staticmethod
    def _store_batch(batch: dict[int, tuple]) -> None:
        now = timezone.now()
        with transaction.atomic():
            for run_id, (events, progress, (has_result, result)) in batch.items():
                for start in range(0, len(events), BATCH_LIMIT):
                    append_events(run_id, events[start : start + BATCH_LIMIT])
                changes: dict[str, Any] = {}
                if progress is not None:
                    changes["progress"] = progress
                if has_result:
                    changes["result"] = result
                if changes:
                    Run.objects.filter(pk=run_id).update(updated_at=now, **changes)

    # --- supervision of one run ----------------------------------------------

    async def _supervise(self, handle: RunHandle) -> None:
        try:
            await self._record_started(handle)
            try:
                returncode = await handle.proc.finish()
            finally:
                for timer in (handle.timeout_timer, handle.kill_timer):
                    if timer is not None:
                        timer.cancel()
            # Every line is read; the writer stores them (it alone writes
            # events, so they keep their order) before the final status.
            handle.exited = True
            self.dirty.set()
            await handle.stored.wait()
            if handle.gone:
                logger.info("deleted run ended run_id=%s returncode=%s", handle.run_id, returncode)
                return
            status, error = self._outcome(handle, returncode)
            try:
                await self.orm_until_done(self._finish_run, handle.run, status, returncode, error)
            except GaveUp:
                raise
            except Run.DoesNotExist:
                logger.warning("run deleted before its end was recorded run_id=%s", handle.run_id)
                return
            logger.info(
                "run finished run_id=%s status=%s returncode=%s", handle.run_id, status, returncode
            )
        finally:
            self.handles.pop(handle.run_id, None)
            self.wake.set()

    async def _record_started(self, handle: RunHandle) -> None:
        proc = handle.proc
        try:
            await self.orm_until_done(
                handle.run.mark_started,
                hostname=self.hostname,
                pid=proc.pid,
                pgid=proc.pgid,
                create_time=proc.create_time or 0.0,
                process_key=proc.key,
            )
        except GaveUp:
            raise
        except Exception:
            if not await self.orm_until_done(self._run_exists, handle.run_id):
                self._run_disappeared(handle.run_id)
            else:
                logger.exception("recording the start failed run_id=%s", handle.run_id)

    @staticmethod
    def _finish_run(run: Run, status: str, returncode: int, error: str) -> None:
        run.refresh_from_db()
        run.finish(status, exit_code=returncode, error=error)

    def _outcome(self, handle: RunHandle, returncode: int) -> tuple[str, str]:
        if handle.stop_reason == "abort":
            return RunStatus.ABORTED, handle.stop_detail
        if handle.stop_reason == "timeout":
            return RunStatus.TIMED_OUT, handle.stop_detail
        if handle.stop_reason in ("worker", "gone"):
            return RunStatus.ABORTED, handle.stop_detail
        if returncode == 0:
            return RunStatus.SUCCEEDED, ""
        return RunStatus.FAILED, f"The task's process ended with {describe_exit(returncode)}."

    def _end(self, handle: RunHandle, reason: str, detail: str) -> None:
        """Abort a run's tree: SIGTERM (+SIGCONT), SIGKILL after the grace period."""
        if handle.stop_reason:
            return
        handle.stop_reason, handle.stop_detail = reason, detail
        self.procs.submit(handle.proc.terminate)
        handle.kill_timer = self.loop.call_later(
            handle.grace, lambda: self.procs.submit(handle.proc.kill)
        )
        logger.info("run ending run_id=%s reason=%s grace=%s", handle.run_id, reason, handle.grace)

    # --- timeouts (paused time does not count) --------------------------------

    def _arm_timeout(self, handle: RunHandle) -> None:
        if handle.timeout is None or handle.stop_reason:
            return
        remaining = handle.timeout - handle.ran_seconds
        handle.running_since = time.monotonic()
        handle.timeout_timer = self.loop.call_later(max(0.0, remaining), self._on_timeout, handle)

    def _disarm_timeout(self, handle: RunHandle) -> None:
        if handle.timeout_timer is not None:
            handle.timeout_timer.cancel()
            handle.timeout_timer = None
        handle.ran_seconds += time.monotonic() - handle.running_since

    def _on_timeout(self, handle: RunHandle) -> None:
        detail = f"Timed out after {handle.timeout:g} s of running."
        self._end(handle, "timeout", detail)
        if handle.paused:
            handle.paused = False

    # --- control requests -------------------------------------------------------

    async def _watch_step(self) -> None:
        # Polling at poll_interval too: a lost wake-up only delays, never loses.
        changed = await self.waker.wait(timeout=self.poll_interval)
        if changed and all(self._own_events(payload) for payload in changed):
            return  # only the events this worker just stored: nothing to do
        if self.handles:
            await self._apply_controls()
        self.wake.set()  # the main loop looks for new runs

    def _own_events(self, payload: str) -> bool:
        """A PostgreSQL notification of events stored by this worker for its own runs."""
        kind, _, run_id = payload.partition(":")
        return kind == "event" and run_id.isdigit() and int(run_id) in self.handles

    async def _apply_controls(self) -> None:
        actions = await self.orm(self._pending_actions)
        for action in actions:
            handle = self.handles.get(action.run_id)
            if handle is None:
                await self.orm(action.mark_applied, "ignored: the run is not running here")
                continue
            outcome = await self._apply(handle, action)
            await self.orm(self._record_applied, handle, action, outcome)

    def _pending_actions(self) -> list[RunAction]:
        return list(
            RunAction.objects.filter(
                applied_at__isnull=True,
                run__worker=self.worker,
                action__in=[*CONTROL_ACTIONS, ActionKind.INPUT],
            ).order_by("id")
        )

    async def _apply(self, handle: RunHandle, action: RunAction) -> str:
        kind = action.action
        if kind == ActionKind.PAUSE:
            if handle.paused or handle.stop_reason:
                return "ignored: not running"
            await self.loop.run_in_executor(self.procs, handle.proc.stop)
            handle.paused = True
            self._disarm_timeout(handle)
            return "paused"
        if kind == ActionKind.RESUME:
            if not handle.paused:
                return "ignored: not paused"
            await self.loop.run_in_executor(self.procs, handle.proc.cont)
            handle.paused = False
            self._arm_timeout(handle)
            return "resumed"
        if kind == ActionKind.ABORT:
            by = f" by {action.by}" if action.by else ""
            self._end(handle, "abort", f"Aborted{by} via {action.via}.")
            return "aborting"
        if kind == ActionKind.INPUT:
            return "written" if handle.proc.write_line(action.data) else "ignored: stdin closed"
        return "ignored: unknown action"

    @staticmethod
    def _record_applied(handle: RunHandle, action: RunAction, outcome: str) -> None:
        action.mark_applied(outcome)
        handle.run.refresh_from_db()  # the status event shows the run as it is now
        if outcome == "paused":
            handle.run.mark_paused()
        elif outcome == "resumed":
            handle.run.mark_resumed()

    # --- heartbeat and reconciliation -----------------------------------------

    async def _heartbeat_step(self) -> None:
        await asyncio.sleep(conf.heartbeat_seconds())
        await self.orm(self._heartbeat)
        await self.orm(self._reconcile_dead_workers)

    def _heartbeat(self) -> None:
        Worker.objects.filter(pk=self.worker.pk).update(heartbeat_at=timezone.now())

    def _worker_is_dead(self, other: Worker, now: datetime) -> bool:
        """Whether `other` is dead: silent too long, or (same machine) its process is gone.

        Silence is judged only over time this worker could see the database
        itself. After an outage every worker's last heartbeat is old, and
        they all reconnect at about the same moment: a worker that regained
        the database less than `dead_after` ago declares no one dead by
        silence (the others get `dead_after` from its reconnection to
        heartbeat again). A worker that never lost the database judges as
        before. A process found gone on this machine is dead at once.
        """
        dead_after = conf.worker_dead_after()
        silent = (now - other.heartbeat_at).total_seconds() > dead_after
        in_contact = (now - self.db_contact_since).total_seconds() > dead_after
        if silent and in_contact:
            return True
        if other.hostname != self.hostname or other.boot_id != boot_id():
            return False
        # Same machine: a worker whose process is gone is dead now, not later.
        identity = process_identity(other.pid)
        return identity is None or (
            other.create_time is not None and abs(identity - other.create_time) > 0.01
        )

    def _reconcile_dead_workers(self) -> None:
        """End what dead workers left behind: kill their runs' processes, mark runs lost."""
        now = timezone.now()
        for other in Worker.objects.filter(stopped_at__isnull=True).exclude(pk=self.worker.pk):
            if not self._worker_is_dead(other, now):
                continue
            logger.warning("worker is dead worker_id=%s host=%s", other.pk, other.hostname)
            for run in Run.objects.live().filter(worker=other):
                survivors = 0
                if run.hostname == self.hostname and run.pid:
                    tree = ProcessTree(
                        run.pid, run.pid_create_time, run.pgid or run.pid, run.process_key
                    )
                    tree.kill()
                    survivors = len(tree.alive())
                where = "" if run.hostname == self.hostname else f" on {run.hostname}"
                run.finish(
                    RunStatus.LOST,
                    error=f"Its worker ({other}) died{where}; the run could not be completed."
                    + (f" {survivors} process(es) survived SIGKILL." if survivors else ""),
                )
                logger.warning("run lost run_id=%s worker_id=%s", run.pk, other.pk)
            Worker.objects.filter(pk=other.pk).update(stopped_at=now)

    # --- CPU and memory ------------------------------------------------------------

    async def _sample_step(self) -> None:
        await asyncio.sleep(SAMPLE_SECONDS)
        samples = {}
        for run_id, handle in list(self.handles.items()):
            cpu, rss = await self.loop.run_in_executor(self.procs, handle.proc.tree.sample)
            samples[run_id] = (round(cpu, 1), rss)
        if samples:
            await self.orm(self._store_samples, samples)

    @staticmethod
    def _store_samples(samples: dict[int, tuple[float, int]]) -> None:
        now = timezone.now()
        for run_id, (cpu, rss) in samples.items():
            Run.objects.filter(pk=run_id, status__in=LIVE_STATUSES).update(
                cpu_percent=cpu, memory_bytes=rss, updated_at=now
            )

    # --- stopping ------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop every child as an abort would, and wait for each run to be recorded."""
        if not self.handles:
            return
        reason = f"The worker stopped ({self.stop_signal or 'shutdown'}) before the run finished."
        logger.info("worker stopping runs=%s", len(self.handles))
        for handle in list(self.handles.values()):
            self._end(handle, "worker", reason)  # a run already aborting keeps its reason
        while self.supervisions:
            if self.forced:
                for handle in list(self.handles.values()):
                    self.procs.submit(handle.proc.kill)
            if self._past_stop_deadline() and all(h.exited for h in self.handles.values()):
                # Every child is gone; only the database is missing. Do not wait for it.
                logger.error(
                    "stopping without recording runs=%s (the database is unavailable)",
                    sorted(self.handles),
                )
                self.exit_status = 1
                for supervision in list(self.supervisions):
                    supervision.cancel()
                await asyncio.gather(*self.supervisions, return_exceptions=True)
                return
            self.wake.clear()
            waiter = asyncio.ensure_future(self.wake.wait())
            timeout = None
            if self.stop_deadline is not None:
                timeout = max(0.05, self.stop_deadline - time.monotonic())
            await asyncio.wait(
                [waiter, *self.supervisions], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()


def run_worker(concurrency: int = 8, until_idle: bool = False, max_runs: int | None = None) -> int:
    """Run a supervisor in the foreground until stopped; the `worker` verb calls this."""
    supervisor = Supervisor(concurrency=concurrency, until_idle=until_idle, max_runs=max_runs)
    status = supervisor.run()
    if supervisor.abandoned_db_thread:
        # Python would join the database thread at exit, and it may be waiting
        # on a database that does not answer: leave now (logs flushed first).
        logging.shutdown()
        os._exit(status)
    return status
