"""Firing due schedules: a side loop of every worker.

Each due time starts exactly one run however many workers race for it: the
worker that moves the schedule's `next_run_at` on with a conditional UPDATE
(`... WHERE id = X AND next_run_at = <the value it read>`, one row changed)
fires it, in the same transaction as the run it creates; the others change
no row and do nothing. The unique (schedule, scheduled_for) constraint on
runs backs this up.

Idle cost: one indexed query for the due schedules and one for the earliest
next time per wake; the loop sleeps until that earliest time, or until the
database changes (a saved schedule notifies on PostgreSQL; SQLite's
data_version moves), at most `IDLE_SECONDS`. Nothing is queried per
schedule, and nothing at all every second, while nothing is due.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils import timezone

from taskrunner.models import ACTIVE_STATUSES, ActionNotAllowed, Run, Schedule, ScheduleOverlap, Via
from taskrunner.params import ParamError
from taskrunner.schedules import due

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # while stopping
# Longest sleep with nothing due and nothing changed: a safety net only (a
# schedule saved anywhere wakes the workers through the database).
IDLE_SECONDS = 10.0
MIN_GAP_SECONDS = 0.5
BATCH = 100  # due schedules handled per wake


def fire_due(now: datetime | None = None) -> tuple[int, datetime | None]:
    """Fire the schedules due at `now`: (runs started, the earliest next time). DB thread."""
    now = now or timezone.now()
    due_schedules = (
        Schedule.objects.select_related("task")
        .filter(enabled=True, next_run_at__lte=now)
        .order_by("next_run_at")[:BATCH]
    )
    started = 0
    for schedule in due_schedules:
        started += fire_one(schedule, now)
    earliest = Schedule.objects.filter(enabled=True).aggregate(at=Min("next_run_at"))["at"]
    return started, earliest


def fire_one(schedule: Schedule, now: datetime) -> int:
    """Fire one due schedule if this worker wins its due time; 1 if a run was queued."""
    read = schedule.next_run_at
    if read is None:  # disabled meanwhile (the query only returns schedules with a time)
        return 0
    try:
        fire_at, following = due(schedule, read, now)
    except ValueError as exc:  # a bad expression stored by code that skipped validation
        logger.error("schedule cannot be computed schedule_id=%s error=%s", schedule.pk, exc)
        Schedule.objects.filter(pk=schedule.pk, next_run_at=read).update(next_run_at=None)
        return 0
    try:
        with transaction.atomic():
            won = Schedule.objects.filter(pk=schedule.pk, enabled=True, next_run_at=read).update(
                next_run_at=following
            )
            if not won:
                return 0  # normal: another worker fired this time, or it was changed
            if schedule.overlap == ScheduleOverlap.SKIP and (
                Run.objects.filter(schedule=schedule, status__in=ACTIVE_STATUSES).exists()
            ):
                logger.info(
                    "schedule skipped: its last run is still active schedule_id=%s due=%s",
                    schedule.pk,
                    fire_at.isoformat(),
                )
                return 0
            try:
                run = schedule.task.start(
                    schedule.params,
                    user=None,
                    via=Via.SCHEDULE,
                    schedule=schedule,
                    scheduled_for=fire_at,
                )
            except (ParamError, ActionNotAllowed) as exc:
                # The task was disabled, or its declaration changed under the schedule.
                logger.warning(
                    "schedule could not start a run schedule_id=%s error=%s", schedule.pk, exc
                )
                return 0
            Schedule.objects.filter(pk=schedule.pk).update(last_run=run)
    except IntegrityError:
        logger.info("schedule time already fired schedule_id=%s due=%s", schedule.pk, fire_at)
        return 0
    logger.info(
        "schedule fired schedule_id=%s run_id=%s due=%s", schedule.pk, run.pk, fire_at.isoformat()
    )
    return 1


class ScheduleKeeper:
    """The worker's side loop step: fire what is due, then sleep until the next time.

    Between due times it sleeps until the earliest `next_run_at`, or until the
    database changes (`changed`, set by the worker's watcher: a schedule saved
    anywhere notifies, see `Schedule.save`), or at most `IDLE_SECONDS`.
    """

    def __init__(self, db, on_fired: Callable[[], None], is_stopping: Callable[[], bool]):
        self.db = db
        self.on_fired = on_fired
        self.is_stopping = is_stopping
        self.changed = asyncio.Event()

    async def step(self) -> None:
        if self.is_stopping():
            await asyncio.sleep(POLL_SECONDS)
            return
        started, earliest = await self.db.call(fire_due)
        if started:
            self.on_fired()  # this worker claims at once; others are woken by the runs' events
        delay = IDLE_SECONDS
        if earliest is not None:
            delay = min(IDLE_SECONDS, (earliest - timezone.now()).total_seconds())
            if delay <= 0:
                # Still due: more than a batch, or a time another worker holds. Soon, not busy.
                delay = 0.01 if started else 0.2
        self.changed.clear()
        checked = time.monotonic()
        try:
            await asyncio.wait_for(self.changed.wait(), timeout=delay)
        except TimeoutError:
            return
        # Woken by a change: a busy database (runs logging) commits all the
        # time, so look again at most every MIN_GAP_SECONDS (a due time still
        # wakes us on the dot through `delay`).
        elapsed = time.monotonic() - checked
        await asyncio.sleep(max(0.0, min(MIN_GAP_SECONDS, delay) - elapsed))
