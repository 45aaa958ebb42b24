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
from django.db import DatabaseError, close_old_connections, connection, transaction
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
STORE_ATTEMPTS = 3


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
        self._store_failures = 0

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
            side = [
                asyncio.create_task(self._forever("writer", self._write_step)),
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
                await self._flush_all()
                await self.orm(self._unregister)
                logger.info("worker stopped worker_id=%s", self.worker.pk)
        finally:
            await self.waker.close()
            await self.loop.run_in_executor(self.db, lambda: connection.close())
            self.db.shutdown(wait=True)
            self.procs.shutdown(wait=True)
        return 0

    # --- signals ------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._handle_stop_signal, sig)

    def _handle_stop_signal(self, sig: int) -> None:
        # Only record; the loops act on it.
        if self.stopping:
            self.forced = True
        self.stopping = True
        self.stop_signal = signal.Signals(sig).name
        self.wake.set()

    # --- database thread ----------------------------------------------------

    async def _forever(self, name: str, step) -> None:
        """Repeat `step()`; an error is logged and retried, never the end of a side loop.

        A dead heartbeat would get this worker's runs marked lost by others; a
        dead writer would leave children blocked on full pipes.
        """
        while True:
            try:
                await step()
            except Exception:
                logger.exception("worker loop failed loop=%s; retrying", name)
                await asyncio.sleep(1.0)

    async def orm_until_done(self, fn, *args, **kwargs):
        """`orm()`, retried while the database refuses: what it records must be recorded."""
        delay = 0.5
        while True:
            try:
                return await self.orm(fn, *args, **kwargs)
            except DatabaseError:
                logger.exception("database write failed; retrying in %s s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def orm(self, fn, *args, **kwargs):
        """Run `fn(*args, **kwargs)` on the database thread, in submission order."""
        return await self.loop.run_in_executor(self.db, self._call_orm, fn, args, kwargs)

    @staticmethod
    def _call_orm(fn, args, kwargs):
        # The thread keeps its connection (reconnecting before every call cost
        # more than the log batch itself); a broken one is dropped after an
        # error, and a failing call is retried once on a fresh connection.
        if connection.errors_occurred:
            close_old_connections()
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            if connection.in_atomic_block:
                raise
            # One retry on a fresh connection; a second failure is real.
            connection.close()
            return fn(*args, **kwargs)

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
        except DatabaseError:
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
            await self.orm_until_done(run.finish, RunStatus.FAILED, error=f"Could not start: {exc}")
            return
        handle = RunHandle(run=run, proc=proc, grace=task.grace, timeout=task.timeout)
        handle_ref["handle"] = handle
        self.handles[run.pk] = handle
        logger.info("run started run_id=%s task=%s pid=%s", run.pk, task.name, proc.pid)
        await self.orm_until_done(
            run.mark_started,
            hostname=self.hostname,
            pid=proc.pid,
            pgid=proc.pgid,
            create_time=proc.create_time or 0.0,
            process_key=key,
        )
        self._arm_timeout(handle)
        supervision = asyncio.create_task(self._supervise(handle), name=f"run-{run.pk}")
        self.supervisions.add(supervision)
        supervision.add_done_callback(self.supervisions.discard)

    # --- output -------------------------------------------------------------

    def _on_lines(self, handle: RunHandle, stream: str, lines: list[Line]) -> None:
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

    async def _flush_all(self) -> None:
        batch = {}
        for run_id, handle in list(self.handles.items()):
            events, progress, result = handle.take()
            if events or progress is not None or result[0]:
                batch[run_id] = (events, progress, result)
        if batch:
            try:
                await self.orm(self._store_batch, batch)
            except DatabaseError as exc:
                self._store_failures += 1
                if self._store_failures < STORE_ATTEMPTS:
                    # Nothing is lost: the events go back in front and are retried.
                    logger.exception("storing events failed; retrying runs=%s", list(batch))
                    self._put_back(batch)
                    await asyncio.sleep(0.5)
                else:
                    # A batch the database refuses every time must not stall
                    # every run: say in each log what was dropped, and go on.
                    logger.exception("dropping events the database refuses runs=%s", list(batch))
                    self._put_back(self._dropped_notice(batch, exc))
            else:
                self._store_failures = 0
        for handle in list(self.handles.values()):
            low = len(handle.events) < LOW_WATER and handle.buffered_chars < LOW_WATER_CHARS
            if handle.backpressured and low:
                handle.backpressured = False
                handle.proc.resume_reading()
            if handle.events:
                self.dirty.set()

    @staticmethod
    def _dropped_notice(batch: dict[int, tuple], exc: Exception) -> dict[int, tuple]:
        now = timezone.now()
        notice = {}
        for run_id, (events, _progress, _result) in batch.items():
            text = f"[taskrunner] {len(events)} event(s) could not be stored: {exc}"[:2000]
            notice[run_id] = ([(EventKind.LOG, "stderr", text, None, now)], None, (False, None))
        return notice

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
        self.dirty.set()

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
            returncode = await handle.proc.finish()
        finally:
            for timer in (handle.timeout_timer, handle.kill_timer):
                if timer is not None:
                    timer.cancel()
        status, error = self._outcome(handle, returncode)
        events, progress, result = handle.take()
        await self.orm_until_done(self._store_batch, {handle.run_id: (events, progress, result)})
        self.handles.pop(handle.run_id, None)
        await self.orm_until_done(self._finish_run, handle.run, status, returncode, error)
        logger.info(
            "run finished run_id=%s status=%s returncode=%s", handle.run_id, status, returncode
        )
        self.wake.set()

    @staticmethod
    def _finish_run(run: Run, status: str, returncode: int, error: str) -> None:
        run.refresh_from_db()
        run.finish(status, exit_code=returncode, error=error)

    def _outcome(self, handle: RunHandle, returncode: int) -> tuple[str, str]:
        if handle.stop_reason == "abort":
            return RunStatus.ABORTED, handle.stop_detail
        if handle.stop_reason == "timeout":
            return RunStatus.TIMED_OUT, handle.stop_detail
        if handle.stop_reason == "worker":
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
        silent = (now - other.heartbeat_at).total_seconds() > conf.worker_dead_after()
        if silent:
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
            self.wake.clear()
            waiter = asyncio.ensure_future(self.wake.wait())
            await asyncio.wait([waiter, *self.supervisions], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()


def run_worker(concurrency: int = 8, until_idle: bool = False, max_runs: int | None = None) -> int:
    """Run a supervisor in the foreground until stopped; the `worker` verb calls this."""
    supervisor = Supervisor(concurrency=concurrency, until_idle=until_idle, max_runs=max_runs)
    return supervisor.run()
