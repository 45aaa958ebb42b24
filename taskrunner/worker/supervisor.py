"""The supervisor: `manage.py taskrunner worker` runs `Supervisor.run()`.

One asyncio loop in the main thread owns every child (spawned from this
thread, read without blocking, exit seen through a pidfd) and coordinates the
parts: the database thread (`database.WorkerDatabase`), the writer
(`writer.EventWriter`), control requests (`controls`), dead workers
(`reconcile`), and for each run a `handle.RunHandle` whose `RunExecution`
holds the rules of pausing, timeouts and stopping. psutil work (signalling a
tree, sampling CPU) runs on one more thread, so a slow /proc walk never
stalls the pipes.

Side loops, each a named task: the writer; the watcher (one `DatabaseWaker`:
control requests and new runs are seen within milliseconds; with no run its
fallback polling backs off, a run started brings it back); the heartbeat
(proves this worker alive and reconciles dead ones); the sampler (CPU and
memory of each run's tree); the schedule keeper (`schedules`: fires due
schedules); the pruner (`pruning`: retention, in small batches).

Signals only record: the first SIGTERM/SIGINT stops claiming and ends the
children (SIGTERM, SIGKILL after each task's grace) and records their runs as
`aborted` with the reason; a second one kills them at once. Stopping never
waits on the database for ever: past the longest grace plus
`STOP_STORE_SECONDS`, what could not be stored is logged, the worker exits
with status 1, and its runs stay `running` until another worker finds them.
"""

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from taskrunner import conf
from taskrunner.models import Run, RunStatus, Worker
from taskrunner.process.execution import StopReason
from taskrunner.unavailable import is_database_unavailable
from taskrunner.wakesocket import WakeSocket
from taskrunner.wakeup import DatabaseWaker, fallback_seconds
from taskrunner.worker import controls, database, pruning, reconcile
from taskrunner.worker.artifacts import ArtifactCollector
from taskrunner.worker.database import GaveUp, WorkerDatabase
from taskrunner.worker.handle import RunHandle
from taskrunner.worker.schedules import ScheduleKeeper
from taskrunner.worker.stopping import RunsStopping
from taskrunner.worker.warm import WarmStarts
from taskrunner.worker.writer import EventWriter

logger = logging.getLogger(__name__)

