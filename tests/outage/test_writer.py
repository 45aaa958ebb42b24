"""The worker's writer against a real database, without a worker process.

A unit test of the retry logic: the store function is wrapped to raise a real
driver error first (issue 14), and a batch the database really refuses is
given (issue 15, item 5). Runs are rows of the test database; the writer
stores through its own database thread, as in the worker.
"""

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from taskrunner.models import EventKind, Run, Task
from taskrunner.worker import Supervisor

pytestmark = pytest.mark.django_db(transaction=True)


def make_run(name: str) -> Run:
    task = Task.objects.create(name=name, argv=["true"])
    return Run.objects.create(task=task, status="running")


def lines(count: int, start: int = 1) -> list[tuple]:
    now = timezone.now()
    return [(EventKind.LOG, "stdout", f"line {i}", None, now) for i in range(start, start + count)]


def drive(supervisor: Supervisor, batch: dict) -> None:
    async def go() -> None:
        supervisor.loop = asyncio.get_running_loop()
        supervisor.db = ThreadPoolExecutor(1)
        supervisor.dirty = asyncio.Event()
        try:
            await supervisor._store_until_done(batch)
        finally:
            await supervisor.loop.run_in_executor(supervisor.db, lambda: connection.close())
            supervisor.db.shutdown()

    asyncio.run(go())


def stored(run: Run) -> list[str]:
    return list(run.events.order_by("seq").values_list("text", flat=True))


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        sqlite3.OperationalError("database is locked"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_batch_whose_store_raises_a_driver_error_is_retried_and_stored_once(error):
    run = make_run("retried")
    supervisor = Supervisor()
    calls = []
    real_store = supervisor._store_batch

    def store_failing_first(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            with transaction.atomic():  # written, then the connection is lost: rolled back
                real_store(batch)
                raise error
        return real_store(batch)

    supervisor._store_batch = store_failing_first
    drive(supervisor, {run.pk: (lines(500), None, (False, None))})
    assert len(calls) == 2
    assert stored(run) == [f"line {i}" for i in range(1, 501)]
    assert list(run.events.order_by("seq").values_list("seq", flat=True)) == list(range(1, 501))


def test_a_refused_batch_costs_only_its_run_and_is_reported_in_its_log():
    good, bad = make_run("good"), make_run("bad")
    now = timezone.now()
    # NaN is not JSON: PostgreSQL's jsonb and SQLite's JSON_VALID check refuse it.
    refused = [(EventKind.MESSAGE, "", "", {"name": "x", "data": float("nan")}, now)]
    drive(
        Supervisor(),
        {good.pk: (lines(100), None, (False, None)), bad.pk: (refused, None, (False, None))},
    )
    assert stored(good) == [f"line {i}" for i in range(1, 101)]
    [notice] = stored(bad)
    assert notice.startswith("[taskrunner] 1 event(s) could not be stored and were dropped")


def test_a_batch_of_a_deleted_run_is_let_go_and_the_others_are_stored():
    kept, deleted = make_run("kept"), make_run("deleted")
    deleted_id = deleted.pk
    Run.objects.filter(pk=deleted_id).delete()
    drive(
        Supervisor(),
        {kept.pk: (lines(100), None, (False, None)), deleted_id: (lines(5), None, (False, None))},
    )
    assert stored(kept) == [f"line {i}" for i in range(1, 101)]
