"""Schedule endpoints (shared/API.md, "Schedules") and the `run_after` of a start."""

from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.dateparse import parse_datetime

from taskrunner.api.access import api_view, read_json
from taskrunner.api.errors import invalid, not_found
from taskrunner.models import Schedule, Task
from taskrunner.schedules import schedule_fields, validate_schedule
from taskrunner.serializers import schedule_json

ADD = "taskrunner.add_schedule"
CHANGE = "taskrunner.change_schedule"
DELETE = "taskrunner.delete_schedule"


def parse_run_after(value: Any) -> datetime | None:
    """An ISO time with an offset, or None; a naive or malformed time is a 400 naming it."""
    if value is None:
        return None
    when = None
    if isinstance(value, str):
        try:
            when = parse_datetime(value.strip())
        except ValueError:
            when = None
    if when is None:
        raise invalid("run_after is not an ISO time.", {"run_after": "an ISO 8601 time"})
    if when.tzinfo is None:
        message = "a time with an offset (Z or +01:00): a naive time is ambiguous"
        raise invalid(f"run_after needs {message}.", {"run_after": message})
    return when


def _json(data: Any, status: int = 200, **headers: str) -> JsonResponse:
    response = JsonResponse(data, status=status)
    for name, value in headers.items():
        response[name] = value
    response["Cache-Control"] = "no-store"
    return response


def apply_fields(schedule: Schedule, body: dict[str, Any]) -> None:
    """Set the body's fields on `schedule`, check them, save; a 400 naming each bad one.

    Nothing is saved unless every field is good. A change of timing (or
    enabling) starts the schedule's times afresh from now.
    """
    fields = schedule_fields(body)
    if fields:
        raise invalid("Unknown fields.", fields)
    retime = False
    if not isinstance(body.get("cron", ""), str | None):
        raise invalid("Bad cron.", {"cron": "a cron expression (text)"})
    if "cron" in body:
        schedule.cron, retime = body["cron"] or "", True
        if body["cron"] and "every" not in body:
            schedule.every = None  # giving one replaces the other
    if "every" in body:
        schedule.every, retime = body["every"], True
        if body["every"] is not None and "cron" not in body:
            schedule.cron = ""
    if "timezone" in body:
        if not isinstance(body["timezone"], str | None):
            raise invalid("Bad timezone.", {"timezone": "an IANA time zone name"})
        schedule.timezone, retime = body["timezone"] or "", True
    if "params" in body:
        schedule.params = body["params"]
    if "overlap" in body:
        schedule.overlap = body["overlap"]
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise invalid("Bad enabled.", {"enabled": "true or false"})
        retime = retime or (body["enabled"] and not schedule.enabled)
        schedule.enabled = body["enabled"]
    errors = validate_schedule(schedule)
    if errors:
        raise invalid("Bad schedule.", errors)
    if retime:
        schedule.next_run_at = None  # save() computes the first time from now
    schedule.save()


def _get(schedule_id: int) -> Schedule:
    schedule = Schedule.objects.select_related("task").filter(pk=schedule_id).first()
    if schedule is None:
        raise not_found(f"No schedule with id {schedule_id}.")
    return schedule


@api_view({"GET": None})
def schedule_list(request: HttpRequest) -> HttpResponse:
    schedules = Schedule.objects.select_related("task").order_by("id")
    name = request.GET.get("task")
    if name:
        schedules = schedules.filter(task__name=name)
    return _json({"schedules": [schedule_json(s) for s in schedules]})


@api_view({"POST": ADD})
def task_schedules(request: HttpRequest, name: str) -> HttpResponse:
    """POST /api/tasks/{name}/schedules/: add a schedule to the task."""
    task = Task.objects.filter(name=name).first()
    if task is None:
        raise not_found(f"No task named {name!r}.")
    body = read_json(request)
    schedule = Schedule(task=task, overlap="skip")
    apply_fields(schedule, body)
    data = schedule_json(schedule)
    return _json(data, status=201, Location=data["url"])


@api_view({"GET": None, "PATCH": CHANGE, "DELETE": DELETE})
def schedule_detail(request: HttpRequest, schedule_id: int) -> HttpResponse:
    schedule = _get(schedule_id)
    if request.method == "DELETE":
        schedule.delete()  # its runs keep their history (schedule becomes null)
        return HttpResponse(status=204)
    if request.method == "PATCH":
        apply_fields(schedule, read_json(request))
        schedule = _get(schedule_id)
    return _json(schedule_json(schedule))
