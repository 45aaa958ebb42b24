"""Which runs start warm (forked from the worker's warm process) and which cold.

A run starts warm when all of these hold, and cold otherwise:
- it is a Django task's run (its task was made by `SupervisedBackend`),
- warm starts are on (`TASKRUNNER_WARM_STARTS`, default on) and the warm
  process is ready (it takes about half a second after the worker starts;
  runs claimed before that start cold),
- its command uses the worker's own Python, in the warm process's directory,
  with the worker's settings module (the warm process set up that one).
A run whose fork failed starts cold at once.

A warm process that dies (a crash, the OOM killer, someone's kill), or does
not answer a fork, is lost: the worker logs it (`warm process lost`), kills
it if it still runs, and starts a new one in the background after a delay
(`warm process restarting`), while runs start cold; `warm process back` says
when the new one is ready. The delay doubles with each loss (1 s, 2 s, ... up
to 60 s) so one that dies at start-up over and over does not spin; it goes
back to 1 s once a warm process has been ready for 60 s before it is lost.
"""

import asyncio
import logging
import os
import sys

from django.conf import settings

from taskrunner import conf
from taskrunner.backends import module_path_of
from taskrunner.models import Task
from taskrunner.process.forked import Zygote

logger = logging.getLogger(__name__)

RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 60.0


class WarmStarts:
    """The worker's warm process, kept: started with the worker, restarted when lost.

    Made in the worker's running loop. `argv` (the warm process's command) and
    the restart delays are arguments so tests can use a process that dies and
    short delays.
    """

    def __init__(
        self,
        *,
        argv: list[str] | None = None,
        first_delay: float = RESTART_FIRST_SECONDS,
        max_delay: float = RESTART_MAX_SECONDS,
    ) -> None:
        self.argv = argv or [sys.executable, "-m", "taskrunner.zygote"]
        self.first_delay = first_delay
        self.max_delay = max(first_delay, max_delay)
        self.delay = first_delay  # before the next restart
        self.restarts = 0  # started again after a loss, over this worker's life
        self.lost_at: float | None = None  # loop time of the loss not yet made good
        self.restarting: asyncio.TimerHandle | None = None
        self.closed = False
        self.zygote: Zygote | None = None
        self.cwd = str(getattr(settings, "BASE_DIR", "") or os.getcwd())
        self.settings_module = settings.SETTINGS_MODULE or os.environ.get(
            "DJANGO_SETTINGS_MODULE", ""
        )
        self.start()

    def start(self) -> None:
        """Start the warm process (from the worker's loop); it says when it is ready."""
        if self.closed or not conf.warm_starts() or not self.settings_module:
            return
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "PYTHONUNBUFFERED": "1",
        }
        try:
            self.zygote = Zygote(
                self.argv,
                env=env,
                cwd=self.cwd,
                on_ready=self._on_ready,
                on_lost=self._on_lost,
            )
        except OSError as exc:
            logger.warning("warm process could not start; starting cold error=%s", exc)
            self.zygote = None
            self._restart_later()

    def _on_ready(self, zygote: Zygote) -> None:
        if zygote is not self.zygote or self.lost_at is None:
            return
        down = zygote.loop.time() - self.lost_at
        self.lost_at = None
        logger.info(
            "warm process back pid=%s down_seconds=%.1f restarts=%s",
            zygote.pid,
            down,
            self.restarts,
        )

    def _on_lost(self, zygote: Zygote) -> None:
        if self.closed or zygote is not self.zygote:
            return
        now = zygote.loop.time()
        if zygote.ready_at is not None and now - zygote.ready_at >= self.max_delay:
            self.delay = self.first_delay  # it served a while: not a crash loop
        self._restart_later()

    def _restart_later(self) -> None:
        if self.closed or self.restarting is not None:
            return
        loop = asyncio.get_running_loop()
        if self.lost_at is None:
            self.lost_at = loop.time()
        delay, self.delay = self.delay, min(self.delay * 2, self.max_delay)
        logger.info("warm process restarting in_seconds=%s", delay)
        self.restarting = loop.call_later(delay, self._restart)

    def _restart(self) -> None:
        self.restarting = None
        self.restarts += 1
        self.start()

    def request_for(self, task: Task, env: dict[str, str]) -> dict | None:
        """What to ask the warm process for this task's child, or None to start it cold."""
        if self.zygote is None or not self.zygote.available:
            return None
        module_path = module_path_of(task)
        if (
            module_path is None
            or task.argv[0] != sys.executable
            or (task.cwd or self.cwd) != self.cwd
            or env.get("DJANGO_SETTINGS_MODULE") != self.settings_module
        ):
            return None
        return {"module_path": module_path, "env": env, "cwd": self.cwd}

    def close(self) -> None:
        self.closed = True
        if self.restarting is not None:
            self.restarting.cancel()
            self.restarting = None
        if self.zygote is not None:
            self.zygote.close()
