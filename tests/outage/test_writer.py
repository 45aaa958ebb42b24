"""The worker's writer against a real database, without a worker process.

A unit test of the retry logic: the store function is wrapped to raise a real
driver error first (issue 14), and a batch the database really refuses is
given (issue 15, item 5). Runs are rows of the test database; the writer
stores through its own database thread, as in the worker.
"""

import asyncio
import sqlite3

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from taskrunner.models import Run, Task
from taskrunner.process.output import Event, EventKind, Taken
from taskrunner.worker import database
from taskrunner.worker.database import WorkerDatabase
from taskrunner.worker.writer import EventWriter
from tests.conftest import stored_events

pytestmark = pytest.mark.django_db(transaction=True)


def make_run(name: str) -> Run:
    task = Task.objects.create(name=name, argv=["true"])
    return Run.objects.create(task=task, status="running")


def lines(count: int, start: int = 1) -> Taken:
    now = timezone.now()
    events = [
        Event(EventKind.LOG, "stdout", f"line {i}", None, now) for i in range(start, start + count)
    ]
    return Taken(events, None, False, None)


def drive(batch: dict, store=None) -> list[int]:
    """Store `batch` through a writer on its own database thread; the runs it let go."""
    gone: list[int] = []

    async def go() -> None:
        db = WorkerDatabase()
        writer = EventWriter(db, {}, on_gone=gone.append)
        if store is not None:
            writer.store_batch = store
        try:
            await writer.store_until_done(batch)
        finally:
            await db.close(abandon=False)

    asyncio.run(go())
    return gone


def stored(run: Run) -> list[str]:
    return [e.text for e in stored_events(run.pk)]


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
    calls = []

    def store_failing_first(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            with transaction.atomic():  # written, then the connection is lost: rolled back
                database.store_batch(batch)
                raise error
        return database.store_batch(batch)

    drive({run.pk: lines(500)}, store=store_failing_first)
    assert len(calls) == 2
    assert stored(run) == [f"line {i}" for i in range(1, 501)]
    assert [e.seq for e in stored_events(run.pk)] == list(range(1, 501))


def test_a_refused_batch_costs_only_its_run_and_is_reported_in_its_log():
    good, bad = make_run("good"), make_run("bad")
    now = timezone.now()
    # NaN is not JSON: PostgreSQL's jsonb and SQLite's JSON_VALID check refuse it.
    refused = [Event(EventKind.MESSAGE, "", "", {"name": "x", "data": float("nan")}, now)]
    drive({good.pk: lines(100), bad.pk: Taken(refused, None, False, None)})
    assert stored(good) == [f"line {i}" for i in range(1, 101)]
    [notice] = stored(bad)
    assert notice.startswith("[taskrunner] 1 event(s) could not be stored and were dropped")


def test_a_batch_of_a_deleted_run_is_let_go_and_the_others_are_stored():
    kept, deleted = make_run("kept"), make_run("deleted")
    deleted_id = deleted.pk
    with connection.cursor() as cursor:  # as a careless hand would: the product refuses it
        cursor.execute("DELETE FROM taskrunner_run WHERE id = %s", [deleted_id])
    gone = drive({kept.pk: lines(100), deleted_id: lines(5)})
    assert stored(kept) == [f"line {i}" for i in range(1, 101)]
    assert gone == [deleted_id]
