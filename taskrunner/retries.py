"""Retrying failed runs: the successor of a run that ended failed, timed out or lost.

`Run.finish` calls `retry_if_due` in the transaction that records the final
status, so a final failure and its successor are stored together: no worker
dying in between can lose the retry. `aborted` is never retried (a person or
the worker's stop asked for it).
"""

import logging
import random
from datetime import timedelta

from django.utils import timezone

logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({"failed", "timed_out", "lost"})
MAX_DELAY_SECONDS = 3600.0
JITTER = 0.10  # up to 10% more, so retries of many runs failing together spread out


def retry_delay(first_delay: float, attempt: int, rand: float | None = None) -> float:
    """Seconds before attempt `attempt + 1`: doubled per attempt, capped at an hour, plus jitter."""
    base = min(MAX_DELAY_SECONDS, first_delay * 2 ** (attempt - 1))
    return base * (1 + JITTER * (random.random() if rand is None else rand))  # noqa: S311


def retry_if_due(run) -> None:
    """Queue the successor of `run` (just finished) if its task retries and attempts remain."""
    from taskrunner.models import ActionKind, Run, RunAction, Via

    task = run.task
    if run.status not in RETRIED_STATUSES or run.attempt > task.retries or run.retried_by_id:
        return
    if not task.enabled:
        logger.info("no retry: task disabled run_id=%s task=%s", run.pk, task.name)
        return
    now = timezone.now()
    delay = retry_delay(task.retry_delay, run.attempt)
    successor = Run.objects.create(
        task=task,
        params=run.params,
        attempt=run.attempt + 1,
        retry_of=run,
        run_after=now + timedelta(seconds=delay),
        requested_by=None,
        schedule=None,
    )
    RunAction.objects.create(
        run=successor, action=ActionKind.START, by="", via=Via.RETRY, applied_at=now
    )
    successor.record_status_event()
    Run.objects.filter(pk=run.pk).update(retried_by=successor)
    run.retried_by = successor
    logger.info(
        "run retried run_id=%s successor=%s attempt=%s delay=%.3f",
        run.pk,
        successor.pk,
        successor.attempt,
        delay,
    )
