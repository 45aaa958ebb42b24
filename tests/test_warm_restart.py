"""A worker's warm process that is lost is restarted, with a backoff (`worker/warm.py`).

Real tiny warm processes stand in for `taskrunner.zygote` (they speak its
first word, `ready`, or die at once), with short injected delays; the whole
path through a real worker is in tests/api/test_djangotasks.py.
"""

import asyncio
import logging
import os
import re
import signal
import sys
import time

import psutil
import pytest

from taskrunner.process import forked
from taskrunner.process.forked import ZygoteUnavailable
from taskrunner.worker.warm import WarmStarts

DIES = [sys.executable, "-c", "raise SystemExit(3)"]
# Says it is ready, then reads (and never answers) until its socket closes.
READY = [
    sys.executable,
    "-c",
    "import socket, sys\n"
    "sock = socket.socket(fileno=int(sys.argv[1]))\n"
    "sock.send(b'{\"ready\": 0}')\n"
    "while sock.recv(65536, socket.MSG_TRUNC):\n"
    "    pass\n",
]
RESTARTING = re.compile(r"warm process restarting in_seconds=([\d.]+)")


async def until(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout} s")
        await asyncio.sleep(0.005)
    return value


def delays(caplog) -> list[float]:
    return [float(m[1]) for r in caplog.records if (m := RESTARTING.search(r.getMessage()))]


def ready_one(warm: WarmStarts, *, not_: tuple = ()):
    """The warm process once one is ready, other than those in `not_`."""
    zygote = warm.zygote
    return zygote if zygote is not None and zygote.available and zygote not in not_ else None


def our_children() -> list[psutil.Process]:
    """This process's children, zombies too (an unreaped warm process is one)."""
    return psutil.Process().children()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG, logger="taskrunner")
    return caplog


def test_one_that_dies_at_start_up_is_restarted_after_ever_longer_delays(logs):
    async def scenario():
        warm = WarmStarts(argv=DIES, first_delay=0.01, max_delay=0.04)
        try:
            await until(lambda: len(delays(logs)) >= 6)
            assert warm.request_for(None, {}) is None  # type: ignore[arg-type]  # runs start cold
        finally:
            warm.close()
        return warm

    warm = run(scenario())
    # Doubling from the first delay to the longest, then staying there.
    assert delays(logs)[:6] == [0.01, 0.02, 0.04, 0.04, 0.04, 0.04]
    assert warm.restarts >= 5
    assert "warm process back" not in logs.text
    assert len(re.findall(r"warm process lost pid=\d+ why=it exit", logs.text)) >= 6
    assert our_children() == []  # every one reaped, none left a zombie


def test_one_that_is_killed_is_replaced_and_a_long_life_resets_the_delay(logs):
    async def scenario():
        warm = WarmStarts(argv=READY, first_delay=0.01, max_delay=0.05)
        try:
            first = await until(lambda: ready_one(warm))
            os.kill(first.pid, signal.SIGKILL)
            second = await until(lambda: ready_one(warm, not_=(first,)))
            assert second.pid != first.pid
            await until(lambda: [p.pid for p in our_children()] == [second.pid])  # first reaped
            assert f"warm process back pid={second.pid}" in logs.text
            # Its next delay would be doubled; ready for the longest delay, it is
            # no crash loop: the next loss waits the first delay again.
            await until(lambda: asyncio.get_running_loop().time() - second.ready_at >= 0.05)
            os.kill(second.pid, signal.SIGKILL)
            third = await until(lambda: ready_one(warm, not_=(second,)))
            assert third.pid not in (first.pid, second.pid)
        finally:
            warm.close()

    run(scenario())
    assert delays(logs) == [0.01, 0.01]
    assert logs.text.count("warm process back") == 2
    assert our_children() == []


def test_one_that_does_not_answer_a_fork_is_killed_and_replaced(logs, monkeypatch):
    monkeypatch.setattr(forked, "FORK_ANSWER_SECONDS", 0.2)

    async def scenario():
        warm = WarmStarts(argv=READY, first_delay=0.01, max_delay=0.04)
        try:
            hung = await until(lambda: ready_one(warm))
            with pytest.raises(ZygoteUnavailable):
                hung.fork({"module_path": "tests.djangotasks.add", "env": {}, "cwd": None})
            assert "why=no answer to a fork" in logs.text
            assert not hung.available
            replaced = await until(lambda: ready_one(warm, not_=(hung,)))
            await until(lambda: [p.pid for p in our_children()] == [replaced.pid])
            assert hung.proc.returncode == -signal.SIGKILL  # killed, and reaped
        finally:
            warm.close()

    run(scenario())
    assert our_children() == []


def test_a_closed_one_is_not_restarted(logs):
    async def scenario():
        warm = WarmStarts(argv=READY, first_delay=0.01, max_delay=0.04)
        zygote = await until(lambda: ready_one(warm))
        warm.close()  # as the worker does when it stops: EOF, it exits
        assert zygote.proc.returncode == 0
        return warm

    warm = run(scenario())
    assert warm.zygote is not None and warm.zygote.lost and warm.restarting is None
    assert delays(logs) == [] and "warm process lost" not in logs.text
    assert our_children() == []
