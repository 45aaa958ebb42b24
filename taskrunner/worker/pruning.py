"""Background pruning: a side loop of every worker (rules in `taskrunner.retention`).

Every TASKRUNNER_PRUNE_SECONDS the worker prunes as `taskrunner prune` does,
on a thread and a database connection of its own, never on the database
thread: finding the runs past the rules reads a lot, and a read there would
queue before the live runs' log writes. The deletions go in short
transactions with a pause between them (`retention.prune`), so a live run's
log write, which needs SQLite's one write lock too, never waits long.
Stopping the worker stops a round between two batches.
"""

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.db import connection

from taskrunner import conf
from taskrunner.retention import prune

logger = logging.getLogger(__name__)

ROUND_RUNS = 10_000  # runs looked up at once; a round goes on until none is left


class Pruner:
    def __init__(self) -> None:
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="taskrunner-prune")
        self.stopping = threading.Event()

    async def step(self) -> None:
        await asyncio.sleep(conf.prune_seconds())
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.thread, self.prune_round)

    def prune_round(self) -> int:
        """Prune until nothing is left past the rules, or the worker stops (the thread)."""
        total = 0
        try:
            while not self.stopping.is_set():
                done = prune(limit=ROUND_RUNS, stopping=self.stopping.is_set)
                total += done.runs
                if done.runs < ROUND_RUNS:
                    break
        finally:
            connection.close()  # this thread's own; a database that went away is met afresh
        return total

    def close(self, *, abandon: bool = False) -> None:
        """Stop between two batches; `abandon` when the thread may be stuck on the database."""
        self.stopping.set()
        self.thread.shutdown(wait=not abandon, cancel_futures=True)
