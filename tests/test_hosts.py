"""Host identity on one machine: TASKRUNNER_HOST, runs that say where they ran,
workers that never signal another host's pids, and leftovers killed on return.

The same rules are proven across real namespaces in tests/hosts/ (PostgreSQL
only); these run on both databases, with hosts told apart by TASKRUNNER_HOST.
"""

import signal
import sys

import psutil
import pytest
from django.db import connection
from django.utils import timezone

from taskrunner.checks import check_sqlite_single_host
from taskrunner.models import Run, RunStatus, Worker
from taskrunner.serializers import run_json
from tests.conftest import gone, wait_for
from tests.test_worker import define, fresh, numbered, processes, wait_final, wait_status

pytestmark = pytest.mark.django_db(transaction=True)

# Silent after start, so a dead worker's closed pipe does not end it: a child and
# a grandchild that only sleep.
QUIET = [
    sys.executable, "-c",
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    "print('ready', flush=True); time.sleep(600)",
]  # fmt: skip
FAST = {"TASKRUNNER_HEARTBEAT_SECONDS": "0.2", "TASKRUNNER_WORKER_DEAD_AFTER": "1"}


def test_a_run_records_the_host_of_its_worker(start_worker):
    run = define("where", numbered("--interval", "0.2")).start()
    assert run_json(fresh(run))["host"] is None  # queued: nowhere yet
    start_worker(env={"TASKRUNNER_HOST": "host-a"})
    run = wait_status(run, RunStatus.RUNNING)
    assert run_json(run)["host"] == "host-a"
    assert list(Worker.objects.values_list("hostname", flat=True)) == ["host-a"]
    fresh(run).request("abort")
    assert run_json(wait_final(run))["host"] == "host-a"  # where it ran


def test_another_host_marks_a_dead_hosts_runs_lost_without_touching_its_processes(
    start_worker,
):
    first = start_worker(env={"TASKRUNNER_HOST": "host-a"})
    run = define("stranded", QUIET).start()
    wait_for(lambda: len(processes(run)) == 2)
    family = processes(run)
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)

    # Host b sees host a silent and marks its run lost; the pids it sees in the
    # database are host a's, so it must not signal them.
    start_worker(env={"TASKRUNNER_HOST": "host-b", **FAST})
    run = wait_final(run, timeout=30)
    assert run.status == RunStatus.LOST
    assert "on host-a" in run.error
    assert all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)

    # Host a comes back: its new worker kills what is left, found by pid and key.
    start_worker(env={"TASKRUNNER_HOST": "host-a", "TASKRUNNER_WORKER_DEAD_AFTER": "120"})
    wait_for(lambda: gone(family), timeout=30)
    assert fresh(run).status == RunStatus.LOST


def test_a_worker_leaves_the_lost_runs_of_a_live_worker_of_its_host_alone(start_worker):
    """Leftovers are only those of a host with no live worker: a sibling's runs are its own."""
    sibling = start_worker(env={"TASKRUNNER_HOST": "host-a"})
    run = define("sibling", numbered("--interval", "0.2")).start()
    run = wait_status(run, RunStatus.RUNNING)
    family = processes(run)
    # Marked lost by mistake (say, by hand in the admin) while its worker lives.
    Run.objects.filter(pk=run.pk).update(status=RunStatus.LOST)
    start_worker(env={"TASKRUNNER_HOST": "host-a"})
    wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).count() == 2)
    wait_for(lambda: "worker started" in sibling.log())
    assert all(p.is_running() for p in family)


def test_workers_of_two_hosts_on_sqlite_are_a_warning():
    Worker.objects.create(hostname="host-a", pid=1, create_time=1.0)
    assert check_sqlite_single_host(None) == []
    Worker.objects.create(hostname="host-b", pid=2, create_time=1.0)
    stopped = Worker.objects.create(hostname="host-c", pid=3, create_time=1.0)
    Worker.objects.filter(pk=stopped.pk).update(stopped_at="2026-01-01T00:00:00Z")
    warnings = check_sqlite_single_host(None)
    if connection.vendor == "sqlite":
        assert [w.id for w in warnings] == ["taskrunner.W030"]
        assert "host-a, host-b" in warnings[0].msg
    else:
        assert warnings == []  # PostgreSQL is made for several hosts


def test_a_worker_declared_dead_by_another_ends_its_runs_and_exits(start_worker):
    """Cut off longer than dead_after, a worker finds its runs lost: it must not keep them."""
    worker = start_worker(env={"TASKRUNNER_HOST": "host-a", "TASKRUNNER_HEARTBEAT_SECONDS": "0.2"})
    run = define("cut-off", QUIET).start()
    wait_for(lambda: len(processes(run)) == 2)
    family = processes(run)
    # What a worker of another host does to a silent one: its runs lost, its row stopped.
    fresh(run).finish(RunStatus.LOST, error="Its worker died on host-a.")
    Worker.objects.update(stopped_at=timezone.now())
    assert worker.wait(timeout=30) == 1
    wait_for(lambda: gone(family))
    assert fresh(run).status == RunStatus.LOST
    assert "declared dead" in worker.log()
