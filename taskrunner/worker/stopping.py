"""The worker stopping: its runs ended as an abort would end them, and recorded.

The first stop signal ends every child (SIGTERM, SIGKILL after each task's
grace) and waits for each run's final record; a second one kills them at
once. Stopping never waits on the database for ever: once every child is
gone and the stop deadline has passed (`WorkerDatabase.stop_deadline`), what
could not be recorded is logged and the worker leaves with status 1; its
runs stay `running` until another worker finds them.
"""

import asyncio
import logging
import time
from collections.abc import Callable

from taskrunner.process.execution import StopReason
from taskrunner.worker.database import WorkerDatabase
from taskrunner.worker.handle import RunHandle

logger = logging.getLogger(__name__)


class RunsStopping:
    def __init__(
        self,
        handles: dict[int, RunHandle],
        supervisions: set[asyncio.Task],
        db: WorkerDatabase,
        wake: asyncio.Event,
    ):
        self.handles = handles
        self.supervisions = supervisions  # one per run, each ends once its run is recorded
        self.db = db
        self.wake = wake  # set by a run's end and by a second stop signal

    async def stop_all(self, reason: str, *, forced: Callable[[], bool]) -> bool:
        """End every run; False if some could not be recorded (the database stayed away)."""
        if not self.handles:
            return True
        logger.info("worker stopping runs=%s", len(self.handles))
        for handle in list(self.handles.values()):
            # A run already stopping keeps its reason.
            await handle.act(handle.execution.stop, StopReason.WORKER, reason)
        killed = False
        while self.supervisions:
            if forced() and not killed:
                killed = True
                for handle in list(self.handles.values()):
                    await handle.act(handle.execution.kill_now, "Told twice to stop: SIGKILL sent.")
            if self.db.past_deadline() and all(h.exited for h in self.handles.values()):
                await self._give_up()
                return False
            await self._wait_for_a_change()
        return True

    async def _give_up(self) -> None:
        # Every child is gone; only the database is missing. Do not wait for it.
        logger.error(
            "stopping without recording runs=%s (the database is unavailable)",
            sorted(self.handles),
        )
        for supervision in list(self.supervisions):
            supervision.cancel()
        await asyncio.gather(*self.supervisions, return_exceptions=True)

    async def _wait_for_a_change(self) -> None:
        self.wake.clear()
        waiter = asyncio.ensure_future(self.wake.wait())
        timeout = None
        if self.db.stop_deadline is not None:
            timeout = max(0.05, self.db.stop_deadline - time.monotonic())
        await asyncio.wait(
            [waiter, *self.supervisions], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
