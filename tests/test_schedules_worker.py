"""Schedules fired by real workers: repeated times, several workers, missed times, overlap."""

import sys
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from taskrunner.models import ACTIVE_STATUSES, Run, RunStatus, Schedule, Task
from tests.conftest import child_script, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = [sys.executable, "-c", "pass"]


def define(name: str, argv: list[str], **fields) -> Task:
    fields.setdefault("grace", 1.0)
    fields.setdefault("max_concurrent", 4)
    return Task.objects.create(name=name, argv=argv, **fields)


def runs_of(schedule: Schedule) -> list[Run]:
    return list(Run.objects.filter(schedule=schedule).order_by("scheduled_for"))


def test_an_every_second_schedule_fires_repeatedly(start_worker):
    task = define("tick", QUICK)
    schedule = Schedule.objects.create(task=task, every=1, overlap="queue")
    worker = start_worker()
    wait_for(lambda: len(runs_of(schedule)) >= 3, timeout=20)
    runs = runs_of(schedule)
    times = [r.scheduled_for for r in runs]
    assert len(set(times)) == len(times)
    # Each fired time is a time of the schedule: whole seconds after the first.
    assert all((b - a).total_seconds() % 1 == 0 for a, b in zip(times, times[1:], strict=False))
    first = runs[0]
    start = first.actions.get()
    assert (start.via, start.by) == ("schedule", "")
    wait_for(lambda: Run.objects.filter(schedule=schedule, status="succeeded").count() >= 2, 20)
    schedule.refresh_from_db()
    assert schedule.last_run_id is not None and schedule.next_run_at > first.scheduled_for
    assert "Traceback" not in worker.log()


def test_three_workers_start_each_due_time_once(start_worker):
    task = define("tick3", QUICK, max_concurrent=10)
    schedule = Schedule.objects.create(task=task, every=1, overlap="queue")
    workers = [start_worker("--concurrency", "4") for _ in range(3)]
    wait_for(lambda: len(runs_of(schedule)) >= 6, timeout=30)
    times = [r.scheduled_for for r in runs_of(schedule)]
    assert len(set(times)) == len(times)
    logs = "".join(w.log() for w in workers)
    # Won by the conditional UPDATE, not by tripping over the unique constraint.
    assert "already fired" not in logs
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT scheduled_for, COUNT(*) FROM taskrunner_run WHERE schedule_id = %s "
                "GROUP BY scheduled_for HAVING COUNT(*) > 1",
                [schedule.pk],
            )
            assert cursor.fetchall() == []


def test_after_missed_times_only_the_latest_fires_once(start_worker):
    task = define("nightly", QUICK)
    now = timezone.now()
    schedule = Schedule.objects.create(task=task, every=3600, overlap="queue")
    # As left by workers stopped for 3.5 hours: three due times passed.
    missed_from = now - timedelta(hours=3, minutes=30)
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=missed_from)
    start_worker()
    run = wait_for(lambda: Run.objects.filter(schedule=schedule).first(), timeout=15)
    wait_for(lambda: Run.objects.get(pk=run.pk).status == "succeeded", timeout=15)
    assert Run.objects.filter(schedule=schedule).count() == 1
    assert run.scheduled_for == missed_from + timedelta(hours=3)
    schedule.refresh_from_db()
    assert schedule.next_run_at == missed_from + timedelta(hours=4)


def test_overlap_skip_skips_while_its_run_is_active(start_worker, tmp_path):
    task = define("slow", [*child_script("numbered"), "--interval", "0.2"])
    schedule = Schedule.objects.create(task=task, every=1, overlap="skip")
    worker = start_worker()
    first = wait_for(lambda: Run.objects.filter(schedule=schedule, status="running").first(), 20)
    wait_for(lambda: worker.log().count("schedule skipped") >= 2, timeout=20)
    assert Run.objects.filter(schedule=schedule).count() == 1
    first.request("abort")
    # Once it ended, the next due time fires again.
    wait_for(lambda: Run.objects.filter(schedule=schedule).count() >= 2, timeout=20)
    for run in Run.objects.filter(schedule=schedule, status__in=ACTIVE_STATUSES):
        run.request("abort")


def test_overlap_queue_queues_behind_the_active_run(start_worker):
    task = define("slowq", [*child_script("numbered"), "--interval", "0.2"], max_concurrent=1)
    schedule = Schedule.objects.create(task=task, every=1, overlap="queue")
    worker = start_worker()
    wait_for(lambda: Run.objects.filter(schedule=schedule, status="running").exists(), 20)
    wait_for(lambda: Run.objects.filter(schedule=schedule, status="queued").count() >= 2, 20)
    assert Run.objects.filter(schedule=schedule, status="running").count() == 1  # max_concurrent
    assert "schedule skipped" not in worker.log()
    Schedule.objects.filter(pk=schedule.pk).update(enabled=False)
    for run in Run.objects.filter(schedule=schedule, status__in=ACTIVE_STATUSES):
        run.request("abort")
    wait_for(lambda: not Run.objects.filter(status__in=ACTIVE_STATUSES).exists(), 20)
    assert RunStatus.ABORTED in set(Run.objects.values_list("status", flat=True))