SAMPLE_SECONDS = 2.0
STOP_STORE_SECONDS = 5.0  # after a stop signal: how long past the longest grace to keep storing


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
        self.hostname = conf.host()
        self.handles: dict[int, RunHandle] = {}
        self.supervisions: set[asyncio.Task] = set()
        self.claimed_count = 0
        self.stopping = False
        self.forced = False
        self.stop_signal = ""
        self._idle_seen = False
        self.exit_status = 0

    def run(self) -> int:
        return asyncio.run(self.main())

    async def main(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.db = WorkerDatabase()
        self.procs = ThreadPoolExecutor(1, thread_name_prefix="taskrunner-procs")
        self.wake = asyncio.Event()
        self.writer = EventWriter(self.db, self.handles, on_gone=self._run_gone)
        self.collector = ArtifactCollector(self.db)
        self.waker = DatabaseWaker(idle_interval=conf.wake_idle_seconds())
        self.direct = self.waker.direct = WakeSocket.for_worker(self.waker.vendor)
        self.applied = controls.RecentlyApplied()
        self.warm = WarmStarts()  # Django tasks' children forked from a warm process
        self.schedules = ScheduleKeeper(self.db, self.wake.set, lambda: self.stopping)
        self.pruner = pruning.Pruner()  # a thread and a connection of its own
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._handle_stop_signal, sig)
        try:
            self.worker: Worker = await self.db.call(
                database.register, self.hostname, self.concurrency
            )
            logger.info(
                "worker started worker_id=%s pid=%s concurrency=%s",
                self.worker.pk,
                os.getpid(),
                self.concurrency,
            )
            await self.db.call(reconcile.reconcile_dead_workers, self.worker, self.db.contact_since)
            await self.db.call(reconcile.kill_leftovers, self.worker)
            writing = asyncio.create_task(forever("writer", self.writer.step))
            side = [
                asyncio.create_task(forever("watcher", self._watch_step)),
                asyncio.create_task(forever("heartbeat", self._heartbeat_step)),
                asyncio.create_task(forever("sampler", self._sample_step)),
                asyncio.create_task(forever("schedules", self.schedules.step)),
                asyncio.create_task(forever("pruner", self.pruner.step)),
            ]
            try:
                await self._main_loop()
                await self._shutdown()
            finally:
                for task in side:
                    task.cancel()
                await asyncio.gather(*side, return_exceptions=True)
                if not await self.writer.stop(writing):
                    self.exit_status = 1
                try:
                    await self.db.call_until_done(database.unregister, self.worker)
                    logger.info("worker stopped worker_id=%s", self.worker.pk)
                except GaveUp:
                    logger.error("worker stopped unrecorded worker_id=%s", self.worker.pk)
                    self.exit_status = 1
        except GaveUp:
            logger.error("worker stopping without a database")
            self.exit_status = 1
        finally:
            self.warm.close()
            await self.waker.close()
            if self.direct is not None:
                self.direct.close()
            # The database thread may be stuck waiting on the database: never wait for it.
            self.pruner.close(abandon=bool(self.exit_status))
            await self.db.close(abandon=bool(self.exit_status))
            self.procs.shutdown(wait=True)
            self.collector.close()
        return self.exit_status

    def _handle_stop_signal(self, sig: int) -> None:
        # Only record; the loops act on it.
        now = time.monotonic()
        if self.stopping:
            # A second signal: kill the children now, and give a database that
            # is away only STOP_STORE_SECONDS more (one that is there stores all).
            self.forced = True
            deadline = now + STOP_STORE_SECONDS
            self.db.stop_deadline = min(self.db.stop_deadline or deadline, deadline)
        else:
            grace = max((h.execution.grace for h in self.handles.values()), default=0.0)
            self.db.stop_deadline = now + grace + STOP_STORE_SECONDS
        self.stopping = True
        self.stop_signal = signal.Signals(sig).name
        self.wake.set()
        self.writer.wake()

    # --- claiming and starting --------------------------------------------------

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
            runs = await self.db.call(database.claim, self.worker, free)
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

    async def _start(self, run: Run) -> None:
        """Spawn the run's child first; recording it waits until the child runs."""
        try:
            handle = RunHandle.spawn(
                run,
                procs=self.procs,
                on_output=self.writer.wake,
                warm=self.warm,
                on_publish=self.collector.publish,
            )
        except (OSError, ValueError) as exc:
            logger.warning("run could not start run_id=%s error=%s", run.pk, exc)
            try:
                error = f"Could not start: {exc}"
                await self.db.call_until_done(
                    database.finish_run, run, RunStatus.FAILED, None, error
                )
            except Exception:  # noqa: BLE001 - a deleted run, or stopping without a database
                logger.exception("recording a failed start failed run_id=%s", run.pk)
            return
        self.handles[run.pk] = handle
        self.waker.busy = True
        self.waker.active()  # its controls must not wait for a poll backed off while idle
        logger.info("run started run_id=%s task=%s pid=%s start=%s", *handle.describe())
        handle.arm()
        supervision = asyncio.create_task(self._supervise(handle), name=f"run-{run.pk}")
        self.supervisions.add(supervision)
        supervision.add_done_callback(self.supervisions.discard)

    # --- one run, from its start to its final status -------------------------------

    async def _supervise(self, handle: RunHandle) -> None:
        try:
            await self._record_started(handle)
            try:
                returncode = await handle.proc.finish()
            finally:
                handle.exited = True
                handle.disarm()
            # What the psutil thread was doing is done, and its notes are in the
            # buffer; every line is read; the writer stores all before the final status.
            await handle.act(lambda: None)
            self.writer.wake()
            await handle.stored.wait()
            await self.collector.finish(handle, self.writer)  # its files, before its status
            if handle.gone:
                logger.info("deleted run ended run_id=%s returncode=%s", handle.run_id, returncode)
                return
            ending, error = handle.execution.outcome(returncode)
            try:
                await self.db.call_until_done(
                    database.finish_run, handle.run, ending.value, returncode, error
                )
            except Run.DoesNotExist:
                logger.warning("run deleted before its end was recorded run_id=%s", handle.run_id)
                return
            logger.info(
                "run finished run_id=%s status=%s returncode=%s", handle.run_id, ending, returncode
            )
        finally:
            self.handles.pop(handle.run_id, None)
            self.wake.set()

    async def _record_started(self, handle: RunHandle) -> None:
        proc = handle.proc
        try:
            await self.db.call_until_done(
                database.mark_started,
                handle.run,
                hostname=self.hostname,
                pid=proc.pid,
                pgid=proc.pgid,
                create_time=proc.create_time or 0.0,
                key=proc.key,
            )
        except GaveUp:
            raise
        except Exception:
            if not await self.db.call_until_done(database.run_exists, handle.run_id):
                self._run_gone(handle.run_id)
            else:
                logger.exception("recording the start failed run_id=%s", handle.run_id)

    def _run_gone(self, run_id: int) -> None:
        """The run's row was deleted under us: end its process, store nothing more for it."""
        handle = self.handles.get(run_id)
        if handle is None or handle.gone:
            return
        logger.warning("run deleted while running; ending it run_id=%s", run_id)
        handle.gone = True
        handle.output.take()
        handle.relieve()
        handle.act_soon(handle.execution.stop, StopReason.GONE, "The run was deleted while it ran.")
        handle.stored.set()

    # --- side loops -------------------------------------------------------------

    async def _watch_step(self) -> None:
        # The direct path (datagram or NOTIFY) brings controls at once; polling,
        # the fallback, is slower when it exists: a lost wake-up only delays.
        # With no run, a timeout has nothing to look for (the main loop polls
        # for runs itself), and the waker backs its polling off.
        direct = self.direct is not None or self.waker.vendor == "postgresql"
        self.waker.busy = bool(self.handles)
        if not self.handles:
            timeout = conf.wake_idle_seconds()
        else:
            timeout = fallback_seconds() if direct else self.poll_interval
        seen = await self.waker.wait(timeout=timeout)
        changed = {payload for payload in seen if not own_events(payload, self.handles)}
        if seen and not changed:
            return  # only the events this worker just stored: nothing to do
        if any(not p.startswith("control:") for p in changed):
            self.wake.set()  # a new run, or another change: the main loop looks for runs
        if changed:
            self.schedules.changed.set()  # a schedule may have been added or changed
        if self.handles:
            await controls.on_wakeup(self.db, self.worker, self.handles, changed, self.applied)

    async def _heartbeat_step(self) -> None:
        await asyncio.sleep(conf.heartbeat_seconds())
        # Retried at once (backoff from 0.1 s) while the database is away, so the
        # first heartbeat after an outage is not late by a side loop's pause.
        if not await self.db.call_until_done(database.heartbeat, self.worker) and not self.stopping:
            # Cut off past dead_after: its runs are lost (maybe retried elsewhere): end them.
            logger.error("worker declared dead by another worker_id=%s; ending", self.worker.pk)
            self.exit_status = 1
            self._handle_stop_signal(signal.SIGTERM)
            self._handle_stop_signal(signal.SIGTERM)
        await self.db.call(reconcile.reconcile_dead_workers, self.worker, self.db.contact_since)

    async def _sample_step(self) -> None:
        await asyncio.sleep(SAMPLE_SECONDS)
        await sample_runs(self.handles, self.procs, self.db)

    # --- stopping ---------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop every child as an abort would, and wait for each run to be recorded."""
        reason = f"The worker stopped ({self.stop_signal or 'shutdown'}) before the run finished."
        stopping = RunsStopping(self.handles, self.supervisions, self.db, self.wake)
        if not await stopping.stop_all(reason, forced=lambda: self.forced):
            self.exit_status = 1


