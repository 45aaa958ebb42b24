"""The writer: stores what the runs printed, as soon as the previous batch is committed.

Latency is one commit, and a flood turns into large batches. It alone writes
a run's log events, so they keep their order; a run's final status is
recorded only once the writer has stored all its lines (`RunHandle.stored`).

Nothing is dropped while the database is away: the batch it holds is stored
again, the same events in the same order, until the database takes it; the
children meanwhile fill their buffers up to the water marks and are then
slowed by their full pipes. A refusal (a permanent error) never blocks the
other runs: the batch is stored run by run, the refused run's batch is
replaced by a notice in its own log, and a run whose row disappeared
(deleted while running) is handed to `on_gone`.
"""

import asyncio
import logging
from collections.abc import Callable

from django.utils import timezone

from taskrunner.process.output import Event, EventKind, Taken
from taskrunner.unavailable import is_database_unavailable
from taskrunner.worker import database
from taskrunner.worker.database import RETRY_FIRST_SECONDS, GaveUp, WorkerDatabase
from taskrunner.worker.handle import RunHandle

logger = logging.getLogger(__name__)


class EventWriter:
    def __init__(
        self,
        db: WorkerDatabase,
        handles: dict[int, RunHandle],
        *,
        on_gone: Callable[[int], None],
    ):
        self.db = db
        self.handles = handles
        self.on_gone = on_gone
        self.dirty = asyncio.Event()
        self.storing = False  # holds a batch not yet committed
        self.store_batch = database.store_batch  # what stores a batch (a test may wrap it)

    def wake(self) -> None:
        self.dirty.set()

    async def step(self) -> None:
        await self.dirty.wait()
        self.dirty.clear()
        await self.flush()

    async def flush(self) -> None:
        """Store everything buffered: the same batch is retried until the database takes it."""
        batch: dict[int, Taken] = {}
        for run_id, handle in list(self.handles.items()):
            if handle.gone:
                continue
            taken = handle.output.take()
            if not taken.is_empty():
                batch[run_id] = taken
        if batch:
            self.storing = True
            try:
                await self.store_until_done(batch)
            except GaveUp:
                self.put_back(batch)  # counted in what could not be stored
                raise
            finally:
                self.storing = False
        for handle in list(self.handles.values()):
            handle.relieve()
            if handle.output.events and not handle.gone:
                self.dirty.set()
            elif handle.exited and handle.output.is_empty():
                handle.stored.set()  # its supervision may record the final status now

    def put_back(self, batch: dict[int, Taken]) -> None:
        for run_id, taken in batch.items():
            handle = self.handles.get(run_id)
            if handle is not None:
                handle.output.put_back(taken)

    def buffered(self) -> bool:
        return any(not h.output.is_empty() for h in self.handles.values() if not h.gone)

    async def store_until_done(self, batch: dict[int, Taken]) -> None:
        """Store `batch` in one transaction, retrying while the database is away.

        A refusal falls back to storing run by run, so one run's bad data
        cannot take the other runs' events down.
        """
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                await self.db.call(self.store_batch, batch)
                return
            except Exception as exc:
                if is_database_unavailable(exc):
                    # Nothing is lost: the same batch, in the same order, next time.
                    delay = await self.db.back_off(exc, delay)
                    continue
                if len(batch) == 1:
                    await self._store_refused(batch, exc)
                    return
                logger.warning("storing a batch refused; storing run by run error=%s", exc)
                for run_id, taken in batch.items():
                    await self.store_until_done({run_id: taken})
                return

    async def _store_refused(self, batch: dict[int, Taken], exc: Exception) -> None:
        """One run's batch the database refuses: say so in its log, or let go of a deleted run."""
        ((run_id, taken),) = batch.items()
        if not await self.db.call_until_done(database.run_exists, run_id):
            self.on_gone(run_id)
            return
        logger.error(
            "dropping events the database refuses run_id=%s events=%s error=%s",
            run_id,
            len(taken.events),
            exc,
        )
        text = f"[taskrunner] {len(taken.events)} event(s) could not be stored and were dropped: "
        notice = Event(EventKind.LOG, "stderr", f"{text}{exc}"[:2000], None, timezone.now())
        try:
            await self.db.call_until_done(
                self.store_batch, {run_id: Taken([notice], None, False, None)}
            )
        except GaveUp:
            raise
        except Exception:  # noqa: BLE001 - even the notice is refused: the log says it all
            logger.exception("the notice of dropped events was refused too run_id=%s", run_id)

    async def stop(self, task: asyncio.Task) -> bool:
        """Let the writer (`task`) store what is left, until the stop deadline; True if all was."""
        self.dirty.set()
        while not self.db.past_deadline():
            if not self.buffered() and not self.storing:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        left = {
            h.run_id: len(h.output.events)
            for h in self.handles.values()
            if h.output.events and not h.gone
        }
        if left:
            logger.error("events not stored before stopping runs=%s", left)
        return not left
