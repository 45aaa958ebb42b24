"""Django's Tasks framework on the task runner: every `@task` function a supervised run.

    TASKS = {"default": {"BACKEND": "taskrunner.backends.SupervisedBackend"}}

`enqueue` validates the task as Django does, then records a run of a task
row made on first use: its name is `django-` and the function's module path
with dots as dashes (`myapp.tasks.send_report` is the task
`django-myapp-tasks-send_report`, a slug the API and pages can address), its
command runs the function in a child of a worker (`python -m
taskrunner.djangotask myapp.tasks.send_report`, started in the project's
directory). The run's `params` are the JSON arguments, `{"args": [...],
"kwargs": {...}}`; its `priority` is the task's. The returned
`TaskResult.id` is the run's id as a string.

The run is created in the caller's transaction: enqueued inside
`transaction.atomic()`, it is seen by workers when that commits (the wake-up
NOTIFY is sent on commit too) and vanishes with a rollback.

Signals: `task_enqueued` is sent here, by `enqueue`; `task_started` and
`task_finished` are sent in the run's own process (`taskrunner.djangotask`),
around the function, so receivers run where the work does. A run that never
gets to finish by itself (aborted, timed out, lost) sends no
`task_finished`: its process is stopped from outside.

`OPTIONS` may set `timeout`, `grace`, `max_concurrent` (default 1000: calls
of one function run side by side, bounded by the workers' `--concurrency`)
and `retries` for the task rows the backend makes (when it makes them; edit the task in the admin
afterwards). `retries` applies once the runner has retries.
"""

import hashlib
import json
import os
import sys
from typing import Any

from django.conf import settings
from django.db import transaction
from django.tasks import TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task as DjangoTask
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from taskrunner.events.store import read_before
from taskrunner.models import (
    SITE_SECRET_VARIABLES,
    ActionKind,
    ActionNotAllowed,
    Run,
    RunAction,
    RunStatus,
    Task,
    Via,
    notify,
)

TASK_NAME_PREFIX = "django-"
NAME_MAX_LENGTH: int = Task._meta.get_field("name").max_length or 100
CHILD_MODULE = "taskrunner.djangotask"
# The structured message a failing function's process sends last (see djangotask).
EXCEPTION_MESSAGE = "taskrunner.exception"
OPTION_FIELDS = ("timeout", "grace", "max_concurrent", "retries")
DEFAULT_MAX_CONCURRENT = 1000
STATUS_MAP: dict[str, TaskResultStatus] = {
    RunStatus.QUEUED: TaskResultStatus.READY,
    RunStatus.RUNNING: TaskResultStatus.RUNNING,
    RunStatus.PAUSED: TaskResultStatus.RUNNING,
    RunStatus.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
}
ENDED_BY: dict[str, str] = {
    RunStatus.ABORTED: "taskrunner.exceptions.RunAborted",
    RunStatus.TIMED_OUT: "taskrunner.exceptions.RunTimedOut",
    RunStatus.LOST: "taskrunner.exceptions.RunLost",
    RunStatus.FAILED: "taskrunner.exceptions.RunFailed",
}


def task_name(module_path: str) -> str:
    """The task row's name for a function: a slug, unique per module path."""
    name = TASK_NAME_PREFIX + module_path.replace(".", "-")
    if len(name) <= NAME_MAX_LENGTH:
        return name
    digest = hashlib.sha256(module_path.encode()).hexdigest()[:16]
    return f"{name[: NAME_MAX_LENGTH - 17]}-{digest}"


def child_argv(module_path: str) -> list[str]:
    return [sys.executable, "-m", CHILD_MODULE, module_path]


def module_path_of(task_row: Task) -> str | None:
    """The function a task row runs, or None for a task the backend did not make."""
    argv = task_row.argv
    if (
        task_row.name.startswith(TASK_NAME_PREFIX)
        and isinstance(argv, list)
        and len(argv) == 4
        and argv[1:3] == ["-m", CHILD_MODULE]
    ):
        return argv[3]
    return None


def settings_environment() -> dict[str, str]:
    """The child's DJANGO_SETTINGS_MODULE: this process's, when it is known."""
    module = settings.SETTINGS_MODULE or os.environ.get("DJANGO_SETTINGS_MODULE")
    return {"DJANGO_SETTINGS_MODULE": module} if module else {}


def json_arguments(args: Any, kwargs: Any) -> dict[str, Any]:
    """The run's params; TypeError or ValueError (Django's own) for what JSON cannot hold."""
    arguments = {"args": normalize_json(list(args)), "kwargs": normalize_json(dict(kwargs))}
    # normalize_json lets NaN and infinities through; neither is JSON (nor storable in jsonb).
    json.dumps(arguments, allow_nan=False)
    return arguments


class SupervisedBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias, params):
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - set(OPTION_FIELDS))
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {unknown}; "
                f"allowed: {', '.join(OPTION_FIELDS)}."
            )

    # --- enqueue ---------------------------------------------------------------

    def enqueue(self, task: DjangoTask, args, kwargs) -> TaskResult:
        self.validate_task(task)
        arguments = json_arguments(args, kwargs)
        with transaction.atomic():
            task_row = self._task_row(task)
            if not task_row.enabled:
                raise ActionNotAllowed(f"Task '{task_row.name}' is disabled.")
            run = Run(
                task=task_row, params=arguments, priority=task.priority, run_after=task.run_after
            )
            run.save(force_insert=True)
            RunAction.objects.create(
                run=run, action=ActionKind.START, via=Via.DJANGO, applied_at=run.created_at
            )
            run.record_status_event()
            # Wake the workers as a started task does (on SQLite nothing else
            # would until their idle poll, up to TASKRUNNER_WAKE_IDLE_SECONDS).
            notify("run", run.pk)
        result = self.result_for(run, task)
        task_enqueued.send(type(self), task_result=result)
        return result

    def _task_row(self, task: DjangoTask) -> Task:
        module_path = task.module_path
        defaults: dict[str, Any] = {
            "title": module_path,
            "description": (task.func.__doc__ or "").strip().split("\n\n")[0],
            "argv": child_argv(module_path),
            "cwd": str(getattr(settings, "BASE_DIR", "") or os.getcwd()),
            "env": settings_environment(),
            # The function is the site's own code: it gets the site's settings.
            "pass_env": sorted(SITE_SECRET_VARIABLES),
        }
        # Calls of one function run side by side, as Django's other backends run
        # them: bounded by the workers' --concurrency, unless OPTIONS says otherwise.
        defaults["max_concurrent"] = DEFAULT_MAX_CONCURRENT
        for option in OPTION_FIELDS:
            if option in self.options and _has_field(Task, option):
                defaults[option] = self.options[option]
        row, _ = Task.objects.get_or_create(name=task_name(module_path), defaults=defaults)
        return row

    # --- results ---------------------------------------------------------------

    def get_result(self, result_id) -> TaskResult:
        try:
            run_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        run = Run.objects.select_related("task").filter(pk=run_id).first()
        module_path = module_path_of(run.task) if run is not None else None
        if run is None or module_path is None:
            raise TaskResultDoesNotExist(result_id)
        return self.result_for(run, load_task(module_path))

    def result_for(self, run: Run, task: DjangoTask) -> TaskResult:
        """The TaskResult a run stands for, as it is now."""
        status = STATUS_MAP.get(run.status, TaskResultStatus.FAILED)
        errors = [function_error(run)] if status == TaskResultStatus.FAILED else []
        if task.priority != run.priority:
            task = task.using(priority=run.priority)
        result: TaskResult = TaskResult(
            task=task,
            id=str(run.pk),
            status=status,
            enqueued_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            last_attempted_at=run.started_at,
            args=run.params.get("args", []),
            kwargs=run.params.get("kwargs", {}),
            backend=self.alias,
            errors=errors,
            worker_ids=[str(run.worker_id)] if run.worker_id else [],
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", run.result)
        return result


def load_task(module_path: str) -> DjangoTask:
    """The Task object at `module_path` (ValueError as Django's own unpickling says)."""
    try:
        task = import_string(module_path)
    except ImportError as exc:
        raise ValueError(f"Expected {module_path!r} to point to a Task instance.") from exc
    if not isinstance(task, DjangoTask):
        raise ValueError(f"Expected {module_path!r} to point to a Task instance.")
    return task


def function_error(run: Run) -> TaskError:
    """Why a run failed: what the function raised, or how the runner ended it."""
    if run.status == RunStatus.FAILED:
        reported = reported_exception(run.pk)
        if reported is not None:
            return reported
    return TaskError(
        exception_class_path=ENDED_BY.get(run.status, ENDED_BY[RunStatus.FAILED]),
        traceback=run.error or f"The run ended {run.status}.",
    )


def reported_exception(run_id: int) -> TaskError | None:
    """The exception the function's process reported, from the last events of its run."""
    for event in reversed(read_before(run_id, None, max_events=200, max_bytes=512 * 1024)):
        data = event.data if event.kind == "message" else None
        if isinstance(data, dict) and data.get("name") == EXCEPTION_MESSAGE:
            body = data.get("data") or {}
            return TaskError(
                exception_class_path=str(body.get("exception_class_path", "")),
                traceback=str(body.get("traceback", "")),
            )
    return None


def _has_field(model, name: str) -> bool:
    return any(field.name == name for field in model._meta.get_fields())
