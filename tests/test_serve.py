"""`python -m backoffice.serve` (what `make run` starts): web server and worker together."""

import signal
import subprocess
import sys

import httpx
import psutil
import pytest

from taskrunner.models import Run, RunStatus, Task, Worker
from tests.conftest import ROOT, free_port, gone, kill_tree, subprocess_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def serve(tmp_path):
    """Start serve.py on a free port (DEBUG on, as `make run` does); killed at teardown."""
    started = []

    def start():
        port = free_port()
        log = open(tmp_path / f"serve-{port}.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "backoffice.serve", "--port", str(port)],
            cwd=ROOT,
            env=subprocess_env({"DEBUG": "true"}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url, proc), timeout=30, interval=0.1)
        wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).exists(), timeout=30)
        return proc, url

    yield start
    for proc, log in started:
        if proc.poll() is None:
            kill_tree(proc)
            proc.wait(timeout=10)
        log.close()


def answers(url: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"serve exited early with {proc.returncode}")
    try:
        return httpx.get(f"{url}/admin/login/", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def family(proc: subprocess.Popen) -> list[psutil.Process]:
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def test_ctrl_c_stops_web_server_worker_and_runs_with_no_orphan(serve):
    proc, url = serve()
    task = Task.objects.create(
        name="sleeper", argv=[sys.executable, "-c", "import time; time.sleep(600)"], grace=2
    )
    run = task.start()
    wait_for(lambda: Run.objects.get(pk=run.pk).pid, timeout=20)
    everything = family(proc)
    assert len(everything) >= 4  # serve, uvicorn, worker, the run's child
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    wait_for(lambda: gone(everything), timeout=10)
    run.refresh_from_db()
    assert run.status == RunStatus.ABORTED and "worker" in run.error.lower()
    assert not Worker.objects.filter(stopped_at__isnull=True).exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/admin/login/", timeout=1)


def test_when_the_worker_dies_the_web_server_is_stopped_too(serve):
    proc, _url = serve()
    everything = family(proc)
    worker = next(p for p in everything if "worker" in " ".join(p.cmdline()))
    worker.kill()
    assert proc.wait(timeout=30) == 1
    wait_for(lambda: gone(everything), timeout=10)
