"""Retries and delayed runs with real workers and children."""

import signal
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from taskrunner.models import FINAL_STATUSES, Run, Task
from taskrunner.retries import retry_delay
from tests.conftest import child_script, gone, processes_with_key, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

FAIL = [sys.executable, "-c", "import sys; sys.exit(3)"]
QUICK = [sys.executable, "-c", "pass"]


def define(name: str, argv: list[str], **fields) -> Task:
    fields.setdefault("grace", 1.0)
    fields.setdefault("max_concurrent", 4)
    return Task.objects.create(name=name, argv=argv, **fields)


def final(run_id: int, timeout: float = 20) -> Run:
    return wait_for(
        lambda: (r := Run.objects.get(pk=run_id)).status in FINAL_STATUSES and r, timeout
    )


def test_retry_delay_doubles_caps_and_adds_at_most_ten_percent():
    assert retry_delay(10, 1, rand=0) == 10
    assert retry_delay(10, 3, rand=0) == 40
    assert retry_delay(10, 3, rand=1) == pytest.approx(44)
    assert retry_delay(10, 20, rand=0) == 3600
    assert retry_delay(0.2, 2, rand=0.5) == pytest.approx(0.42)


def test_a_failing_task_with_two_retries_runs_three_times_linked_both_ways(start_worker):
    task = define("flaky", FAIL, retries=2, retry_delay=0.3)
    first = task.start()
    start_worker()
    chain = [final(first.pk)]
    while chain[-1].retried_by_id:
        chain.append(final(chain[-1].retried_by_id))
    wait_for(lambda: Run.objects.count() == 3, 5)
    assert [r.attempt for r in chain] == [1, 2, 3]
    assert [r.status for r in chain] == ["failed"] * 3
    assert chain[-1].retried_by_id is None
    for before, after in zip(chain, chain[1:], strict=False):
        assert after.retry_of_id == before.pk and before.retried_by_id == after.pk
        assert after.actions.get().via == "retry"
        assert after.started_at >= after.run_after
    delays = [
        (b.run_after - a.finished_at).total_seconds()
        for a, b in zip(chain, chain[1:], strict=False)
    ]
    assert 0.3 <= delays[0] <= 0.3 * 1.1 + 0.05
    assert 0.6 <= delays[1] <= 0.6 * 1.1 + 0.05
    assert Run.objects.count() == 3


def test_an_aborted_run_is_not_retried(start_worker):
    task = define("aborted", [*child_script("numbered"), "--interval", "0.1"], retries=3)
    run = task.start()
    start_worker()
    wait_for(lambda: Run.objects.get(pk=run.pk).status == "running", 15)
    run.request("abort")
    run = final(run.pk)
    assert run.status == "aborted" and run.retried_by_id is None
    assert Run.objects.count() == 1


def test_a_lost_run_is_retried_by_the_next_worker(start_worker, tmp_path):
    flag = tmp_path / "second-attempt"
    script = (
        "import os, sys, time\n"
        f"if os.path.exists({str(flag)!r}): sys.exit(0)\n"
        "while True: time.sleep(0.1)\n"
    )
    task = define("crawler", [sys.executable, "-c", script], retries=1, retry_delay=0.2)
    run = task.start()
    first = start_worker()
    running = wait_for(lambda: (r := Run.objects.get(pk=run.pk)).pid and r, 15)
    first.signal(signal.SIGKILL)
    first.wait(10)
    flag.write_text("")
    start_worker()  # same host: the dead worker's runs are lost at once, then retried
    lost = final(run.pk)
    assert lost.status == "lost" and lost.retried_by_id
    successor = final(lost.retried_by_id)
    assert (successor.status, successor.attempt, successor.retry_of_id) == ("succeeded", 2, run.pk)
    wait_for(lambda: gone(processes_with_key(running.process_key)), 10)


def test_run_after_holds_a_run_queued_until_then(start_worker):
    task = define("later", QUICK)
    start_worker()
    when = timezone.now() + timedelta(seconds=2)
    run = task.start(run_after=when)
    held = task.start(run_after=timezone.now() + timedelta(hours=1))
    now_run = task.start()
    assert final(now_run.pk).status == "succeeded"  # the worker claims meanwhile
    done = final(run.pk)
    assert done.status == "succeeded" and done.started_at >= when
    assert Run.objects.get(pk=held.pk).status == "queued"
    held.request("abort")
    held = Run.objects.get(pk=held.pk)
    assert held.status == "aborted" and held.started_at is None and held.pid is None


def test_no_process_starts_for_a_delayed_run_aborted_meanwhile(start_worker):
    task = define("never", QUICK)
    start_worker()
    run = task.start(run_after=timezone.now() + timedelta(seconds=1.5))
    run.request("abort")
    other = task.start(run_after=timezone.now() + timedelta(seconds=2))
    assert final(other.pk).status == "succeeded"  # past the aborted run's time
    run = Run.objects.get(pk=run.pk)
    assert (run.status, run.started_at, run.pid) == ("aborted", None, None)
