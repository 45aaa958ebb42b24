"""The JSON shapes of the contract (shared/API.md): Run, Task and events."""

from typing import Any

from django.urls import NoReverseMatch, reverse

from taskrunner.events import payloads
from taskrunner.events.payloads import iso


def _url(name: str, *args: Any) -> str | None:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def action_json(action) -> dict[str, Any]:
    return {
        "action": action.action,
        "by": action.by or None,
        "via": action.via,
        "at": iso(action.at),
    }


def run_json(run, *, actions=None) -> dict[str, Any]:
    """The Run resource; `actions` may be given to avoid a query per run."""
    if actions is None:
        actions = list(run.actions.all())
    return {
        "id": run.pk,
        "task": run.task.name,
        "status": run.status,
        "params": run.params,
        "attempt": run.attempt,
        "progress": run.progress,
        "result": run.result,
        "error": run.error or None,
        "exit_code": run.exit_code,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "requested_by": run.requested_by.get_username() if run.requested_by_id else None,
        "host": run.hostname or None,
        "pid": run.pid,
        "cpu_percent": run.cpu_percent,
        "memory_bytes": run.memory_bytes,
        "last_seq": run.last_seq,
        "actions": [action_json(a) for a in actions],
        "url": _url("taskrunner-api:run", run.pk),
        "events_url": _url("taskrunner-api:run-events", run.pk),
        "page_url": _url("taskrunner:run", run.pk),
    }


def task_json(task, *, active_runs=None, last_run=None) -> dict[str, Any]:
    return {
        "name": task.name,
        "title": task.display_title,
        "description": task.description,
        "params": task.params,
        "max_concurrent": task.max_concurrent,
        "timeout": task.timeout,
        "grace": task.grace,
        "enabled": task.enabled,
        "active_runs": [run_json(r) for r in (active_runs or [])],
        "last_run": run_json(last_run) if last_run is not None else None,
        "url": _url("taskrunner-api:task", task.name),
    }


def event_payload(event) -> dict[str, Any]:
    """The `data:` of an SSE event for a store `Event` (built in `taskrunner.events.payloads`)."""
    return payloads.payload(event)
