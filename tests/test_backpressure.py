"""A child that prints faster than the database stores is slowed, and nothing is dropped.

The database is made slow for real: this test holds a lock on the event table
(SQLite: the write lock; PostgreSQL: the table) from a connection of its own,
so the worker's inserts wait. The worker must stop reading the child's pipe
once its buffer is full (so the child's writes block: the child notes it),
keep its memory bounded, and store every line once the lock is released.
"""

import sqlite3
from contextlib import contextmanager

import psutil
import pytest
from django.db import connection

from taskrunner.models import EventChunk, Run, RunStatus, Task
from tests.conftest import child_script, stored_events, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LINES = 1_000_000  # 75 MB: far over the worker's buffer (20,000 events) and a pipe
BUFFER_EVENTS = 20_000  # the worker's high-water mark (taskrunner/worker.py)


def last_note(path) -> tuple[str, int] | None:
    if not path.exists():
        return None
    lines = path.read_text().split()
    return (lines[-2], int(lines[-1])) if len(lines) >= 2 else None


@contextmanager
def event_table_locked():
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        # Under the busy timeout the worker waits (20 s); the test lets go sooner.
        holder = sqlite3.connect(settings["NAME"], isolation_level=None, timeout=20)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    else:
        import psycopg

        holder = psycopg.connect(
            dbname=settings["NAME"],
            user=settings["USER"] or None,
            password=settings["PASSWORD"] or None,
            host=settings["HOST"] or None,
            port=settings["PORT"] or None,
        )
        table = connection.ops.quote_name(EventChunk._meta.db_table)
        try:
            holder.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
            yield
        finally:
            holder.rollback()
            holder.close()


def test_a_child_outpacing_the_database_is_slowed_and_nothing_is_dropped(worker, tmp_path):
    go, blocked = tmp_path / "go", tmp_path / "blocked"
    task = Task.objects.create(
        name="flood", argv=[*child_script("flood"), str(LINES), str(go), str(blocked)]
    )
    run = task.start({})
    wait_for(
        lambda: any(e.text == "waiting for go" for e in stored_events(run.pk, "log")), timeout=30
    )
    worker_proc = psutil.Process(worker.pid)
    child = psutil.Process(Run.objects.get(pk=run.pk).pid)
    rss_before = worker_proc.memory_info().rss
    with event_table_locked():
        go.touch()
        # The worker cannot store: its buffer fills, it stops reading, the pipe
        # fills, and the child's writes block (the child notes it) for as long
        # as the database is stuck. A worker that kept reading would let the
        # child run to its end, holding a million lines in memory.
        note = wait_for(
            lambda: (n := last_note(blocked)) and n[0] == "blocked" and n[1] > BUFFER_EVENTS and n,
            timeout=15,
        )
        growth = worker_proc.memory_info().rss - rss_before
        print(f"child blocked at line {note[1]}; worker RSS growth {growth / 2**20:.1f} MiB")
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        assert last_note(blocked) == note, "the child went on while the database was stuck"
        assert growth < 200 * 2**20
    wait_for(
        lambda: Run.objects.get(pk=run.pk).status not in (RunStatus.RUNNING, RunStatus.QUEUED),
        timeout=120,
    )
    run = Run.objects.get(pk=run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    texts = [e.text for e in stored_events(run.pk, "log") if e.text.startswith("f ")]
    numbers = [int(text.split()[1]) for text in texts]
    assert numbers == list(range(1, LINES + 1)), "a line was dropped, repeated or reordered"