def own_events(payload: str, handles: dict[int, RunHandle]) -> bool:
    """A PostgreSQL notification of events stored by this worker for its own runs."""
    kind, _, run_id = payload.partition(":")
    return kind == "event" and run_id.isdigit() and int(run_id) in handles


async def sample_runs(
    handles: dict[int, RunHandle], procs: ThreadPoolExecutor, db: WorkerDatabase
) -> None:
    """CPU and memory of each run's whole tree, stored on its run (no event: the pages poll)."""
    loop = asyncio.get_running_loop()
    samples = {}
    for run_id, handle in list(handles.items()):
        cpu, rss = await loop.run_in_executor(procs, handle.proc.tree.sample)
        samples[run_id] = (round(cpu, 1), rss)
    if samples:
        await db.call(database.store_samples, samples)


async def forever(name: str, step: Callable[[], Awaitable[None]]) -> None:
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


def run_worker(concurrency: int = 8, until_idle: bool = False, max_runs: int | None = None) -> int:
    """Run a supervisor in the foreground until stopped; the `worker` verb calls this."""
    supervisor = Supervisor(concurrency=concurrency, until_idle=until_idle, max_runs=max_runs)
    status = supervisor.run()
    if supervisor.db.abandoned:
        # Python would join the database thread at exit, and it may be waiting
        # on a database that does not answer: leave now (logs flushed first).
        logging.shutdown()
        os._exit(status)
    return status
