"""Background pruning: a side loop of every worker (rules in `taskrunner.retention`).

Every TASKRUNNER_PRUNE_SECONDS the worker prunes, one small batch per call on
its database thread: the writer's batches queue between them, so a large
prune never holds up a live run's log or its control requests.
"""

import asyncio
import logging

from taskrunner import conf
from taskrunner.retention import BATCH_RUNS, prune_batch_step

logger = logging.getLogger(__name__)

MAX_BATCHES = 1000  # per round; the next round goes on


async def prune_step(db) -> None:
    await asyncio.sleep(conf.prune_seconds())
    total = 0
    for _ in range(MAX_BATCHES):
        pruned = await db.call(prune_batch_step)
        total += pruned
        if pruned < BATCH_RUNS:
            break
        await asyncio.sleep(0.01)  # let the log and control through between batches
    if total:
        logger.info("pruned runs=%s", total)
