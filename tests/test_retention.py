"""Retention: `taskrunner prune` by age and count, and the per-run log cap, with real processes."""

import logging
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from taskrunner import retention
from taskrunner.events.store import append_events
from taskrunner.models import EventChunk, Run, RunAction, Schedule, Task
from taskrunner.retention import BatchSize, prune, runs_pruned
from tests.conftest import ROOT, child_script, stored_events, subprocess_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "taskrunner", *args],
        cwd=ROOT,
        env=subprocess_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def finished_run(task: Task, days_ago: float, status: str = "succeeded") -> Run:
    when = timezone.now() - timedelta(days=days_ago)
    run = task.start()
    append_events(run.pk, [("log", "stdout", f"line of run {run.pk}", None)] * 3)
    Run.objects.filter(pk=run.pk).update(status=status, finished_at=when, started_at=when)
    return run


def test_prune_removes_exactly_the_runs_past_the_rules(transactional_db):
    default = Task.objects.create(name="default-rules", argv=["true"])  # 30 days, 1000 runs
    few = Task.objects.create(name="keep-two", argv=["true"], keep_runs=2)
    short = Task.objects.create(name="keep-a-day", argv=["true"], keep_days=1)
    old_default = finished_run(default, 31)
    young_default = finished_run(default, 29)
    few_runs = [finished_run(few, d) for d in (4, 3, 2, 1)]  # the two newest stay
    old_short = finished_run(short, 2, status="failed")
    young_short = finished_run(short, 0.5)
    active_old = short.start()  # queued, created long ago: never pruned
    Run.objects.filter(pk=active_old.pk).update(created_at=timezone.now() - timedelta(days=90))
    doomed = {old_default.pk, few_runs[0].pk, few_runs[1].pk, old_short.pk}
    everything = set(Run.objects.values_list("pk", flat=True))

    dry = manage("prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("Would remove 4 run(s), ")
    assert set(Run.objects.values_list("pk", flat=True)) == everything

    done = manage("prune")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Removed 4 run(s), ")
    log_bytes = int(done.stdout.split(", ")[1].split()[0])
    assert log_bytes > 0
    left = set(Run.objects.values_list("pk", flat=True))
    assert left == everything - doomed
    assert {young_default.pk, young_short.pk, active_old.pk} <= left
    assert not EventChunk.objects.filter(run_id__in=doomed).exists()
    assert not RunAction.objects.filter(run_id__in=doomed).exists()
    assert EventChunk.objects.filter(run_id=young_default.pk).exists()
    again = manage("prune")
    assert again.stdout.startswith("Removed 0 run(s), ")


def test_runs_pruned_signal_gets_the_ids_and_its_bytes_are_counted(transactional_db):
    task = Task.objects.create(name="arts", argv=["true"], keep_runs=0)
    runs = [finished_run(task, 1) for _ in range(3)]
    seen = []

    def receiver(sender, run_ids, dry_run, **kwargs):
        seen.append((sorted(run_ids), dry_run))
        return 1000 * len(run_ids)

    runs_pruned.connect(receiver)
    try:
        assert prune(dry_run=True).other_bytes == 3000
        assert Run.objects.count() == 3
        result = prune()
    finally:
        runs_pruned.disconnect(receiver)
    assert (result.runs, result.other_bytes) == (3, 3000)
    assert seen == [(sorted(r.pk for r in runs), True), (sorted(r.pk for r in runs), False)]


def test_workers_prune_in_the_background(start_worker):
    task = Task.objects.create(name="bg", argv=["true"], keep_days=1)
    old = [finished_run(task, 3) for _ in range(5)]
    young = finished_run(task, 0.1)
    start_worker(env={"TASKRUNNER_PRUNE_SECONDS": "0.2"})
    wait_for(lambda: not Run.objects.filter(pk__in=[r.pk for r in old]).exists(), 20)
    assert Run.objects.filter(pk=young.pk).exists()


def test_a_prune_clears_every_reference_to_the_runs_it_removes(transactional_db):
    task = Task.objects.create(name="linked", argv=["true"], keep_days=1)
    first = finished_run(task, 3, status="failed")
    second = finished_run(task, 2, status="failed")  # the first's retry: as old
    third = finished_run(task, 0.1)  # the second's retry, young: kept
    Run.objects.filter(pk=first.pk).update(retried_by=second)
    Run.objects.filter(pk=second.pk).update(retry_of=first, retried_by=third)
    Run.objects.filter(pk=third.pk).update(retry_of=second)
    schedule = Schedule.objects.create(task=task, every=3600)
    Schedule.objects.filter(pk=schedule.pk).update(last_run=second)
    gone = [first.pk, second.pk]

    done = prune()

    assert done.runs == 2 and done.log_bytes > 0
    assert set(Run.objects.values_list("pk", flat=True)) == {third.pk}
    assert Run.objects.get(pk=third.pk).retry_of_id is None
    assert Schedule.objects.get(pk=schedule.pk).last_run_id is None
    assert not RunAction.objects.filter(run_id__in=gone).exists()
    assert not EventChunk.objects.filter(run_id__in=gone).exists()
    assert EventChunk.objects.filter(run_id=third.pk).exists()


def test_a_large_prune_goes_in_several_short_transactions(transactional_db, caplog):
    task = Task.objects.create(name="many", argv=["true"], keep_days=1)
    when = timezone.now() - timedelta(days=2)
    runs = Run.objects.bulk_create(
        [Run(task=task, status="succeeded", finished_at=when) for _ in range(250)]
    )
    live = task.start()  # queued: never pruned, however old
    Run.objects.filter(pk=live.pk).update(created_at=when)
    with caplog.at_level(logging.INFO, logger="taskrunner.retention"):
        done = prune()
    assert done.runs == 250
    assert list(Run.objects.values_list("pk", flat=True)) == [live.pk]
    (line,) = [r.getMessage() for r in caplog.records if "runs pruned" in r.getMessage()]
    batches = int(line.rsplit("batches=", 1)[1])
    assert batches >= 250 // retention.FIRST_BATCH_RUNS // 4  # it starts small
    assert not Run.objects.filter(pk__in=[r.pk for r in runs]).exists()


def test_the_batch_size_follows_how_long_a_batch_held_the_database():
    size = BatchSize()
    assert size.runs == retention.FIRST_BATCH_RUNS
    for _ in range(20):
        size.took(size.runs, retention.BATCH_SECONDS * 3)
    assert size.runs == retention.MIN_BATCH_RUNS  # halved down to the floor
    size.took(size.runs, 0.0)
    assert size.runs == retention.MIN_BATCH_RUNS * 3 // 2
    before = size.runs
    size.took(3, 0.0)  # a short last batch says nothing about a full one
    assert size.runs == before
    for _ in range(40):
        size.took(size.runs, 0.0)
    assert size.runs == retention.BATCH_RUNS  # grown up to the ceiling
    size.took(size.runs, retention.BATCH_SECONDS * 0.8)  # within the budget: stays
    assert size.runs == retention.BATCH_RUNS


def test_a_dry_run_never_takes_the_sqlite_write_lock(transactional_db):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's one write lock; PostgreSQL has none to take")
    import sqlite3

    task = Task.objects.create(name="dry", argv=["true"], keep_days=1)
    finished_run(task, 3)
    holder = sqlite3.connect(connection.settings_dict["NAME"], timeout=1)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        assert prune(dry_run=True).runs == 1  # would wait, then fail "database is locked"
    finally:
        holder.rollback()
        holder.close()
    assert Run.objects.filter(task=task).count() == 1


def test_a_worker_stopped_in_the_middle_of_a_background_prune_stops(start_worker):
    task = Task.objects.create(name="backlog", argv=["true"], keep_days=1)
    when = timezone.now() - timedelta(days=2)
    Run.objects.bulk_create(
        [Run(task=task, status="succeeded", finished_at=when) for _ in range(3000)]
    )
    worker = start_worker(env={"TASKRUNNER_PRUNE_SECONDS": "0.2"})
    wait_for(lambda: Run.objects.filter(task=task).count() < 3000, 30)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "worker stopped" in worker.log()


def test_prune_refuses_bad_options_in_one_line(transactional_db):
    bad = manage("prune", "--now")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1


def test_a_run_past_the_log_cap_keeps_its_newest_lines(start_worker):
    task = Task.objects.create(
        name="chatty",
        argv=[*child_script("numbered"), "--count", "3000", "--interval", "0"],
        grace=1.0,
    )
    run = task.start()
    start_worker(env={"TASKRUNNER_MAX_LOG_BYTES": "20000"})
    wait_for(lambda: Run.objects.get(pk=run.pk).status == "succeeded", 30)
    lines = [e.text for e in stored_events(run.pk, "log")]
    assert lines[-1] == "line 3000"
    numbers = [int(text.split()[1]) for text in lines]
    assert numbers == list(range(numbers[0], 3001))  # the newest, consecutive
    assert numbers[0] > 1
    stored = sum(
        EventChunk.objects.filter(run_id=run.pk, kind="log").values_list("size", flat=True)
    )
    assert stored <= 20000 + 256 * 1024  # bounded: at most the cap plus one open chunk
    run = Run.objects.get(pk=run.pk)
    assert run.log_pruned_lines == numbers[0] - 1
    assert run.log_pruned_before == stored_events(run.pk, "log")[0].seq
