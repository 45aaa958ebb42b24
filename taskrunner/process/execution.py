"""One run's execution, without Django: pauses, the timeout, stopping, the outcome.

The supervisor owns the asyncio loop and the database; this class owns the
rules, so they can be tested with real tiny children and an injected clock
instead of sleeps:

- Time spent paused does not count towards the timeout.
- Stopping escalates and is guarded: SIGTERM to the whole tree (with SIGCONT
  if it was paused, or the SIGTERM would wait for a resume), then SIGKILL once
  the grace period is over. Each step is reported through `note`, which the
  supervisor turns into a line of the run's log.
- The first reason to stop wins (an abort during a timeout's grace period is
  still a timeout), and the outcome is a value computed from that reason and
  the exit code.

The supervisor asks `timeout_in()` and `kill_in()` when to call back, and
calls `check_timeout()` and `check_kill()` then; both are safe to call early
or twice.
"""

import signal
import time
from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple, Protocol


class Signallable(Protocol):
    """What an execution needs of a process tree (a `SupervisedProcess`)."""

    def stop(self) -> None: ...
    def cont(self) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class StopReason(StrEnum):
    """Why the supervisor is ending a run that has not ended by itself."""

    ABORT = "abort"
    """Somebody asked (page, API, command line)."""
    TIMEOUT = "timeout"
    """It ran longer than its task's timeout, paused time not counted."""
    WORKER = "worker"
    """The worker itself is stopping (SIGTERM or Ctrl-C)."""
    GONE = "gone"
    """The run's row was deleted while it ran: nothing is recorded for it any more."""


class Ending(StrEnum):
    """How a run ended; the values are the run statuses of the same name."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    TIMED_OUT = "timed_out"


class Outcome(NamedTuple):
    ending: Ending
    error: str


def describe_exit(returncode: int) -> str:
    """`exit code 3` or `killed by SIGKILL`, for a run's error text."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class RunExecution:
    def __init__(
        self,
        proc: Signallable,
        *,
        timeout: float | None,
        grace: float,
        clock: Callable[[], float] = time.monotonic,
        note: Callable[[str], None] = lambda text: None,
    ):
        self.proc = proc
        self.timeout = timeout
        self.grace = grace
        self.clock = clock
        self.note = note
        self.paused = False
        self.stop_reason: StopReason | None = None
        self.stop_detail = ""
        self.killed = False
        self._ran_before = 0.0  # running time up to the last pause
        self._running_since = clock()
        self._kill_at: float | None = None

    # --- pause accounting ---------------------------------------------------

    def running_seconds(self) -> float:
        """Time spent running so far, paused time left out."""
        if self.paused:
            return self._ran_before
        return self._ran_before + (self.clock() - self._running_since)

    def pause(self) -> bool:
        """Stop the tree (SIGSTOP); False when there is nothing to pause."""
        if self.paused or self.stop_reason is not None:
            return False
        self.proc.stop()
        self._ran_before += self.clock() - self._running_since
        self.paused = True
        return True

    def resume(self) -> bool:
        """Continue the tree (SIGCONT); False when it was not paused."""
        if not self.paused:
            return False
        self.proc.cont()
        self.paused = False
        self._running_since = self.clock()
        return True

    # --- timeout ------------------------------------------------------------

    def timeout_in(self) -> float | None:
        """Seconds until the timeout is due; None while it cannot be (none, paused, stopping)."""
        if self.timeout is None or self.paused or self.stop_reason is not None:
            return None
        return max(0.0, self.timeout - self.running_seconds())

    def check_timeout(self) -> bool:
        """Begin stopping the run if its timeout is due; True if it did."""
        due = self.timeout_in()
        if due is None or due > 0:
            return False
        return self.stop(StopReason.TIMEOUT, f"Timed out after {self.timeout:g} s of running.")

    # --- stopping -----------------------------------------------------------

    def stop(self, reason: StopReason, detail: str) -> bool:
        """SIGTERM the tree now, SIGKILL after the grace period; False if already stopping."""
        if self.stop_reason is not None:
            return False
        if not self.paused:
            self._ran_before += self.clock() - self._running_since
        self.stop_reason, self.stop_detail = reason, detail
        self.paused = False  # terminate() sends SIGCONT as well
        self.proc.terminate()
        self._kill_at = self.clock() + self.grace
        self.note(f"Stopping ({reason.value}): SIGTERM sent; SIGKILL in {self.grace:g} s.")
        return True

    def kill_in(self) -> float | None:
        """Seconds until SIGKILL is due; None when no stop is under way or it was sent."""
        if self._kill_at is None or self.killed:
            return None
        return max(0.0, self._kill_at - self.clock())

    def check_kill(self) -> bool:
        """Send SIGKILL if the grace period is over; True if it did."""
        due = self.kill_in()
        if due is None or due > 0:
            return False
        return self.kill_now(f"Still running {self.grace:g} s after SIGTERM: SIGKILL sent.")

    def kill_now(self, why: str) -> bool:
        """SIGKILL the tree at once (the grace is over, or the worker was told twice)."""
        if self.killed:
            return False
        self.killed = True
        self.proc.kill()
        self.note(why)
        return True

    # --- the end ------------------------------------------------------------

    def outcome(self, returncode: int) -> Outcome:
        """What the run's final status and error are, once its process has ended."""
        if self.stop_reason is StopReason.TIMEOUT:
            return Outcome(Ending.TIMED_OUT, self.stop_detail)
        if self.stop_reason is not None:
            return Outcome(Ending.ABORTED, self.stop_detail)
        if returncode == 0:
            return Outcome(Ending.SUCCEEDED, "")
        return Outcome(Ending.FAILED, f"The task's process ended with {describe_exit(returncode)}.")
