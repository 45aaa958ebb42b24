"""The JSON shapes of the contract (shared/API.md): Run, Task and events."""

from typing import Any

from django.conf import settings
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


def artifact_json(artifact) -> dict[str, Any]:
    return {
        "name": artifact.name,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "content_type": artifact.content_type,
        "created_at": iso(artifact.created_at),
        "url": _url("taskrunner-api:run-artifact", artifact.run_id, artifact.name),
    }


def run_json(run, *, actions=None, artifacts=None) -> dict[str, Any]:
    """The Run resource; `actions` and `artifacts` may be given to avoid their queries.

    Prefetch `actions` and `artifacts` when serialising many runs.
    """
    if actions is None:
        actions = list(run.actions.all())
    if artifacts is None:
        artifacts = run.artifacts.all()
    return {
        "id": run.pk,
        "task": run.task.name,
        "status": run.status,
        "params": run.params,
        "attempt": run.attempt,
        "priority": run.priority,
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
        "artifacts": [artifact_json(a) for a in artifacts],
        "run_after": iso(run.run_after),
        "retry_of": run.retry_of_id,
        "retried_by": run.retried_by_id,
        "schedule": run.schedule_id,
        "scheduled_for": iso(run.scheduled_for),
        "url": _url("taskrunner-api:run", run.pk),
        "events_url": _url("taskrunner-api:run-events", run.pk),
        "page_url": _url("taskrunner:run", run.pk),
    }


def schedule_json(schedule, *, task_name: str | None = None) -> dict[str, Any]:
    """The Schedule resource; `last_run` is the id of the last run it started."""
    return {
        "id": schedule.pk,
        "task": task_name or schedule.task.name,
        "cron": schedule.cron or None,
        "every": schedule.every,
        "timezone": schedule.timezone or settings.TIME_ZONE,
        "params": schedule.params,
        "enabled": schedule.enabled,
        "overlap": schedule.overlap,
        "next_run_at": iso(schedule.next_run_at),
        "last_run": schedule.last_run_id,
        "url": _url("taskrunner-api:schedule", schedule.pk),
    }


def task_json(task, *, active_runs=None, last_run=None) -> dict[str, Any]:
    schedules = list(task.schedules.all())  # prefetched by lists of tasks
    times = [s.next_run_at for s in schedules if s.enabled and s.next_run_at]
    return {
        "name": task.name,
        "title": task.display_title,
        "description": task.description,
        "params": task.params,
        "max_concurrent": task.max_concurrent,
        "timeout": task.timeout,
        "grace": task.grace,
        "enabled": task.enabled,
        "retries": task.retries,
        "retry_delay": task.retry_delay,
        "keep_days": task.keep_days,
        "keep_runs": task.keep_runs,
        "schedules": [schedule_json(s, task_name=task.name) for s in schedules],
        "next_run_at": iso(min(times)) if times else None,
        "active_runs": [run_json(r) for r in (active_runs or [])],
        "last_run": run_json(last_run) if last_run is not None else None,
        "url": _url("taskrunner-api:task", task.name),
    }


def event_payload(event) -> dict[str, Any]:
    """The `data:` of an SSE event for a store `Event` (built in `taskrunner.events.payloads`)."""
    return payloads.payload(event)
