"""The Django-free process core with real children and real signals."""

import asyncio
import os
import re
import sys
import time
import uuid

import psutil
import pytest

from taskrunner.process.execution import describe_exit
from taskrunner.process.supervised import SupervisedProcess
from taskrunner.process.tree import find_by_key
from tests.conftest import CHILDREN

STOPPED = {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP}
STAMPED = re.compile(r"\w+ \d+ (\d+\.\d+)")  # `numbered.py --stamp` lines


def statuses(procs):
    result = {}
    for proc in procs:
        try:
            result[proc.pid] = proc.status()
        except psutil.NoSuchProcess:
            pass
    return result


async def until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout} s")
        await asyncio.sleep(0.02)


class Collector:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def __call__(self, stream, lines):
        self.lines += [(stream, line.text) for line in lines]

    def texts(self, prefix=""):
        return [text for _, text in self.lines if text.startswith(prefix)]


def start(args, collector, key=None):
    key = key or uuid.uuid4().hex
    argv = [sys.executable, str(CHILDREN / "numbered.py"), *args]
    env = {"PATH": "/usr/bin:/bin", "TASKRUNNER_PROCESS_KEY": key, "PYTHONUNBUFFERED": "1"}
    return SupervisedProcess(argv, env=env, cwd=None, key=key, on_lines=collector)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def test_pause_reaches_grandchild_and_setsid_escapee_then_resume_continues():
    async def scenario():
        lines = Collector()
        proc = start(["--grandchild", "--setsid-descendant", "--stamp"], lines)
        try:
            await until(lambda: lines.texts("escapee") and lines.texts("grand"))
            family = proc.tree.alive()
            assert len(family) >= 3
            escapees = [p for p in family if os.getpgid(p.pid) != proc.pgid]
            assert escapees, "the setsid() descendant should have left the group"
            proc.stop()
            await until(lambda: set(statuses(family).values()) <= STOPPED)
            stopped_at = time.time()
            # Found by its key too, the way the worker finds a run's processes.
            assert {p.pid for p in family} <= {p.pid for p in find_by_key(proc.key)}
            seen = len(lines.lines)
            resumed_at = time.time()
            proc.cont()
            await until(lambda: len(lines.lines) > seen + 5)
            assert not set(statuses(family).values()) & STOPPED
            numbers = [int(t.split()[1]) for t in lines.texts("line ")]
            assert numbers == list(range(1, len(numbers) + 1))
            # Every line carries the time it was printed: none while stopped.
            printed = [float(m[1]) for _, t in lines.lines if (m := STAMPED.fullmatch(t))]
            assert not [t for t in printed if stopped_at < t < resumed_at], "a stopped tree printed"
        finally:
            proc.kill()
            await proc.finish()
        assert not find_by_key(proc.key)

    run(scenario())


def test_terminate_then_kill_ends_a_child_that_ignores_sigterm():
    async def scenario():
        lines = Collector()
        key = uuid.uuid4().hex
        argv = [sys.executable, str(CHILDREN / "ignore_term.py")]
        proc = SupervisedProcess(
            argv, env={"TASKRUNNER_PROCESS_KEY": key}, cwd=None, key=key, on_lines=lines
        )
        await until(lambda: lines.texts("ready"))
        proc.terminate()
        await until(lambda: lines.texts("got SIGTERM"))
        assert psutil.pid_exists(proc.pid) and not proc.exited.is_set()
        proc.kill()
        code = await proc.finish()
        assert code == -9 and describe_exit(code) == "killed by SIGKILL"

    run(scenario())


def test_exit_is_seen_while_a_grandchild_holds_the_pipes_and_leftovers_are_killed():
    async def scenario():
        lines = Collector()
        proc = start(["--count", "3", "--grandchild", "--exit-code", "4"], lines)
        await asyncio.wait_for(proc.exited.wait(), timeout=10)
        grandchildren = [p for p in proc.tree.alive() if p.pid != proc.pid]
        assert grandchildren, "the grandchild should outlive the leader"
        code = await proc.finish()
        assert code == 4
        assert lines.texts("line ") == ["line 1", "line 2", "line 3"]
        gone, alive = psutil.wait_procs(grandchildren, timeout=5)
        assert not alive
        assert not find_by_key(proc.key)

    run(scenario())


def test_missing_program_raises_at_start():
    async def scenario():
        with pytest.raises(FileNotFoundError):
            SupervisedProcess(
                ["/nonexistent/program"], env={}, cwd=None, key="k", on_lines=Collector()
            )

    run(scenario())


def test_a_double_forked_daemon_is_found_by_its_key_and_killed():
    async def scenario():
        lines = Collector()
        proc = start(["--double-fork"], lines)
        await until(lambda: lines.texts("daemon"))
        daemons = [p for p in find_by_key(proc.key) if p.ppid() != proc.pid and p.pid != proc.pid]
        assert daemons, "the daemon should have left the tree"
        # Only processes no older than the leader are read: the daemon is one of
        # them, and a scan from a later time passes it over.
        assert daemons[0] in find_by_key(proc.key, proc.tree.since)
        assert daemons[0] not in find_by_key(proc.key, daemons[0].create_time() + 60)
        assert daemons[0] not in proc.tree.refresh()  # not a descendant any more
        proc.kill()
        await proc.finish()
        gone, alive = psutil.wait_procs(daemons, timeout=5)
        assert not alive
        assert not [p for p in find_by_key(proc.key) if p.status() != psutil.STATUS_ZOMBIE]

    run(scenario())
