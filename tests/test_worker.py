"""The supervisor end to end: a real `taskrunner worker` process, real children.

Runs are queued and controlled through the models (as the API and the command
line do) from this test process; the worker applies what is asked. Process
state is read with psutil; every wait has a deadline.
"""

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from django.utils import timezone

from taskrunner.models import FINAL_STATUSES, Run, RunStatus, Task, Worker
from tests.conftest import (
    ROOT,
    all_stopped,
    child_script,
    gone,
    none_stopped,
    processes_with_key,
    stored_events,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


STAMPED = re.compile(r"\w+ \d+ (\d+\.\d+)")


def define(name: str, argv: list[str], **fields) -> Task:
    fields.setdefault("grace", 2.0)
    fields.setdefault("max_concurrent", 4)
    return Task.objects.create(name=name, argv=argv, **fields)


def numbered(*args: str) -> list[str]:
    return [*child_script("numbered"), *args]


def fresh(run: Run) -> Run:
    return Run.objects.select_related("task").get(pk=run.pk)


def wait_status(run: Run, *statuses: str, timeout: float = 15.0) -> Run:
    return wait_for(lambda: (r := fresh(run)).status in statuses and r, timeout=timeout)


def wait_final(run: Run, timeout: float = 15.0) -> Run:
    return wait_status(run, *FINAL_STATUSES, timeout=timeout)


def events_of(run: Run, kind: str | None = None) -> list:
    """The run's events, in order, read through the event store."""
    return stored_events(run.pk, kind)


def log_lines(run: Run, prefix: str = "") -> list[str]:
    return [e.text for e in events_of(run, "log") if e.text.startswith(prefix)]


def numbers(run: Run, prefix: str = "line ") -> list[int]:
    return [int(line.split()[1]) for line in log_lines(run, prefix)]


def statuses_of(run: Run) -> list[str]:
    return [e.data["status"] for e in events_of(run, "status")]


def processes(run: Run) -> list[psutil.Process]:
    """Every live (non-zombie) process of the run, found by its key."""
    return processes_with_key(wait_for(lambda: fresh(run).process_key))


def stamps(run: Run) -> list[float]:
    """When each line of a `numbered --stamp` run was printed (every process's)."""
    return [float(m[1]) for line in log_lines(run) if (m := STAMPED.fullmatch(line))]


def worker_row(proc) -> Worker:
    return wait_for(lambda: Worker.objects.filter(pid=proc.pid).first())


def test_success_and_failure_are_recorded_with_exit_codes(worker):
    ok = define("ok", numbered("--count", "3")).start()
    bad = define("bad", numbered("--count", "1", "--exit-code", "3")).start()
    ok, bad = wait_final(ok), wait_final(bad)
    assert (ok.status, ok.exit_code, ok.error) == (RunStatus.SUCCEEDED, 0, "")
    assert log_lines(ok) == ["line 1", "line 2", "line 3"]
    assert statuses_of(ok) == ["queued", "running", "succeeded"]
    assert (bad.status, bad.exit_code) == (RunStatus.FAILED, 3)
    assert "exit code 3" in bad.error
    assert ok.started_at and ok.finished_at and ok.pid


def test_pause_stops_the_whole_tree_and_resume_loses_no_line(worker, personas):
    bob = personas["bob"]
    argv = numbered("--grandchild", "--setsid-descendant", "--stamp")
    run = define("tree", argv).start(user=bob)
    wait_for(lambda: log_lines(run, "escapee") and log_lines(run, "grand") and numbers(run))
    family = processes(run)
    assert len(family) == 3  # the child, its grandchild, and the setsid() escapee
    assert len({os.getpgid(p.pid) for p in family}) == 2

    fresh(run).request("pause", user=bob, via="api")
    wait_for(lambda: all_stopped(family), interval=0.005)
    stopped_at = time.time()
    assert wait_status(run, RunStatus.PAUSED).paused_at is not None
    # Every line carries the time it was printed: none may fall between the
    # moment every process was seen stopped and the resume (no window to watch).
    resumed_at = time.time()
    fresh(run).request("resume", user=bob, via="cli")
    wait_for(lambda: none_stopped(family))
    wait_status(run, RunStatus.RUNNING)
    before = len(numbers(run))
    wait_for(lambda: len(numbers(run)) > before + 5)

    fresh(run).request("abort", user=bob, via="page")
    run = wait_final(run)
    assert run.status == RunStatus.ABORTED
    assert numbers(run) == list(range(1, len(numbers(run)) + 1)), "a line lost or repeated"
    printed_while_paused = [t for t in stamps(run) if stopped_at < t < resumed_at]
    assert not printed_while_paused, "a process printed while the run was paused"
    assert [(a.action, a.by, a.via) for a in run.actions.all()] == [
        ("start", "bob", "api"),
        ("pause", "bob", "api"),
        ("resume", "bob", "cli"),
        ("abort", "bob", "page"),
    ]
    assert statuses_of(run) == ["queued", "running", "paused", "running", "aborted"]
    wait_for(lambda: not processes(run) and gone(family))


def test_abort_of_a_paused_run_ends_every_process(worker):
    run = define("paused", numbered("--grandchild", "--setsid-descendant")).start()
    wait_for(lambda: log_lines(run, "escapee") and log_lines(run, "grand"))
    family = processes(run)
    fresh(run).request("pause")
    wait_status(run, RunStatus.PAUSED)
    fresh(run).request("abort")
    run = wait_final(run)
    assert run.status == RunStatus.ABORTED
    assert run.exit_code == -signal.SIGTERM
    wait_for(lambda: gone(family))


def test_abort_of_a_queued_run_needs_no_worker(personas):
    run = define("never", numbered()).start(user=personas["bob"])
    fresh(run).request("abort", user=personas["alice"], via="cli")
    run = fresh(run)
    assert run.status == RunStatus.ABORTED and run.started_at is None
    assert statuses_of(run) == ["queued", "aborted"]
    assert run.actions.get(action="abort").by == "alice"


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(worker):
    run = define("stubborn", child_script("ignore_term"), grace=1.0).start()
    wait_for(lambda: log_lines(run, "ready"))
    leader = psutil.Process(fresh(run).pid)
    asked = time.monotonic()
    fresh(run).request("abort")
    wait_for(lambda: log_lines(run, "got SIGTERM"))
    assert leader.is_running()
    run = wait_final(run)
    assert time.monotonic() - asked >= 1.0
    assert (run.status, run.exit_code) == (RunStatus.ABORTED, -signal.SIGKILL)
    wait_for(lambda: gone([leader]))


def test_timeout_counts_running_time_only(worker):
    quick = define("quick", numbered(), timeout=0.5).start()
    assert wait_final(quick).status == RunStatus.TIMED_OUT
    assert "Timed out" in fresh(quick).error

    timeout = 1.0
    run = define("patient", numbered("--interval", "0.05"), timeout=timeout).start()
    wait_status(run, RunStatus.RUNNING)
    fresh(run).request("pause")
    paused_at = wait_status(run, RunStatus.PAUSED).paused_at
    # Paused for longer than the whole timeout (a condition on the clock the
    # worker uses): if paused time counted, the run would time out on resume.
    wait_for(lambda: (timezone.now() - paused_at).total_seconds() > timeout + 0.5)
    fresh(run).request("resume")
    assert wait_status(run, RunStatus.RUNNING, *FINAL_STATUSES).status == RunStatus.RUNNING
    run = wait_final(run)
    assert run.status == RunStatus.TIMED_OUT
    assert run.paused_seconds > timeout + 0.5
    assert run.duration - run.paused_seconds >= timeout


def test_max_concurrent_keeps_the_second_run_queued(worker):
    task = define("single", numbered("--count", "15", "--interval", "0.05"), max_concurrent=1)
    first, second = task.start(), task.start()
    wait_status(first, RunStatus.RUNNING)

    def first_done() -> bool:
        # One query: a consistent view of both runs, checked at every poll.
        status = dict(Run.objects.filter(pk__in=[first.pk, second.pk]).values_list("pk", "status"))
        if status[first.pk] == RunStatus.RUNNING:
            assert status[second.pk] == RunStatus.QUEUED
            return False
        return True

    wait_for(first_done, interval=0.05)
    assert wait_final(first).status == RunStatus.SUCCEEDED
    assert wait_final(second).status == RunStatus.SUCCEEDED
    assert fresh(second).started_at >= fresh(first).finished_at


def test_two_workers_never_run_the_same_run(start_worker):
    task = define("many", numbered("--count", "1", "--interval", "0"), max_concurrent=20)
    runs = [task.start() for _ in range(16)]
    workers = [start_worker("--concurrency", "4"), start_worker("--concurrency", "4")]
    for run in runs:
        assert wait_final(run, timeout=60).status == RunStatus.SUCCEEDED
    ids = {worker_row(proc).pk for proc in workers}
    for run in runs:
        assert statuses_of(run).count("running") == 1
        assert log_lines(run) == ["line 1"]
        assert fresh(run).worker_id in ids


def test_a_second_worker_claims_what_a_busy_worker_cannot(start_worker):
    """The first worker (concurrency 1) is busy: the queued run must be the second's."""
    busy = start_worker("--concurrency", "1")
    long = define("long", numbered()).start()
    wait_status(long, RunStatus.RUNNING)
    queued = define("short", numbered("--count", "1")).start()
    second = start_worker("--concurrency", "1")
    assert wait_final(queued).status == RunStatus.SUCCEEDED
    assert fresh(long).worker_id == worker_row(busy).pk
    assert fresh(queued).worker_id == worker_row(second).pk
    assert statuses_of(queued) == ["queued", "running", "succeeded"]
    fresh(long).request("abort")
    wait_final(long)


def test_max_concurrent_holds_across_two_workers(start_worker):
    task = define("one-at-a-time", numbered("--count", "10", "--interval", "0.05"))
    task.max_concurrent = 1
    task.save()
    runs = [task.start() for _ in range(3)]
    workers = [start_worker("--concurrency", "4"), start_worker("--concurrency", "4")]

    def all_final() -> bool:
        live = Run.objects.filter(task=task, status__in=[RunStatus.RUNNING, RunStatus.PAUSED])
        assert live.count() <= 1  # checked at every poll
        return all(fresh(run).status in FINAL_STATUSES for run in runs)

    wait_for(all_final, timeout=60, interval=0.01)
    runs = sorted((fresh(run) for run in runs), key=lambda run: run.started_at)
    assert all(run.status == RunStatus.SUCCEEDED for run in runs)
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.started_at >= earlier.finished_at, "two runs of the task overlapped"
    assert {worker_row(proc).pk for proc in workers} >= {run.worker_id for run in runs}


def test_killed_worker_leaves_lost_runs_and_no_process(start_worker):
    """The next worker on the same host ends them at once, not after the dead-after time."""
    first = start_worker()
    task = define("orphans", numbered("--grandchild", "--setsid-descendant"))
    running, paused = task.start(), task.start()
    for run in (running, paused):
        wait_for(lambda run=run: len(processes(run)) == 3)
    fresh(paused).request("pause")
    wait_status(paused, RunStatus.PAUSED)
    family = processes(running) + processes(paused)

    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    # 120 s without a heartbeat would be needed to call it dead the slow way;
    # the test waits 30 s at most, so only the same-host check can pass it.
    start_worker(env={"TASKRUNNER_WORKER_DEAD_AFTER": "120"})
    for run in (running, paused):
        run = wait_final(run, timeout=30)
        assert run.status == RunStatus.LOST
        assert "died" in run.error
    wait_for(lambda: gone(family))
    assert not processes(running) and not processes(paused)


def test_a_dead_workers_leftovers_are_identified_before_they_are_killed(start_worker, tmp_path):
    """A recorded pid now held by a stranger (pid reuse) is left alone; the run's own
    processes, found by pid and create time or by the run's key, are killed."""
    first = start_worker()
    run = define("leftover", numbered("--grandchild", "--setsid-descendant")).start()
    wait_for(lambda: len(processes(run)) == 3)
    family = processes(run)
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)

    # A process that is not the run's, given the run's recorded pid (as if the
    # pid were reused): same pid, another create time, no key.
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        stranger_proc = psutil.Process(stranger.pid)
        Run.objects.filter(pk=run.pk).update(
            pid=stranger.pid,
            pgid=stranger.pid,
            pid_create_time=stranger_proc.create_time() - 5.0,
        )
        start_worker(env={"TASKRUNNER_WORKER_DEAD_AFTER": "120"})
        assert wait_final(run, timeout=30).status == RunStatus.LOST
        wait_for(lambda: gone(family))  # found by the key, and killed
        assert stranger_proc.is_running() and stranger_proc.status() != psutil.STATUS_ZOMBIE
    finally:
        stranger.kill()
        stranger.wait(10)


