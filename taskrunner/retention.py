"""Retention: pruning finished runs past the rules, and capping one run's stored log.

A finished run is pruned once it finished more than `keep_days` days ago, or
falls beyond the newest `keep_runs` finished runs of its task (the task's own
values, else TASKRUNNER_KEEP_DAYS / TASKRUNNER_KEEP_RUNS). Active runs are
never pruned. Deletion goes in small batches, each its own short
transaction (a few milliseconds: `BatchSize`), with a pause between them, so
neither `taskrunner prune` nor a worker pruning in the background holds the
database (SQLite's single writer lock above all) long enough to stall a live
run's log.

Other parts that keep data per run (artifacts) connect to `runs_pruned`: it
is sent for each batch before the rows go, inside the batch's transaction
(a dry run opens none), with `run_ids` and `dry_run`; a receiver deletes
what it keeps for those runs (unless `dry_run`) and returns how many bytes
that was (or would be). It should be quick: the transaction holds SQLite's
write lock meanwhile.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, models, transaction
from django.db.models import F, Min, Sum
from django.dispatch import Signal
from django.utils import timezone

from taskrunner import conf

logger = logging.getLogger(__name__)

runs_pruned = Signal()  # sender=None, run_ids=list[int], dry_run=bool; receivers return bytes
MIN_BATCH_RUNS = 10
FIRST_BATCH_RUNS = 20
BATCH_RUNS = 500
# How long one batch's transaction should hold the database. SQLite: a live
# run's log write that finds the one write lock taken waits until it is free
# (its BEGIN is retried every 2 ms at most: taskrunner.db.sqlite3), so about
# as long as the batch holds it. PostgreSQL locks only the rows deleted,
# which no live run writes; what is left to share is the machine.
BATCH_SECONDS = 0.005
BATCH_SECONDS_POSTGRES = 0.02
BATCH_PAUSE_SECONDS = 0.01


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


class BatchSize:
    """How many runs the next batch takes: as many as one short transaction deletes.

    It follows how long the last batch's transaction held the database:
    halved when longer than `seconds` (BATCH_SECONDS), grown by half while
    shorter than 0.6 of it (a batch costs about 2 ms however small, plus some
    0.04 ms a run on SQLite), between MIN_BATCH_RUNS and BATCH_RUNS.
    """

    def __init__(self, seconds: float = BATCH_SECONDS) -> None:
        self.seconds = seconds
        self.runs = FIRST_BATCH_RUNS

    def took(self, runs: int, held: float) -> None:
        if held > self.seconds:
            self.runs = max(MIN_BATCH_RUNS, self.runs // 2)
        elif held < 0.6 * self.seconds and runs >= self.runs:
            self.runs = min(BATCH_RUNS, self.runs + self.runs // 2)


def _prune_batch(run_ids: list[int], dry_run: bool) -> tuple[Pruned, float]:
    """Prune one batch in one short transaction: what it pruned, and how long it held it.

    The reads that need no lock come first.
    """
    from taskrunner.models import FINAL_STATUSES, EventChunk, Run

    def final(ids: list[int]) -> list[int]:
        return list(
            Run.objects.filter(pk__in=ids, status__in=FINAL_STATUSES).values_list("pk", flat=True)
        )

    def others(ids: list[int]) -> int:
        results: list[tuple[Any, Any]] = list(
            runs_pruned.send(sender=None, run_ids=ids, dry_run=dry_run)
        )
        return sum(r for _, r in results if type(r) is int)

    # Reads take no lock (SQLite's WAL, PostgreSQL's snapshots), so they stay
    # out of the transaction: it holds SQLite's one write lock from its start.
    run_ids = final(run_ids)
    if not run_ids:
        return Pruned(), 0.0
    log_bytes = (
        EventChunk.objects.filter(run_id__in=run_ids).aggregate(total=Sum("size"))["total"] or 0
    )
    if dry_run:
        return Pruned(len(run_ids), log_bytes, others(run_ids)), 0.0
    with transaction.atomic():
        # From here (the lock taken: SQLite's BEGIN IMMEDIATE waits for it) to the commit.
        started = time.monotonic()
        if connection.vendor == "postgresql":
            # Its commit need not wait for the disk: a batch lost in a crash is
            # pruned again, whole (the transaction stays atomic).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        run_ids = final(run_ids)  # again under the transaction: never an active run
        other = others(run_ids) if run_ids else 0
        if run_ids:
            delete_runs(run_ids)
    return Pruned(len(run_ids), log_bytes if run_ids else 0, other), time.monotonic() - started


def delete_runs(run_ids: list[int]) -> None:
    """Delete these runs and what refers to them: a statement per relation, no row loaded.

    `Run.objects.filter(...).delete()` loads every run first (Django's
    collector), and its statements cost more to build than to run: a batch
    took several times longer, holding SQLite's lock all along. Each relation
    to `Run` is followed as its `on_delete` says: CASCADE deletes (through
    the ORM when the related model has delete signals or relations of its
    own: artifacts take their files), SET_NULL clears; anything else falls
    back to the ORM's delete. `Run` has no delete signal of its own (a
    receiver for one would not be called).
    """
    from django.db.models.deletion import Collector

    from taskrunner.models import Run

    relations = [  # as Django's collector finds them: hidden ones (related_name "+") too
        f
        for f in Run._meta.get_fields(include_hidden=True)
        if isinstance(f, models.ForeignObjectRel) and (f.one_to_one or f.one_to_many)
    ]
    if any(r.on_delete not in (models.CASCADE, models.SET_NULL) for r in relations):
        Run.objects.filter(pk__in=run_ids).delete()
        return
    quote = connection.ops.quote_name
    ids = ", ".join(["%s"] * len(run_ids))
    fast = Collector(using=connection.alias)
    with connection.cursor() as cursor:
        for relation in relations:
            field = relation.field
            model = relation.related_model
            table, column = quote(model._meta.db_table), quote(str(field.column))
            if relation.on_delete is models.SET_NULL:
                sql = f"UPDATE {table} SET {column} = NULL WHERE {column} IN ({ids})"  # noqa: S608
                cursor.execute(sql, run_ids)
                continue
            related = model._base_manager.filter(**{f"{field.name}__in": run_ids})
            if fast.can_fast_delete(related):
                cursor.execute(f"DELETE FROM {table} WHERE {column} IN ({ids})", run_ids)  # noqa: S608
            else:
                related.delete()
        table = quote(Run._meta.db_table)
        cursor.execute(f"DELETE FROM {table} WHERE id IN ({ids})", run_ids)  # noqa: S608


def prune(
    *,
    dry_run: bool = False,
    max_batches: int | None = None,
    now=None,
    limit: int | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> Pruned:
    """Prune (or count, with `dry_run`) the runs past the rules, a batch per transaction.

    Between batches it sleeps (BATCH_PAUSE_SECONDS, or four times as long as
    the batch held the database when that is longer): on SQLite a writer
    waiting for the lock (a live run's log) gets it then, as it tries again
    every 2 ms at most. `limit` caps the runs looked at, `stopping` is asked
    before each batch.
    """
    total = Pruned()
    ids = prunable_ids(now, limit=limit)
    size = BatchSize(BATCH_SECONDS_POSTGRES if connection.vendor == "postgresql" else BATCH_SECONDS)
    start = batches = 0
    pause = 0.0
    while start < len(ids) and not stopping():
        if max_batches is not None and batches >= max_batches:
            break
        time.sleep(pause)
        batch = ids[start : start + size.runs]
        done, held = _prune_batch(batch, dry_run)
        size.took(len(batch), held)
        pause = max(BATCH_PAUSE_SECONDS, 4 * held)
        start += len(batch)
        batches += 1
        total.runs += done.runs
        total.log_bytes += done.log_bytes
        total.other_bytes += done.other_bytes
    if total.runs and not dry_run:
        logger.info("runs pruned runs=%s bytes=%s batches=%s", total.runs, total.bytes, batches)
    return total


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
