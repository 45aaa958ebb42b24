"""The process of a Django task's run: `python -m taskrunner.djangotask MODULE.PATH`.

A worker starts it like any run's child (its own session and process group,
the run's environment), so pause, resume, abort, timeout and input apply as
to any run. It sets Django up, then calls the `@task` function at
MODULE.PATH with the run's arguments (`TASKRUNNER_PARAMS`: `{"args": [...],
"kwargs": {...}}`); an async function runs under `asyncio.run`.

What the function says is the run's log: `print()` on standard output;
`logging` records (INFO and above, unless the site's own LOGGING puts
handlers on the root logger) and warnings as lines on standard error.
`taskrunner.child.progress()` works as in any child.

- It returns: the value (JSON, through Django's `normalize_json`) is the
  run's result (a `::result` line), exit status 0.
- It raises: the traceback goes to standard error, then the exception's
  class path and traceback are sent as the structured message
  `taskrunner.exception` (the last line the process writes, which
  `SupervisedBackend.get_result` reads back), exit status 1.

Django's `task_started` and `task_finished` signals are sent here, around the
function. Database connections are closed before the process exits.
"""

import asyncio
import dataclasses
import json
import logging
import sys
import traceback
from inspect import iscoroutinefunction
from typing import Any

from taskrunner import child

# A `::` line longer than the worker's line limit would be split, and no longer
# understood: the traceback sent in the message is kept under it.
MAX_TRACEBACK_CHARS = 32 * 1024
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def install_log_handler() -> None:
    """Logging records and warnings become lines of the run's log (standard error)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def call(func, args: list, kwargs: dict) -> Any:
    if iscoroutinefunction(func):
        return asyncio.run(func(*args, **kwargs))
    return func(*args, **kwargs)


def result_line(value: Any) -> Any:
    """The return value as the run's result; TypeError/ValueError if JSON cannot hold it."""
    from django.utils.json import normalize_json

    from taskrunner import conf

    value = normalize_json(value)
    size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    limit = conf.max_line_bytes() - len("::result ") - 1
    if size > limit:
        raise ValueError(
            f"The return value is {size} bytes of JSON; a result is at most {limit} "
            "(TASKRUNNER_MAX_LINE_BYTES). Write large output to a file or the log."
        )
    return value


def run_function(module_path: str) -> int:
    """Call the task's function and report how it ended; the exit status."""
    from django.tasks import TaskContext, TaskResultStatus
    from django.tasks.base import TaskError
    from django.tasks.signals import task_started

    from taskrunner.backends import EXCEPTION_MESSAGE, SupervisedBackend, load_task
    from taskrunner.models import Run

    params = child.params()
    run_id = child.run_id()
    task_result = None
    error = None
    try:
        task = load_task(module_path)
        backend = task.get_backend()
        if isinstance(backend, SupervisedBackend) and run_id is not None:
            task_result = backend.result_for(Run.objects.get(pk=run_id), task)
            task_started.send(type(backend), task_result=task_result)
        args, kwargs = params.get("args", []), params.get("kwargs", {})
        if task.takes_context:
            if task_result is None:
                raise RuntimeError("A task that takes context runs only as a run of its backend.")
            args = [TaskContext(task_result=task_result), *args]
        value = result_line(call(task.func, args, kwargs))
    except BaseException as exc:  # noqa: BLE001 - whatever the function raised fails the run
        traceback.print_exc()
        kind = type(exc)
        error = TaskError(
            exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
            traceback="".join(traceback.format_exception(exc))[-MAX_TRACEBACK_CHARS:],
        )
    # Outside the except block: Django's own receiver would log the traceback again.
    if error is not None:
        if task_result is not None:
            _finished(task_result, TaskResultStatus.FAILED, errors=[error])
        child.message(EXCEPTION_MESSAGE, dataclasses.asdict(error))
        return 1
    child.result(value)
    if task_result is not None:
        _finished(task_result, TaskResultStatus.SUCCESSFUL, return_value=value)
    return 0


def _finished(task_result, status, *, errors=(), return_value=None) -> None:
    """Send task_finished with the result as it ends (outside any except block)."""
    from django.tasks.signals import task_finished
    from django.utils import timezone

    ended = dataclasses.replace(
        task_result,
        status=status,
        finished_at=timezone.now(),
        errors=[*task_result.errors, *errors],
    )
    object.__setattr__(ended, "_return_value", return_value)
    try:
        task_finished.send(type(task_result.task.get_backend()), task_result=ended)
    except Exception:  # noqa: BLE001 - a receiver's failure must not change the run's outcome
        logging.getLogger(__name__).exception("a task_finished receiver failed")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m taskrunner.djangotask MODULE.PATH", file=sys.stderr)
        return 2
    import django

    django.setup()
    install_log_handler()
    try:
        return run_function(argv[0])
    finally:
        from django.db import connections

        connections.close_all()


if __name__ == "__main__":
    sys.exit(main())