def test_a_second_sigterm_kills_the_children_at_once(start_worker):
    worker = start_worker()
    run = define("stubborn", child_script("ignore_term"), grace=600).start()
    wait_for(lambda: log_lines(run, "ready"))
    family = processes(run)
    worker.signal(signal.SIGTERM)
    wait_for(lambda: log_lines(run, "got SIGTERM"))
    assert all(proc.is_running() for proc in family)  # the grace period (600 s) runs
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0  # far less than the grace period
    run = fresh(run)
    assert (run.status, run.exit_code) == (RunStatus.ABORTED, -signal.SIGKILL)
    assert gone(family)


def test_sigterm_stops_the_worker_and_records_every_run(start_worker):
    worker = start_worker()
    task = define("graceful", numbered("--grandchild", "--setsid-descendant"), grace=1.0)
    running, paused = task.start(), task.start()
    for run in (running, paused):
        wait_for(lambda run=run: len(processes(run)) == 3)
    fresh(paused).request("pause")
    wait_status(paused, RunStatus.PAUSED)
    family = processes(running) + processes(paused)

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    for run in (running, paused):
        run = fresh(run)
        assert run.status == RunStatus.ABORTED
        assert "worker stopped (SIGTERM)" in run.error
    assert gone(family)


def test_messy_output_is_stored_whole_and_in_order_with_flat_memory(worker):
    worker_proc = psutil.Process(worker.pid)
    warm = define("warm-up", numbered("--count", "1")).start()
    wait_final(warm)  # the worker has imported and connected everything it needs
    rss_before = worker_proc.memory_info().rss
    run = define("messy", [*child_script("messy_output"), "200000"]).start()
    run = wait_final(run, timeout=120)
    assert run.status == RunStatus.SUCCEEDED, run.error
    lines = log_lines(run)
    assert lines[:4] == [
        "bad utf-8: \ufffd\ufffd end",
        "nul: a\ufffdb",
        "split char: é ok",
        "progress 100%",
    ]
    assert [e.data for e in events_of(run, "message")] == [
        {"name": "nul", "data": {"v": "a\ufffdb"}}
    ]
    pieces = [e for e in events_of(run, "log") if e.text.startswith("xxx")]
    assert sum(len(p.text) for p in pieces) == 5 * 1024 * 1024
    assert [bool(p.data) for p in pieces] == [True] * (len(pieces) - 1) + [False]
    counted = [line for line in lines if line.startswith("n ")]
    assert counted == [f"n {i}" for i in range(1, 200_001)]
    assert lines[-1] == "last line without newline"
    assert worker_proc.is_running()
    # A 5 MB line and 200,000 lines went through; the worker did not keep them.
    growth = worker_proc.memory_info().rss - rss_before
    print(f"worker RSS growth {growth / 2**20:.1f} MiB")
    assert growth < 50 * 1024 * 1024


