"""A run this worker is executing: its process, its execution rules, its unsaved output.

Every call into the run's `RunExecution` goes through `act()`, on the
worker's one psutil thread: signalling a tree walks the process table, which
must never stall the loop that reads every child's pipes, and one thread keeps
the signals of a run in the order they were asked for (a resume can never
overtake the pause before it). The handle keeps one timer: the next moment the
execution wants to be asked again (its timeout, or the end of a grace period).
"""

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.utils import timezone

from taskrunner import conf
from taskrunner.models import Run
from taskrunner.params import substitute
from taskrunner.process.execution import RunExecution
from taskrunner.process.forked import ForkedProcess
from taskrunner.process.lines import Line
from taskrunner.process.output import OutputBuffer
from taskrunner.process.supervised import SupervisedProcess
from taskrunner.worker.warm import WarmStarts

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RunHandle:
    def __init__(
        self,
        run: Run,
        proc: SupervisedProcess,
        *,
        procs: ThreadPoolExecutor,
        on_output: Callable[[], None],
    ):
        self.run = run
        self.proc = proc
        self.loop = asyncio.get_running_loop()
        self.procs = procs
        self.on_output = on_output  # tells the writer there is something to store
        self.output = OutputBuffer()
        self.execution = RunExecution(
            proc, timeout=run.task.timeout, grace=run.task.grace, note=self._note_from_thread
        )
        self.backpressured = False  # its pipes are left unread until the writer catches up
        self.exited = False  # the process ended and every line was read
        self.gone = False  # the run's row was deleted: nothing more is stored
        self.stored = asyncio.Event()  # after exit: every line is stored
        proc.tree.defer_sweeps = True  # act() runs each sweep right after
        self._timer: asyncio.TimerHandle | None = None
        self._acting: set[asyncio.Task] = set()  # referenced until done

    @classmethod
    def spawn(
        cls,
        run: Run,
        procs: ThreadPoolExecutor,
        on_output: Callable[[], None],
        warm: WarmStarts | None = None,
    ) -> "RunHandle":
        """Start the run's child now (OSError or ValueError if it cannot be started).

        A Django task's child is forked from the warm process when `warm` allows
        (`worker.warm`), and started cold otherwise.
        """
        task = run.task
        key = uuid.uuid4().hex
        env = {
            # The site's secrets stay with the worker unless the task names them.
            **task.child_environment(dict(os.environ)),
            "TASKRUNNER_RUN_ID": str(run.pk),
            "TASKRUNNER_PARAMS": json.dumps(run.params),
            "TASKRUNNER_PROCESS_KEY": key,
            "PYTHONUNBUFFERED": "1",
        }
        lines_to: list[RunHandle] = []  # the handle exists once the child does
        argv = substitute(task.argv, run.params)

        def on_lines(stream: str, lines: list[Line]) -> None:
            lines_to[0].on_lines(stream, lines)

        max_line_bytes = conf.max_line_bytes()
        proc: SupervisedProcess | None = None
        request = warm.request_for(task, env) if warm is not None else None
        if request is not None and warm is not None and warm.zygote is not None:
            try:
                proc = ForkedProcess(
                    argv,
                    zygote=warm.zygote,
                    request=request,
                    key=key,
                    on_lines=on_lines,
                    max_line_bytes=max_line_bytes,
                )
            except OSError as exc:
                logger.warning("warm start failed; starting cold run_id=%s error=%s", run.pk, exc)
        if proc is None:
            proc = SupervisedProcess(
                argv,
                env=env,
                cwd=task.cwd or None,
                key=key,
                on_lines=on_lines,
                max_line_bytes=max_line_bytes,
            )
        handle = cls(run, proc, procs=procs, on_output=on_output)
        lines_to.append(handle)
        return handle

    @property
    def run_id(self) -> int:
        return self.run.pk

    def describe(self) -> tuple:
        """Run id, task, pid, and how it started (`warm`: forked from the warm process)."""
        start = "warm" if isinstance(self.proc, ForkedProcess) else "cold"
        return (self.run_id, self.run.task.name, self.proc.pid, start)

    # --- output -------------------------------------------------------------

    def on_lines(self, stream: str, lines: list[Line]) -> None:
        """The child printed: buffer it, and stop reading past the high water mark."""
        if self.gone:
            return  # read (so the child is not blocked), never stored
        self.output.add_lines(stream, lines, timezone.now())
        if not self.backpressured and self.output.above_high_water():
            self.backpressured = True
            self.proc.pause_reading()
        self.on_output()

    def relieve(self) -> None:
        """After a store: read the pipes again once the buffer is below its low mark."""
        if self.backpressured and (self.gone or self.output.below_low_water()):
            self.backpressured = False
            self.proc.resume_reading()

    def _note_from_thread(self, text: str) -> None:
        self.loop.call_soon_threadsafe(self._note, text)

    def _note(self, text: str) -> None:
        logger.info("run note run_id=%s note=%r", self.run_id, text)
        # After `stored`, the final status may be recorded: nothing may follow it.
        if not self.gone and not self.stored.is_set():
            self.output.add_note(text, timezone.now())
            self.on_output()

    # --- acting on the process ------------------------------------------------

    async def act(self, fn: Callable[..., T], *args: Any) -> T:
        """Call the execution (or the process) on the psutil thread, then re-arm the timer.

        The tree defers its walk of the process table (`ProcessTree.sweep`):
        `act` returns once the known tree is signalled, so the caller records
        the outcome while the sweep for escapees runs next on the same thread,
        before anything asked later.
        """
        try:
            return await self.loop.run_in_executor(self.procs, fn, *args)
        finally:
            self.loop.run_in_executor(self.procs, self.proc.tree.sweep)
            self.arm()

    def arm(self) -> None:
        """Ask the execution again when its timeout or grace period falls due."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.exited:
            return
        due = [d for d in (self.execution.timeout_in(), self.execution.kill_in()) if d is not None]
        if due:
            self._timer = self.loop.call_later(min(due), self._on_due)

    def act_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """`act()` without waiting for it (from a callback, or to let the loop go on)."""
        acting = self.loop.create_task(self.act(fn, *args))
        self._acting.add(acting)
        acting.add_done_callback(self._acting.discard)

    def _on_due(self) -> None:
        self._timer = None
        self.act_soon(self._check)

    def _check(self) -> None:
        if self.exited:
            return  # a timer that fired as the process ended: nothing left to signal
        if self.execution.check_timeout():
            logger.info("run timed out run_id=%s", self.run_id)
        self.execution.check_kill()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
