"""The command line of runs that start themselves: schedule, prune, start --at/--in, define."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from taskrunner.models import Run, Schedule, Task
from tests.conftest import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "taskrunner", *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_schedule_verbs():
    Task.objects.create(
        name="nightly", argv=["true"], params=[{"name": "suite", "default": "core"}]
    )
    added = manage("schedule", "add", "nightly", "--cron", "@daily", "--timezone", "Europe/Paris")
    assert added.returncode == 0, added.stderr
    first = int(added.stdout.splitlines()[0])
    schedule = Schedule.objects.get(pk=first)
    assert (schedule.cron, schedule.timezone, schedule.params) == (
        "0 0 * * *",
        "Europe/Paris",
        {"suite": "core"},
    )
    every = manage("schedule", "add", "nightly", "--every", "90", "--param", "suite=all")
    second = int(every.stdout.splitlines()[0])
    listing = manage("schedule", "list", "--task", "nightly")
    assert listing.returncode == 0
    assert "0 0 * * *" in listing.stdout and "every 90 s" in listing.stdout
    assert manage("schedule", "disable", str(second)).returncode == 0
    assert Schedule.objects.get(pk=second).next_run_at is None
    assert manage("schedule", "enable", str(second)).returncode == 0
    assert Schedule.objects.get(pk=second).next_run_at > timezone.now()
    assert manage("schedule", "remove", str(first)).returncode == 0
    assert list(Schedule.objects.values_list("pk", flat=True)) == [second]
    one_line_error(manage("schedule", "add", "nightly", "--cron", "61 * * * *"), "cron")
    one_line_error(manage("schedule", "add", "nightly", "--every", "0.5"), "every")
    one_line_error(
        manage("schedule", "add", "nightly", "--every", "5", "--timezone", "X/Y"), "zone"
    )
    one_line_error(
        manage("schedule", "add", "nightly", "--every", "5", "--param", "nope=1"), "nope"
    )
    one_line_error(manage("schedule", "add", "nobody", "--every", "5"), "nobody")
    one_line_error(manage("schedule", "remove", "999"), "999")
    assert Schedule.objects.count() == 1


def test_start_later_and_define_retries_and_retention():
    made = manage(
        "define", "later", "--retries", "2", "--retry-delay", "0.2", "--keep-days", "3",
        "--keep-runs", "50", "--", "true",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    task = Task.objects.get(name="later")
    assert (task.retries, task.retry_delay, task.keep_days, task.keep_runs) == (2, 0.2, 3, 50)
    at = manage("start", "later", "--at", "2099-06-01T12:00:00+02:00")
    assert at.returncode == 0, at.stderr
    run = Run.objects.get(pk=int(at.stdout.splitlines()[0]))
    assert run.run_after.isoformat() == "2099-06-01T10:00:00+00:00"
    before = timezone.now()
    soon = manage("start", "later", "--in", "30")
    run = Run.objects.get(pk=int(soon.stdout.splitlines()[0]))
    assert before + timedelta(seconds=29) < run.run_after < timezone.now() + timedelta(seconds=31)
    one_line_error(manage("start", "later", "--at", "2099-06-01T12:00:00"), "offset")
    one_line_error(manage("start", "later", "--in", "soon"), "--in")
    one_line_error(manage("define", "later", "--retries", "-1"), "--retries")
    one_line_error(manage("define", "later", "--retry-delay", "x"), "--retry-delay")
    assert manage("define", "later", "--keep-days", "none").returncode == 0
    assert Task.objects.get(name="later").keep_days is None
