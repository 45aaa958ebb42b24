"""The JSON shapes of the contract (shared/API.md): Run, Task and events."""

from datetime import UTC, datetime
from typing import Any

from django.urls import NoReverseMatch, reverse


def iso(value: datetime | None) -> str | None:
    """UTC with milliseconds and a Z, as in the contract's examples."""
    if value is None:
        return None
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


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
    """The `data:` of an SSE event for a stored RunEvent."""
    if event.kind == "log":
        payload = {
            "seq": event.seq,
            "stream": event.stream,
            "line": event.text,
            "ts": iso(event.ts),
        }
        if event.data and event.data.get("continued"):
            payload["continued"] = True
        return payload
    payload = dict(event.data or {})
    payload["seq"] = event.seq
    payload["ts"] = iso(event.ts)
    return payload
