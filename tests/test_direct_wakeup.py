"""A control request reaches the worker through the direct wake-up, and without it.

SQLite: the worker binds a datagram socket in TASKRUNNER_WAKE_DIR, poked by
the process that records a request once it has committed. PostgreSQL: NOTIFY.
With the database polled only every 60 s (TASKRUNNER_WAKE_FALLBACK_SECONDS), a
pause applied within the 20 s wait can only have come through the direct
path. And with the directory unusable, the fallback polling alone still
brings it, also once the worker has backed its polling off while idle. No
timing is measured: only whether, and in which order.
"""

import signal
from pathlib import Path

import psutil
import pytest
from django.db import connection

from taskrunner.models import ActionKind, Run, RunAction, RunStatus, Task
from taskrunner.wakesocket import SUFFIX
from tests.conftest import all_stopped, child_script, processes_with_key, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def long_task() -> Task:
    return Task.objects.create(
        name="ticker", argv=[*child_script("numbered"), "--count", "100000"], grace=2.0
    )


def fresh(run: Run) -> Run:
    return Run.objects.get(pk=run.pk)


def running(run: Run) -> list[psutil.Process]:
    key = wait_for(lambda: fresh(run).process_key, timeout=30)
    return wait_for(lambda: processes_with_key(key), timeout=30)


def pause_and_see_it_applied(run: Run) -> None:
    family = running(run)
    assert family
    action = fresh(run).request(ActionKind.PAUSE)
    # Signalled first, then recorded: the tree is stopped and the action applied.
    wait_for(lambda: all_stopped(family), timeout=20, interval=0.01)
    applied = wait_for(lambda: RunAction.objects.get(pk=action.pk).outcome, timeout=20)
    assert applied == "paused"
    assert wait_for(lambda: fresh(run).status == RunStatus.PAUSED, timeout=20)
    for proc in family:
        proc.send_signal(signal.SIGCONT)  # so teardown's SIGTERM is handled


def test_a_pause_arrives_through_the_direct_wakeup_not_the_polling(
    start_worker, settings, tmp_path
):
    wake_dir = tmp_path / "wake"
    settings.TASKRUNNER_WAKE_DIR = str(wake_dir)
    worker = start_worker(
        env={"TASKRUNNER_WAKE_DIR": str(wake_dir), "TASKRUNNER_WAKE_FALLBACK_SECONDS": "60"}
    )
    if connection.vendor == "sqlite":
        socket_path = wait_for(lambda: next(wake_dir.glob(f"*{SUFFIX}"), None), timeout=30)
        assert socket_path.name == f"worker-{worker.pid}{SUFFIX}"
        assert wake_dir.stat().st_mode & 0o777 == 0o700
    run = long_task().start()
    pause_and_see_it_applied(run)
    if connection.vendor == "sqlite":
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
        assert not list(wake_dir.glob(f"*{SUFFIX}")), "a stopped worker leaves no socket"


def test_the_polling_alone_still_works_when_the_directory_is_unusable(
    start_worker, settings, tmp_path
):
    if connection.vendor != "sqlite":
        pytest.skip("the wake directory is SQLite's direct path; PostgreSQL uses NOTIFY")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    wake_dir = blocker / "wake"  # cannot be created: its parent is a file
    settings.TASKRUNNER_WAKE_DIR = str(wake_dir)
    worker = start_worker(
        env={"TASKRUNNER_WAKE_DIR": str(wake_dir), "TASKRUNNER_WAKE_FALLBACK_SECONDS": "60"}
    )
    run = long_task().start()
    wait_for(lambda: "no direct wake-up" in worker.log(), timeout=30)
    pause_and_see_it_applied(run)


def test_a_control_after_an_idle_spell_is_applied_and_the_polling_is_back(
    start_worker, settings, tmp_path
):
    """With no run the worker's polling backs off (logged at DEBUG once it is as slow as
    TASKRUNNER_WAKE_IDLE_SECONDS); a wake-up or a run started brings it back."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    wake_dir = blocker / "wake"  # SQLite: no socket, polling alone (PostgreSQL: NOTIFY)
    settings.TASKRUNNER_WAKE_DIR = str(wake_dir)
    worker = start_worker(
        env={
            "TASKRUNNER_WAKE_DIR": str(wake_dir),
            "TASKRUNNER_WAKE_IDLE_SECONDS": "2",
            "LOG_LEVEL": "DEBUG",
        }
    )
    wait_for(lambda: "idle: polling every" in worker.log(), timeout=30)
    run = long_task().start()
    pause_and_see_it_applied(run)
    # Back to its first pace: the run started (or, first, its wake-up arrived).
    after = worker.log().split("idle: polling every", 1)[1]
    assert "active: polling every" in after or "woken: polling every" in after


def test_a_socket_left_by_a_dead_worker_is_removed_by_the_sender(tmp_path):
    import socket

    from taskrunner.wakesocket import send_wake

    wake_dir = tmp_path / "wake"
    wake_dir.mkdir(mode=0o700)
    stale = wake_dir / f"worker-1{SUFFIX}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(stale))  # closed at once: nobody reads it any more
    live = wake_dir / f"worker-2{SUFFIX}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reader:
        reader.bind(str(live))
        assert send_wake("control:1", Path(wake_dir)) == 1
        assert reader.recv(1024) == b"control:1"
    assert not stale.exists()


def test_a_django_task_enqueued_wakes_the_workers(settings, tmp_path):
    """`enqueue` sends the same wake-up as a started task (SQLite's direct path):
    without it a worker idling with its polling backed off noticed the run late."""
    import socket

    from taskrunner.wakesocket import MAX_PAYLOAD
    from tests.djangotasks import add

    if connection.vendor != "sqlite":
        pytest.skip("the wake directory is SQLite's direct path; PostgreSQL uses NOTIFY")
    wake_dir = tmp_path / "wake"
    wake_dir.mkdir(mode=0o700)
    settings.TASKRUNNER_WAKE_DIR = str(wake_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(wake_dir / f"worker-test{SUFFIX}"))
        sock.settimeout(10)
        result = add.enqueue(2, 3)
        assert sock.recv(MAX_PAYLOAD).decode() == f"run:{result.id}"
