"""What the timeline draws ahead of now: schedules' coming due times and deferred runs.

The window ahead is as long as the window behind (the page's `?window=`):
on the 1-hour timeline, the next hour. Two kinds of mark fall in it:

- each enabled schedule's due times, from its stored `next_run_at` on, with
  the schedules' own code (`taskrunner.schedules.next_after`, the worker's
  rule for missed times): the browser parses no cron;
- queued runs whose `run_after` lies ahead (started for later, retries).

A schedule whose `next_run_at` has already passed (no worker has fired it
yet) gives an *overdue* mark first, drawn at now. Schedules and runs of a
disabled task are left out: the worker starts nothing for them.

The work and the page stay bounded however many schedules there are: at
most `PER_SCHEDULE` times per schedule and `TOTAL` marks in all, the soonest
first. Each schedule is a lazy sequence and the sequences are merged by
time, so about `TOTAL` cron steps are computed whatever the number of
schedules (a step is some 50 microseconds). What was left out is said on the
page, not hidden.

Keeping the marks fresh is the page script's part (`timeline.js`): the
server draws them with the page, and the script reloads them from
`GET /timeline/coming/?window=...` (`views.timeline_coming`, JSON shaped by
`as_json`) when the live feed shows a new run (a schedule fired, or a run
was queued), when a drawn time has passed (fired, skipped or overdue: the
server says which), when the feed reconnects, and every few minutes for the
times entering the far edge of the window. A run that leaves `queued` loses
its mark at once, from the feed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from django.urls import reverse
from django.utils import dateformat, timezone

from taskrunner.models import Run, Schedule, Task
from taskrunner.schedules import due, next_after
from taskrunner.serializers import iso

PER_SCHEDULE = 50
TOTAL = 500


@dataclass(frozen=True)
class Mark:
    """A coming run on the timeline: a schedule's due time, or a queued run's `run_after`."""

    at: datetime
    schedule: Schedule | None = None
    run: Run | None = None
    overdue: bool = False

    @property
    def task(self) -> Task:
        owner = self.schedule or self.run
        assert owner is not None
        return owner.task


@dataclass
class Coming:
    """The marks of a window ahead, soonest first, and what the bounds left out."""

    marks: list[Mark]
    capped_schedules: int = 0  # schedules with more than PER_SCHEDULE times in the window
    capped_total: bool = False  # more than TOTAL marks in the window

    @property
    def capped(self) -> bool:
        return bool(self.capped_schedules or self.capped_total)


def schedule_times(
    schedule: Schedule, now: datetime, end: datetime
) -> Iterator[tuple[datetime, bool]]:
    """The schedule's due times up to `end` (inclusive), each with whether it is overdue.

    Lazy: each time is computed when asked for. A `next_run_at` at or before
    `now` comes first, as overdue; the time after it is the one the worker
    will store when it fires it (`schedules.due`: missed times collapse into
    one, the next is the first after now).
    """
    at = schedule.next_run_at
    if at is None:
        return
    try:
        if at <= now:
            yield at, True
            # For cron the following time is the first after now, which
            # `next_after(now)` gives without walking the missed times as `due` does.
            at = due(schedule, at, now)[1] if schedule.every else next_after(schedule, now)
        while at <= end:
            yield at, False
            at = next_after(schedule, at)
    except ValueError:
        return  # a bad expression stored by code that skipped validation: the worker logs it


def _schedule_marks(schedule: Schedule, now: datetime, end: datetime, capped: list[int]):
    for index, (at, overdue) in enumerate(schedule_times(schedule, now, end)):
        if index == PER_SCHEDULE:
            capped.append(schedule.pk)
            return
        yield Mark(at=at, schedule=schedule, overdue=overdue)


def coming(now: datetime, end: datetime) -> Coming:
    """The coming runs from `now` to `end`: at most `TOTAL`, the soonest first."""
    # A schedule after the TOTAL-th soonest first time cannot have one of the TOTAL soonest marks.
    schedules = (
        Schedule.objects.filter(enabled=True, task__enabled=True, next_run_at__lte=end)
        .select_related("task")
        .order_by("next_run_at", "id")[:TOTAL]
    )
    runs = (
        Run.objects.queued()
        .filter(task__enabled=True, run_after__gt=now, run_after__lte=end)
        .select_related("task")
        .order_by("run_after", "id")[:TOTAL]
    )
    capped: list[int] = []
    streams: list[Iterable[Mark]] = [_schedule_marks(s, now, end, capped) for s in schedules]
    streams.append(Mark(at=run.run_after, run=run) for run in runs if run.run_after)
    marks = list(islice(heapq.merge(*streams, key=lambda mark: mark.at), TOTAL + 1))
    return Coming(
        marks=marks[:TOTAL], capped_schedules=len(set(capped)), capped_total=len(marks) > TOTAL
    )


def _when(moment: datetime) -> str:
    return dateformat.format(timezone.localtime(moment), "Y-m-d H:i:s T")


def describe(schedule: Schedule) -> str:
    """`every 600 s` or `cron 0 * * * * (Europe/Paris)`, as the task page lists it."""
    if schedule.cron:
        return f"cron {schedule.cron}" + (f" ({schedule.timezone})" if schedule.timezone else "")
    return f"every {schedule.every:g} s"


def title(mark: Mark) -> str:
    """The mark's tooltip: the task, the schedule or run, and the exact time."""
    task = mark.task.display_title
    if mark.run is not None:
        return f"{task} · run {mark.run.pk} queued, not before {_when(mark.at)}"
    assert mark.schedule is not None
    which = f"schedule {mark.schedule.pk}, {describe(mark.schedule)}"
    if mark.overdue:
        return f"{task} · {which} · due since {_when(mark.at)}, not fired yet"
    return f"{task} · {which} · due {_when(mark.at)}"


def as_json(mark: Mark) -> dict[str, Any]:
    """A mark as the page's script and template read it (text only; escaped where it lands)."""
    if mark.run is not None:
        kind, pk, url = "run", mark.run.pk, reverse("taskrunner:run", args=[mark.run.pk])
    else:
        assert mark.schedule is not None
        kind, pk = "schedule", mark.schedule.pk
        url = reverse("taskrunner:task", args=[mark.schedule.task.name]) + "#schedules"
    return {
        "kind": kind,
        "id": pk,
        "task": mark.task.name,
        "at": iso(mark.at),
        "overdue": mark.overdue,
        "title": title(mark),
        "url": url,
    }
