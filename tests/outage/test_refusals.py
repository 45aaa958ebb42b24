"""A real worker facing output and deletions the database cannot take (issue 15, items 5 and 7),
and a locked SQLite database (issue 14).

Runs on both databases with the session's test database (tests/conftest.py
fixtures); the SQLite lock tests only where there is a SQLite file to lock.
"""

import signal
import sqlite3
import sys

import psutil
import pytest
from django.db import connection

from taskrunner.models import Run, RunStatus, Task
from taskrunner.process.tree import find_by_key
from tests.conftest import child_script, gone, stored_events, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

HUGE = "1" * 400
BAD_LINES = [
    '::result {"v": NaN}',
    f"::progress {HUGE}/10 overflowing",
    f'::message found {{"n": {HUGE}.5}}',
    '::message found {"n": Infinity}',
]


def define(name: str, argv: list[str], **fields) -> Task:
    fields.setdefault("grace", 1.0)
    fields.setdefault("max_concurrent", 4)
    return Task.objects.create(name=name, argv=argv, **fields)


def printing(*lines: str) -> list[str]:
    code = "import sys\nfor line in sys.argv[1:]:\n    print(line, flush=True)\n"
    return [sys.executable, "-c", code, *lines]


def numbered(count: int, interval: float) -> list[str]:
    return [*child_script("numbered"), "--count", str(count), "--interval", str(interval)]


def fresh(run: Run) -> Run:
    return Run.objects.get(pk=run.pk)


def final(run: Run, timeout: float = 30.0) -> Run:
    return wait_for(lambda: (r := fresh(run)).is_final and r, timeout=timeout)


def log_texts(run: Run) -> list[str]:
    return [e.text for e in stored_events(run.pk, "log")]


def line_numbers(run: Run) -> list[int]:
    return [int(text.split()[1]) for text in log_texts(run) if text.startswith("line ")]


def test_non_finite_numbers_are_logged_as_text_and_nothing_else_suffers(worker):
    neighbour = define("neighbour", numbered(100, 0.01)).start()
    bad = define("bad", printing(*BAD_LINES, "done")).start()
    bad, neighbour = final(bad), final(neighbour)
    assert bad.status == RunStatus.SUCCEEDED
    assert log_texts(bad) == [*BAD_LINES, "done"]
    assert bad.result is None and bad.progress is None
    assert neighbour.status == RunStatus.SUCCEEDED
    assert line_numbers(neighbour) == list(range(1, 101))

    worker.signal(signal.SIGTERM)  # not wedged: it stops as usual
    assert worker.wait(timeout=30) == 0


def _delete_run_row(run_id: int) -> None:
    """What a careless admin (or SQL console) does: the row and its dependents, raw."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM taskrunner_runaction WHERE run_id = %s", [run_id])
        cursor.execute("DELETE FROM taskrunner_eventchunk WHERE run_id = %s", [run_id])
        cursor.execute("DELETE FROM taskrunner_run WHERE id = %s", [run_id])


def test_a_run_deleted_while_running_costs_the_other_run_nothing(start_worker):
    worker = start_worker("--concurrency", "2")
    victim = define("victim", numbered(0, 0.005)).start()
    wait_for(lambda: fresh(victim).process_key and fresh(victim).last_seq > 20)
    family = find_by_key(fresh(victim).process_key)
    assert family
    neighbour = define("neighbour", numbered(100, 0.02)).start()
    wait_for(lambda: fresh(neighbour).last_seq > 10)

    _delete_run_row(victim.pk)

    neighbour = final(neighbour)
    assert neighbour.status == RunStatus.SUCCEEDED
    assert line_numbers(neighbour) == list(range(1, 101)), "the other run lost lines"
    wait_for(lambda: gone(family), timeout=15)  # the deleted run's process is ended
    # Its slot is free again: two more runs fit on this 2-slot worker.
    after = define("after", numbered(3, 0.01))
    more = [after.start(), after.start()]
    assert [final(run).status for run in more] == [RunStatus.SUCCEEDED] * 2
    assert worker.proc.poll() is None
    assert "run deleted while running" in worker.log()


def _sqlite_path() -> str:
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite lock; the PostgreSQL outage is in test_postgres_outage.py")
    return connection.settings_dict["NAME"]


class SqliteLock:
    """The write lock of the test database held by another connection (BEGIN IMMEDIATE)."""

    def __init__(self, path: str):
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
        self.conn.close()


def test_a_locked_sqlite_database_loses_no_line(start_worker):
    path = _sqlite_path()
    worker = start_worker(env={"SQLITE_BUSY_TIMEOUT": "0.2"})
    run = define("locked", numbered(400, 0.005)).start()
    wait_for(lambda: fresh(run).last_seq > 20)
    lock = SqliteLock(path)
    try:
        wait_for(lambda: "database unavailable" in worker.log(), timeout=30)
    finally:
        lock.release()
    run = final(run)
    assert run.status == RunStatus.SUCCEEDED
    assert line_numbers(run) == list(range(1, 401))
    assert "database is locked" in worker.log()  # the clear error, in the worker's log


def test_sigterm_stops_a_worker_whose_sqlite_database_stays_locked(start_worker):
    path = _sqlite_path()
    worker = start_worker(env={"SQLITE_BUSY_TIMEOUT": "0.5"})
    run = define("ticker", numbered(0, 0.01), grace=1.0).start()
    wait_for(lambda: fresh(run).last_seq > 20)
    children = psutil.Process(worker.pid).children(recursive=True)
    lock = SqliteLock(path)
    try:
        wait_for(lambda: "database unavailable" in worker.log(), timeout=30)
        worker.signal(signal.SIGTERM)
        # Children end within their grace; what cannot be stored is given up
        # after the grace + 5 s, and the worker exits 1 saying so.
        assert worker.wait(timeout=30) == 1
        assert gone(children)
    finally:
        lock.release()
    assert "events not stored before stopping" in worker.log() or "without recording" in (
        worker.log()
    )


def test_requests_answer_503_while_sqlite_stays_locked(start_server, personas):
    import httpx

    from taskrunner.models import ApiToken

    path = _sqlite_path()
    _token, secret = ApiToken.create_for(personas["alice"])
    run = define("queued-one", numbered(1, 0)).start()  # no worker: it stays queued
    server = start_server(env={"SQLITE_BUSY_TIMEOUT": "0.2"})
    client = httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {secret}"}
    )
    # Used once first: its last_used_at is written now, not by the next request.
    assert client.get(f"/api/runs/{run.pk}/").status_code == 200
    lock = SqliteLock(path)
    try:
        assert client.get(f"/api/runs/{run.pk}/").status_code == 200  # WAL: reads go on
        # Aborting a queued run writes: it waits 0.2 s for the lock, then 503.
        response = client.post(f"/api/runs/{run.pk}/abort/")
        assert response.status_code == 503, response.text[:500]
        assert response.json()["error"]["code"] == "unavailable"
    finally:
        lock.release()
        client.close()
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {secret}"}
    ) as client:
        assert client.post(f"/api/runs/{run.pk}/abort/").status_code == 202
    assert fresh(run).status == RunStatus.ABORTED
