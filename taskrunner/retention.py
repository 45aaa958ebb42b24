"""Retention: pruning finished runs past the rules, and capping one run's stored log.

A finished run is pruned once it finished more than `keep_days` days ago, or
falls beyond the newest `keep_runs` finished runs of its task (the task's own
values, else TASKRUNNER_KEEP_DAYS / TASKRUNNER_KEEP_RUNS). Active runs are
never pruned. Deletion goes in small batches, each its own short
transaction, so a worker pruning in the background never holds the database
(SQLite's single writer lock above all) long enough to stall logging.

Other parts that keep data per run (artifacts) connect to `runs_pruned`: it
is sent for each batch before the rows go, inside the batch's transaction,
with `run_ids` and `dry_run`; a receiver deletes what it keeps for those
runs (unless `dry_run`) and returns how many bytes that was (or would be).
"""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Min, Sum
from django.dispatch import Signal
from django.utils import timezone

from taskrunner import conf

logger = logging.getLogger(__name__)

runs_pruned = Signal()  # sender=None, run_ids=list[int], dry_run=bool; receivers return bytes
BATCH_RUNS = 100
BATCH_PAUSE_SECONDS = 0.02


@dataclass
class Pruned:
    runs: int = 0
    log_bytes: int = 0
    other_bytes: int = 0  # what `runs_pruned` receivers removed (artifacts)

    @property
    def bytes(self) -> int:
        return self.log_bytes + self.other_bytes


def prunable_ids(now=None, limit: int | None = None) -> list[int]:
    """Ids of the finished runs past the retention rules, oldest first."""
    from taskrunner.models import FINAL_STATUSES, Run, Task

    now = now or timezone.now()
    ids: list[int] = []
    for task in Task.objects.only("pk", "keep_days", "keep_runs").order_by("pk"):
        days = task.keep_days if task.keep_days is not None else conf.keep_days()
        keep = task.keep_runs if task.keep_runs is not None else conf.keep_runs()
        finished = Run.objects.filter(task=task, status__in=FINAL_STATUSES)
        old = finished.filter(finished_at__lt=now - timedelta(days=days))
        ids.extend(old.order_by("id").values_list("id", flat=True)[: limit or None])
        beyond = finished.order_by("-finished_at", "-id").values_list("id", flat=True)[keep:]
        ids.extend(beyond[: limit or None] if limit else beyond)
        if limit and len(set(ids)) >= limit:
            break
    unique = sorted(set(ids))
    return unique[:limit] if limit else unique


def _prune_batch(run_ids: list[int], dry_run: bool) -> Pruned:
    from taskrunner.models import FINAL_STATUSES, EventChunk, Run

    with transaction.atomic():
        # Again under the transaction: only runs still final (never an active one).
        run_ids = list(
            Run.objects.filter(pk__in=run_ids, status__in=FINAL_STATUSES).values_list(
                "pk", flat=True
            )
        )
        if not run_ids:
            return Pruned()
        log_bytes = (
            EventChunk.objects.filter(run_id__in=run_ids).aggregate(total=Sum("size"))["total"] or 0
        )
        results: list[tuple[Any, Any]] = list(
            runs_pruned.send(sender=None, run_ids=run_ids, dry_run=dry_run)
        )
        other = sum(r for _, r in results if type(r) is int)
        if not dry_run:
            EventChunk.objects.filter(run_id__in=run_ids).delete()
            Run.objects.filter(pk__in=run_ids).delete()
    return Pruned(len(run_ids), log_bytes, other)


def prune(*, dry_run: bool = False, max_batches: int | None = None, now=None) -> Pruned:
    """Prune (or count, with `dry_run`) the runs past the rules, a batch per transaction."""
    total = Pruned()
    ids = prunable_ids(now)
    for batches, start in enumerate(range(0, len(ids), BATCH_RUNS)):
        if max_batches is not None and batches >= max_batches:
            break
        if batches:
            # Between batches, let writers waiting for the lock in (SQLite has one
            # writer and no queue: back-to-back batches would starve a live log).
            time.sleep(BATCH_PAUSE_SECONDS)
        done = _prune_batch(ids[start : start + BATCH_RUNS], dry_run)
        total.runs += done.runs
        total.log_bytes += done.log_bytes
        total.other_bytes += done.other_bytes
    if total.runs and not dry_run:
        logger.info("runs pruned runs=%s bytes=%s", total.runs, total.bytes)
    return total


def prune_batch_step() -> int:
    """One batch of background pruning (the worker's database thread); runs pruned."""
    ids = prunable_ids(limit=BATCH_RUNS)
    return _prune_batch(ids, dry_run=False).runs if ids else 0


def cap_run_log(run_id: int, stored_bytes: int) -> int:
    """Delete the run's oldest log chunks when its stored log passes the cap; bytes left.

    Called by the writer only when its running count of the run's log passes
    TASKRUNNER_MAX_LOG_BYTES, so the common case costs nothing. What is kept
    is 90% of the cap, so deletions come in steps, not at every batch.
    """
    from taskrunner.events.store import LOG, prune_log
    from taskrunner.models import EventChunk, Run

    cap = conf.max_log_bytes()
    if stored_bytes <= cap:
        return stored_bytes
    chunks = EventChunk.objects.filter(run_id=run_id, kind=LOG)
    # The newest chunk always stays, even when it alone is over the cap (a flood).
    newest = chunks.order_by("-last_seq").values_list("size", flat=True).first() or 0
    lines, removed = prune_log(run_id, max(int(cap * 0.9), newest))
    # The true size now (the running count is an estimate) and the oldest line kept.
    kept = chunks.aggregate(total=Sum("size"), first=Min("first_seq"))
    if lines:
        Run.objects.filter(pk=run_id).update(
            log_pruned_before=kept["first"] or 0, log_pruned_lines=F("log_pruned_lines") + lines
        )
        logger.info("run log capped run_id=%s lines=%s bytes=%s", run_id, lines, removed)
    return kept["total"] or 0
