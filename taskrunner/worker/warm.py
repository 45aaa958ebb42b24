"""Which runs start warm (forked from the worker's warm process) and which cold.

A run starts warm when all of these hold, and cold otherwise:
- it is a Django task's run (its task was made by `SupervisedBackend`),
- warm starts are on (`TASKRUNNER_WARM_STARTS`, default on) and the warm
  process is ready (it takes about half a second after the worker starts;
  runs claimed before that start cold),
- its command uses the worker's own Python, in the warm process's directory,
  with the worker's settings module (the warm process set up that one).
If the warm process dies, or does not answer a fork, the worker logs it and
starts later runs cold; a run whose fork failed starts cold at once.
"""

import logging
import os
import sys

from django.conf import settings

from taskrunner import conf
from taskrunner.backends import module_path_of
from taskrunner.models import Task
from taskrunner.process.forked import Zygote

logger = logging.getLogger(__name__)


class WarmStarts:
    def __init__(self) -> None:
        self.zygote: Zygote | None = None
        self.cwd = str(getattr(settings, "BASE_DIR", "") or os.getcwd())
        self.settings_module = settings.SETTINGS_MODULE or os.environ.get(
            "DJANGO_SETTINGS_MODULE", ""
        )
        self.start()

    def start(self) -> None:
        """Start the warm process (from the worker's loop); it says when it is ready."""
        if not conf.warm_starts() or not self.settings_module:
            return
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "PYTHONUNBUFFERED": "1",
        }
        try:
            self.zygote = Zygote([sys.executable, "-m", "taskrunner.zygote"], env=env, cwd=self.cwd)
        except OSError as exc:
            logger.warning("warm process could not start; starting cold error=%s", exc)

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
        if self.zygote is not None:
            self.zygote.close()
