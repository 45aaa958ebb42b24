"""PostgreSQL restarted and stopped under a running worker and web server (issue 14).

Everything runs against the tests' own cluster (conftest.py), never the
shared server. The worker, uvicorn and the child are real processes; the
results are read with psycopg.
"""

import signal
import sys
import time
from pathlib import Path

import httpx
import psutil

from taskrunner.events.store import RowReader
from tests.conftest import PASSWORD, Server, kill_tree, wait_for

HERE = Path(__file__).resolve().parent
COUNT = 100_000
GATE_AT = 50_000


def define_paced(site, gate: Path) -> None:
    site.manage(
        "taskrunner", "define", "paced", "--grace", "1", "--max-concurrent", "2", "--",
        sys.executable, str(HERE / "paced_lines.py"), str(COUNT), str(GATE_AT), str(gate),
    )  # fmt: skip


def start_run(site, task: str) -> int:
    return int(site.manage("taskrunner", "start", task).splitlines()[0])


def test_every_line_is_stored_once_across_a_restart_and_a_stop(site, tmp_path):
    gate = tmp_path / "gate"
    define_paced(site, gate)
    worker = site.start_worker()
    observer = site.start_worker()  # idle: it must not declare the first one dead
    run_id = start_run(site, "paced")

    # A restart while lines flow (bursts of 250 every 20 ms).
    wait_for(lambda: site.stored_last_seq(run_id) >= 5_000, timeout=30)
    site.cluster.restart()
    wait_for(lambda: site.stored_last_seq(run_id) >= GATE_AT + 1, timeout=60)

    # Stopped for 3 s (longer than dead_after, 2 s) while the child floods:
    # the worker buffers up to its water marks, then the full pipe blocks it.
    site.cluster.stop()
    gate.touch()
    time.sleep(3)  # the outage itself is what is tested
    site.cluster.start()

    wait_for(lambda: site.run_row(run_id)["status"] == "succeeded", timeout=90)
    rows = site.query(
        "SELECT first_seq, last_seq, kind, body FROM taskrunner_eventchunk"
        " WHERE run_id = %s ORDER BY last_seq",
        (run_id,),
    )
    seqs, lines = [], []
    for first, last, kind, body in rows:
        seqs += range(first, last + 1)
        if kind == "log":  # many lines to a row: the store's own decoder
            lines += RowReader.log_parts(body)[3]
    numbers = [int(text.split()[1]) for text in lines if text.startswith("line ")]
    assert numbers == list(range(1, COUNT + 1)), "a line lost, repeated or out of order"
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat in seq"
    assert site.run_row(run_id)["last_seq"] == seqs[-1]

    assert site.query("SELECT count(*) FROM taskrunner_run WHERE status = 'lost'") == [(0,)]
    assert site.query("SELECT count(*) FROM taskrunner_worker WHERE stopped_at IS NULL") == [
        (2,)
    ], "a worker was declared dead after the outage"
    for proc in (worker, observer):
        assert psutil.Process(proc.pid).is_running() and proc.proc.poll() is None
    logs = worker.log() + observer.log()  # either may have claimed the run
    assert "database unavailable" in logs
    assert "worker is dead" not in logs


def _next_id(lines) -> int | None:
    for line in lines:
        if line.startswith("id:"):
            return int(line.split(":", 1)[1])
    return None


def _login(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    client.get("/admin/login/")
    response = client.post(
        "/admin/login/?next=/",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    assert response.status_code == 302, response.text[:500]
    return client


def test_requests_answer_503_while_the_database_is_stopped(site, tmp_path):
    site.manage(
        "shell", "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.create_superuser('alice', 'a@example.com', '{PASSWORD}')",
    )  # fmt: skip
    site.manage(
        "taskrunner", "define", "slow", "--", sys.executable, "-c",
        "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)",
    )  # fmt: skip
    token = site.manage("taskrunner", "token", "create", "alice").splitlines()[-1].strip()
    site.start_worker()
    run_id = start_run(site, "slow")
    wait_for(lambda: site.run_row(run_id)["status"] == "running", timeout=30)

    server = Server(tmp_path / "server.log", (), site.env(), None)
    site.processes.append(server)
    browser = _login(server.url)
    api = httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        assert api.get(f"/api/runs/{run_id}/").status_code == 200
        with api.stream("GET", f"/api/runs/{run_id}/events/") as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            last_id = wait_for(lambda: _next_id(lines), timeout=30)
            site.cluster.stop()
            # The stream ends with its `error` event (Last-Event-ID resumes it).
            for line in lines:
                if line.startswith("id:"):
                    last_id = int(line.split(":", 1)[1])
                if line == "event: error":
                    break
            else:
                raise AssertionError("the stream ended without an error event")

        response = api.get(f"/api/runs/{run_id}/")
        assert response.status_code == 503, response.text[:500]
        assert response.json()["error"]["code"] == "unavailable"
        assert response.headers["Retry-After"]
        response = api.post(f"/api/runs/{run_id}/pause/")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        page = browser.get(f"/runs/{run_id}/")
        assert page.status_code == 503
        assert page.headers["Content-Type"].startswith("text/html")
        assert "Temporarily unavailable" in page.text
        assert "Traceback" not in page.text and "psycopg" not in page.text

        site.cluster.start()
        paused = wait_for(
            lambda: (r := api.post(f"/api/runs/{run_id}/pause/")).status_code != 503 and r,
            timeout=30,
        )
        assert paused.status_code == 202, paused.text[:500]
        wait_for(lambda: site.run_row(run_id)["status"] == "paused", timeout=30)
        assert api.post(f"/api/runs/{run_id}/resume/").status_code == 202
        wait_for(lambda: site.run_row(run_id)["status"] == "running", timeout=30)
        assert browser.get(f"/runs/{run_id}/").status_code == 200
        resumed = f"/api/runs/{run_id}/events/"
        with api.stream("GET", resumed, headers={"Last-Event-ID": str(last_id)}) as stream:
            assert stream.status_code == 200
            ids = []
            for line in stream.iter_lines():
                if line.startswith("id:"):
                    ids.append(int(line.split(":", 1)[1]))
                    if len(ids) == 3:
                        break
        assert ids == [last_id + 1, last_id + 2, last_id + 3], "a gap after Last-Event-ID"
        assert "Traceback" not in server.log()
    finally:
        api.close()
        browser.close()


def test_sigterm_stops_a_worker_whose_database_is_stopped(site):
    site.manage(
        "taskrunner", "define", "ticker", "--grace", "1", "--", sys.executable, "-c",
        "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.01)",
    )  # fmt: skip
    worker = site.start_worker()
    run_id = start_run(site, "ticker")
    wait_for(lambda: site.stored_last_seq(run_id) > 10, timeout=30)
    children = psutil.Process(worker.pid).children(recursive=True)
    assert children
    site.cluster.stop()
    wait_for(lambda: "database unavailable" in worker.log(), timeout=30)

    worker.signal(signal.SIGTERM)
    # Its children end within their grace (1 s); the worker then tries to
    # store what is left for STOP_STORE_SECONDS (5 s) and exits regardless.
    assert worker.wait(timeout=30) == 1
    assert not any(child.is_running() and child.status() != "zombie" for child in children)
    assert "events not stored before stopping" in worker.log() or "without recording" in (
        worker.log()
    )
    kill_tree(worker.proc)
