"""The SQLite backend's wait for the write lock (taskrunner.db.sqlite3).

Another connection holds the write lock; a Django transaction started
meanwhile waits for it and goes on once it is released, or fails with
"database is locked" once the configured timeout has passed. Nothing is
timed: the order of events is what is checked.
"""

import sqlite3
import threading

import pytest
from django.db import OperationalError, connection, transaction

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'sqlite'", reason="SQLite's write lock"),
]


def _holder() -> sqlite3.Connection:
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_transaction_waits_for_the_write_lock_then_goes_on(make_task_row):
    other = _holder()
    entered = threading.Event()
    done: list[object] = []

    def write() -> None:
        from taskrunner.models import Task

        try:
            entered.set()
            with transaction.atomic():
                Task.objects.filter(pk=make_task_row.pk).update(description="written")
            done.append("committed")
        except Exception as exc:  # noqa: BLE001 - reported below
            done.append(exc)
        finally:
            from django.db import connections

            connections.close_all()

    writer = threading.Thread(target=write)
    writer.start()
    assert entered.wait(10)
    writer.join(0.2)
    assert writer.is_alive() and not done  # still waiting for the lock
    other.execute("COMMIT")
    other.close()
    writer.join(20)
    assert done == ["committed"]
    make_task_row.refresh_from_db()
    assert make_task_row.description == "written"


def test_past_the_timeout_it_is_database_is_locked(make_task_row, settings):
    other = _holder()
    options = connection.settings_dict["OPTIONS"]
    saved = options.get("timeout")
    options["timeout"] = 0.05
    try:
        with pytest.raises(OperationalError, match="locked"), transaction.atomic():
            pass
    finally:
        options["timeout"] = saved
        other.execute("ROLLBACK")
        other.close()
    with transaction.atomic():  # the lock is free again, and the wait restored
        pass
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == int(saved * 1000)


@pytest.fixture
def make_task_row():
    from taskrunner.models import Task

    return Task.objects.create(name="locked", argv=["true"], params=[])