def test_protocol_lines_and_standard_input(worker):
    task = define(
        "talker",
        [*child_script("talker")],
        env={"PYTHONPATH": str(ROOT)},
        params=[{"name": "who", "default": "world"}],
    )
    task.full_clean()
    task.save()
    run = task.start({"who": "bob"})
    wait_for(lambda: log_lines(run, "waiting for input"))
    fresh(run).request("input", data="hello there")
    wait_for(lambda: log_lines(run, "echo hello there"))
    fresh(run).request("input", data="done")
    run = wait_final(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == {"answer": 42, "params": {"who": "bob"}}
    assert run.progress == {"current": 0.75, "total": None, "fraction": 0.75, "message": ""}
    kinds = [e.kind for e in events_of(run) if e.kind != "status"]
    assert kinds[:2] == ["progress", "message"]
    (message,) = events_of(run, "message")
    assert message.data == {"name": "hello", "data": {"n": 1}}
    assert log_lines(run, "::") == ["::progress not-a-number", "::unknown thing"]
    assert log_lines(run, "params") == ["params {'who': 'bob'}"]
    assert [a.action for a in run.actions.all()] == ["start", "input", "input"]


def test_a_command_that_cannot_start_fails_with_the_reason(worker):
    run = define("missing", ["/nonexistent/program"]).start()
    run = wait_final(run)
    assert run.status == RunStatus.FAILED
    assert "Could not start" in run.error and "/nonexistent/program" in run.error


def test_children_get_the_contract_environment(worker):
    code = (
        "import os, json; print(os.environ['TASKRUNNER_RUN_ID'], "
        "os.environ['TASKRUNNER_PARAMS'], os.environ['PYTHONUNBUFFERED'], os.environ['EXTRA'])"
    )
    task = define(
        "env",
        [sys.executable, "-c", code],
        env={"EXTRA": "yes"},
        params=[{"name": "n", "type": "int", "default": 2}],
    )
    task.full_clean()
    task.save()
    run = wait_final(task.start())
    assert log_lines(run) == [f'{run.pk} {{"n": 2}} 1 yes']
