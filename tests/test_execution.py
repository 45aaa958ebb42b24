"""One run's execution rules, with real tiny children, real signals and an injected clock.

No database and no asyncio: the clock is a number the test moves, so a
timeout of 10 s or a grace period of 30 s costs no waiting at all.
"""

import subprocess
import sys
import uuid
from datetime import UTC, datetime

import psutil
import pytest

from taskrunner.process.execution import Ending, RunExecution, StopReason
from taskrunner.process.lines import Line
from taskrunner.process.output import EventKind, OutputBuffer
from taskrunner.process.tree import ProcessTree, process_identity
from tests.conftest import STOPPED, child_script, wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def spawn():
    """Start a real child in a session of its own; its tree is killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str]) -> tuple[subprocess.Popen, ProcessTree]:
        key = uuid.uuid4().hex
        popen = subprocess.Popen(
            argv,
            start_new_session=True,
            stdout=subprocess.PIPE,
            env={"TASKRUNNER_PROCESS_KEY": key, "PATH": "/usr/bin:/bin"},
        )
        started.append(popen)
        tree = ProcessTree(popen.pid, process_identity(popen.pid), popen.pid, key)
        return popen, tree

    yield start
    for popen in started:
        if popen.poll() is None:
            popen.kill()
        popen.wait(timeout=10)
        if popen.stdout:
            popen.stdout.close()


def status_of(popen: subprocess.Popen) -> str:
    return psutil.Process(popen.pid).status()


def test_paused_time_does_not_count_towards_the_timeout(spawn):
    popen, tree = spawn(["sleep", "600"])
    clock = FakeClock()
    execution = RunExecution(tree, timeout=10, grace=5, clock=clock)

    clock.advance(4)
    assert execution.timeout_in() == pytest.approx(6)
    assert execution.pause()
    wait_for(lambda: status_of(popen) in STOPPED)
    clock.advance(1000)  # a long pause: the timeout must not fall due meanwhile
    assert execution.timeout_in() is None
    assert not execution.check_timeout()
    assert execution.running_seconds() == pytest.approx(4)

    assert execution.resume()
    wait_for(lambda: status_of(popen) not in STOPPED)
    clock.advance(5.5)
    assert execution.timeout_in() == pytest.approx(0.5)
    assert not execution.check_timeout()
    assert popen.poll() is None

    clock.advance(0.5)
    assert execution.check_timeout()
    assert popen.wait(timeout=10) == -15  # SIGTERM ended it
    outcome = execution.outcome(popen.returncode)
    assert outcome.ending is Ending.TIMED_OUT
    assert outcome.error == "Timed out after 10 s of running."


def test_stopping_a_paused_run_continues_it_so_sigterm_reaches_it(spawn):
    popen, tree = spawn(["sleep", "600"])
    clock = FakeClock()
    execution = RunExecution(tree, timeout=1, grace=5, clock=clock)
    execution.pause()
    wait_for(lambda: status_of(popen) in STOPPED)
    execution.stop(StopReason.ABORT, "Aborted by bob via page.")
    assert popen.wait(timeout=10) == -15
    assert execution.outcome(-15).ending is Ending.ABORTED


def test_sigterm_then_sigkill_after_the_grace_period_with_a_note_per_step(spawn):
    popen, tree = spawn(child_script("ignore_term"))
    assert popen.stdout is not None
    assert popen.stdout.readline() == b"ready\n"
    clock = FakeClock()
    notes: list[str] = []
    execution = RunExecution(tree, timeout=None, grace=30, clock=clock, note=notes.append)

    assert execution.stop(StopReason.ABORT, "Aborted by bob via api.")
    assert popen.stdout.readline() == b"got SIGTERM, ignoring it\n"
    assert execution.kill_in() == pytest.approx(30)
    clock.advance(29.9)
    assert not execution.check_kill()
    assert popen.poll() is None  # still alive: the grace is not over

    clock.advance(0.1)
    assert execution.check_kill()
    assert popen.wait(timeout=10) == -9
    assert execution.kill_in() is None
    assert not execution.check_kill()  # once only
    assert notes == [
        "Stopping (abort): SIGTERM sent; SIGKILL in 30 s.",
        "Still running 30 s after SIGTERM: SIGKILL sent.",
    ]
    outcome = execution.outcome(popen.returncode)
    assert outcome == (Ending.ABORTED, "Aborted by bob via api.")


def test_the_first_reason_to_stop_wins(spawn):
    popen, tree = spawn(["sleep", "600"])
    clock = FakeClock()
    execution = RunExecution(tree, timeout=1, grace=5, clock=clock)
    clock.advance(1)
    assert execution.check_timeout()
    assert not execution.stop(StopReason.ABORT, "Aborted via api.")
    assert not execution.stop(StopReason.WORKER, "The worker stopped.")
    popen.wait(timeout=10)
    assert execution.outcome(popen.returncode).ending is Ending.TIMED_OUT


@pytest.mark.parametrize(
    ("code", "ending", "error"),
    [
        ("raise SystemExit(0)", Ending.SUCCEEDED, ""),
        ("raise SystemExit(3)", Ending.FAILED, "The task's process ended with exit code 3."),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            Ending.FAILED,
            "The task's process ended with killed by SIGKILL.",
        ),
    ],
)
def test_the_outcome_of_a_run_that_ends_by_itself(spawn, code, ending, error):
    popen, tree = spawn([sys.executable, "-c", code])
    execution = RunExecution(tree, timeout=None, grace=5, clock=FakeClock())
    returncode = popen.wait(timeout=30)
    assert execution.outcome(returncode) == (ending, error)


def test_the_worker_stopping_ends_a_run_aborted_with_its_reason(spawn):
    popen, tree = spawn(["sleep", "600"])
    execution = RunExecution(tree, timeout=None, grace=5, clock=FakeClock())
    execution.stop(StopReason.WORKER, "The worker stopped (SIGTERM) before the run finished.")
    popen.wait(timeout=10)
    assert execution.outcome(popen.returncode) == (
        Ending.ABORTED,
        "The worker stopped (SIGTERM) before the run finished.",
    )


NOW = datetime(2026, 11, 30, tzinfo=UTC)


def test_output_buffer_turns_protocol_lines_into_events_and_keeps_order_on_put_back():
    buffer = OutputBuffer(high_water=3, low_water=2, high_water_chars=100, low_water_chars=50)
    buffer.add_lines(
        "stdout",
        [Line("one"), Line("::progress 1/4 warming"), Line('::result {"n": 1}'), Line("two")],
        NOW,
    )
    buffer.add_lines("stderr", [Line("::progress 2/4")], NOW)  # stderr is never protocol
    assert [(e.kind, e.text) for e in buffer.events] == [
        (EventKind.LOG, "one"),
        (EventKind.PROGRESS, ""),
        (EventKind.LOG, "two"),
        (EventKind.LOG, "::progress 2/4"),
    ]
    assert buffer.above_high_water()  # 4 events > 3
    taken = buffer.take()
    assert taken.has_result and taken.result == {"n": 1}
    assert taken.progress is not None and taken.progress["current"] == 1
    assert buffer.below_low_water() and buffer.take().is_empty()

    buffer.add_lines("stdout", [Line("three")], NOW)
    buffer.put_back(taken)  # the store failed: in front again, in order
    assert [e.text for e in buffer.events if e.kind == EventKind.LOG] == [
        "one",
        "two",
        "::progress 2/4",
        "three",
    ]
    assert buffer.has_result and buffer.result == {"n": 1}
    assert buffer.chars == len("onetwo::progress 2/4three")


def test_output_buffer_water_marks_count_characters_too():
    buffer = OutputBuffer(high_water=1000, low_water=500, high_water_chars=100, low_water_chars=10)
    buffer.add_lines("stdout", [Line("x" * 101)], NOW)
    assert buffer.above_high_water()
    assert not buffer.below_low_water()
    buffer.take()
    assert buffer.below_low_water()
