"""The `DatabaseWaker` on its own: backing off while idle, waking at once, LISTEN kept alive.

Real databases, one event loop per test (an `asyncio.Runner`, with the ORM
used between its runs). Nothing is timed: only what a wait returns, and the
pace the waker says it keeps.
"""

import asyncio
import time

import pytest
from django.db import connection, transaction

from taskrunner.models import Task, notify
from taskrunner.wakesocket import WakeSocket, send_wake
from taskrunner.wakeup import ANYTHING, DatabaseWaker

pytestmark = pytest.mark.django_db(transaction=True)


def sqlite_only() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("PRAGMA data_version is polled on SQLite; PostgreSQL is woken by NOTIFY")


def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")


def back_off(runner: asyncio.Runner, waker: DatabaseWaker, until: float) -> None:
    """Wait on a quiet database until the waker's pause has grown to `until`."""
    deadline = time.monotonic() + 30
    while waker.interval() < until:
        assert time.monotonic() < deadline, f"still polling every {waker.interval()} s"
        assert runner.run(waker.wait(0.05)) == set()


def test_polling_backs_off_while_idle_and_comes_back_when_busy(transactional_db):
    sqlite_only()
    with asyncio.Runner() as runner:
        waker = DatabaseWaker(poll_interval=0.001, idle_interval=0.05)
        try:
            runner.run(waker.wait(0))  # the baseline
            assert waker.interval() == 0.001
            back_off(runner, waker, 0.05)
            assert waker.interval() == 0.05  # never beyond the idle interval
            Task.objects.create(name="a-commit", argv=["true"])  # another connection
            assert runner.run(waker.wait(10)) == {ANYTHING}
            # A commit alone is no reason to poll faster: it may be the worker's own.
            assert waker.interval() == 0.05
            # While its owner is busy (a worker with runs) it never backs off.
            waker.busy = True
            assert waker.interval() == 0.001
            assert runner.run(waker.wait(0.05)) == set()
            assert waker.interval() == 0.001
            waker.busy = False
            back_off(runner, waker, 0.05)
            waker.active()  # a run started
            assert waker.interval() == 0.001
        finally:
            runner.run(waker.close())


def test_a_datagram_wakes_it_and_brings_the_polling_back(transactional_db, settings, tmp_path):
    sqlite_only()
    settings.TASKRUNNER_WAKE_FALLBACK_SECONDS = 0.001  # with the direct path: its first pace
    with asyncio.Runner() as runner:
        waker = DatabaseWaker(idle_interval=0.05)

        async def bind() -> None:
            waker.direct = WakeSocket(tmp_path / "wake")
            assert waker.direct.open()

        runner.run(bind())
        try:
            runner.run(waker.wait(0))
            back_off(runner, waker, 0.05)
            assert send_wake("run:7", tmp_path / "wake") == 1
            assert runner.run(waker.wait(10)) == {"run:7"}
            assert waker.interval() == 0.001
        finally:
            assert waker.direct is not None
            waker.direct.close()
            runner.run(waker.close())


def test_active_cuts_a_long_pause_short(transactional_db):
    sqlite_only()
    with asyncio.Runner() as runner:
        waker = DatabaseWaker(poll_interval=0.001, idle_interval=120)
        try:
            runner.run(waker.wait(0))
            back_off(runner, waker, 0.5)

            async def wait_and_wake() -> set[str]:
                waiting = asyncio.create_task(waker.wait(600))
                await asyncio.sleep(0.6)  # into a pause of at least 0.5 s
                waker.active()
                return await asyncio.wait_for(waiting, timeout=60)

            assert runner.run(wait_and_wake()) == set()  # back before its pause ended
            assert waker.interval() == 0.001
        finally:
            runner.run(waker.close())


def test_notifications_arrive_and_a_lost_listen_connection_is_replaced(transactional_db):
    postgres_only()

    def send(kind: str, number: int, detail: str = "") -> None:
        with transaction.atomic():
            notify(kind, number, detail)

    def gather(runner: asyncio.Runner, waker: DatabaseWaker, wanted: set[str]) -> set[str]:
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while not wanted <= seen and time.monotonic() < deadline:
            seen |= runner.run(waker.wait(1))
        return seen

    with asyncio.Runner() as runner:
        waker = DatabaseWaker(idle_interval=1.0)
        try:
            assert runner.run(waker.wait(0)) == {ANYTHING}  # connected: re-read everything
            assert runner.run(waker.wait(0.05)) == set()
            send("run", 1)
            send("run", 2)
            assert gather(runner, waker, {"run:1", "run:2"}) >= {"run:1", "run:2"}
            # The server ends the LISTEN session: the waker says so, then listens again.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid() "
                    "AND datname = current_database()"
                )
            assert ANYTHING in gather(runner, waker, {ANYTHING})
            assert runner.run(waker.wait(10)) == {ANYTHING}  # reconnected
            send("control", 3, "4:pause:web:alice")
            assert "control:3:4:pause:web:alice" in gather(
                runner, waker, {"control:3:4:pause:web:alice"}
            )
        finally:
            runner.run(waker.close())
