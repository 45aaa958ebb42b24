"""The JSON endpoints of shared/API.md. Each view: access, input, model method, JSON.

Streams (SSE, the log as text) are in `taskrunner.api.streams`.
"""

from typing import Any
from urllib.parse import urlencode

from django.db.models import Max, Prefetch, prefetch_related_objects
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from taskrunner.api.access import api_view, read_json, require_perm
from taskrunner.api.errors import ApiError, conflict, invalid, not_found
from taskrunner.api.schedules import parse_run_after
from taskrunner.events import store
from taskrunner.models import (
    ACTIVE_STATUSES,
    ActionKind,
    ActionNotAllowed,
    Run,
    RunAction,
    RunStatus,
    Task,
    Via,
)
from taskrunner.params import ParamError
from taskrunner.serializers import event_payload, run_json, task_json

START = "taskrunner.start_run"
CONTROL = "taskrunner.control_run"
MAX_ID = 2**63 - 1  # beyond this no database can hold the id: it is simply unknown


# --- lookups ---------------------------------------------------------------


def runs_for_json():
    return Run.objects.select_related("task", "requested_by").prefetch_related(
        Prefetch("actions", queryset=RunAction.objects.order_by("id")), "artifacts"
    )


def get_task(name: str) -> Task:
    task = Task.objects.filter(name=name).first()
    if task is None:
        raise not_found(f"No task named {name!r}.")
    return task


def get_run(run_id: int) -> Run:
    run = runs_for_json().filter(pk=run_id).first() if 0 < run_id <= MAX_ID else None
    if run is None:
        raise not_found(f"No run with id {run_id}.")
    return run


def _int_param(request: HttpRequest, name: str, default: int | None, low: int, high: int):
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer.", {name: "must be an integer"}) from None
    if not low <= value <= high:
        message = f"must be between {low} and {high}"
        raise invalid(f"{name} {message}.", {name: message})
    return value


def _json(data: Any, status: int = 200, **headers: str) -> JsonResponse:
    response = JsonResponse(data, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    response["Cache-Control"] = "no-store"
    return response


def _accepted(run: Run) -> JsonResponse:
    return _json(run_json(run), status=202)


# --- tasks -----------------------------------------------------------------


@api_view({"GET": None})
def api_root(request: HttpRequest) -> HttpResponse:
    return _json(
        {
            "tasks": reverse("taskrunner-api:tasks"),
            "runs": reverse("taskrunner-api:runs"),
            "events": reverse("taskrunner-api:events"),
        }
    )


def _tasks_json(tasks: list[Task]) -> list[dict[str, Any]]:
    """Tasks with their active and last runs, in a fixed number of queries."""
    ids = [task.pk for task in tasks]
    prefetch_related_objects(tasks, "schedules")
    active: dict[int, list[Run]] = {}
    for run in runs_for_json().filter(task_id__in=ids, status__in=ACTIVE_STATUSES).order_by("id"):
        active.setdefault(run.task_id, []).append(run)
    last_ids = Run.objects.filter(task_id__in=ids).values("task_id").annotate(last=Max("id"))
    last = {
        run.task_id: run for run in runs_for_json().filter(pk__in=[r["last"] for r in last_ids])
    }
    return [
        task_json(task, active_runs=active.get(task.pk, []), last_run=last.get(task.pk))
        for task in tasks
    ]


@api_view({"GET": None})
def task_list(request: HttpRequest) -> HttpResponse:
    return _json({"tasks": _tasks_json(list(Task.objects.order_by("name")))})


def _start(request: HttpRequest, task: Task, body: dict[str, Any]) -> JsonResponse:
    require_perm(request, START)
    run_after = parse_run_after(body.get("run_after"))
    try:
        run = task.start(body.get("params"), user=request.user, via=Via.API, run_after=run_after)
    except ParamError as exc:
        fields = {
            name if name == "params" else f"params.{name}": message
            for name, message in exc.errors.items()
        }
        raise invalid("Bad parameters.", fields) from None
    except ActionNotAllowed as exc:
        raise conflict(str(exc)) from None
    run = get_run(run.pk)
    return _json(run_json(run), status=202, Location=run_json(run)["url"])


@api_view({"POST": None})
def task_runs(request: HttpRequest, name: str) -> HttpResponse:
    """POST /api/tasks/{name}/runs/: queue a run; answers at once."""
    task = get_task(name)
    body = read_json(request)
    unknown = set(body) - {"params", "run_after"}
    if unknown:
        raise invalid("Unknown fields.", {field: "unknown field" for field in sorted(unknown)})
    return _start(request, task, body)


def _act_on_task(request: HttpRequest, task: Task, action: str) -> JsonResponse:
    require_perm(request, CONTROL)
    acted = []
    for run in Run.objects.filter(task=task, status__in=ACTIVE_STATUSES).order_by("id"):
        try:
            run.request(action, user=request.user, via=Via.API)
        except ActionNotAllowed:
            continue
        acted.append(run.pk)
    if not acted:
        raise conflict(f"No run of task {task.name!r} can {action} now.")
    return _json({"runs": [run_json(run) for run in runs_for_json().filter(pk__in=acted)]}, 202)


@api_view({"GET": None, "POST": None, "DELETE": None})
def task_detail(request: HttpRequest, name: str) -> HttpResponse:
    """One task; POST and DELETE are the task-scoped shorthand of the original design."""
    task = get_task(name)
    if request.method == "DELETE":
        return _act_on_task(request, task, ActionKind.ABORT)
    if request.method == "POST":
        body = read_json(request)
        action = body.get("action")
        if action == "start":
            return _start(request, task, body)
        if action in (ActionKind.PAUSE, ActionKind.RESUME, ActionKind.ABORT):
            return _act_on_task(request, task, action)
        raise invalid("Say what to do.", {"action": "must be one of start, pause, resume, abort"})
    return _json(_tasks_json([task])[0])


# --- runs ------------------------------------------------------------------


@api_view({"GET": None})
def run_list(request: HttpRequest) -> HttpResponse:
    limit = _int_param(request, "limit", 50, 1, 500)
    before = _int_param(request, "before", None, 1, MAX_ID)
    runs = runs_for_json().order_by("-id")
    task = request.GET.get("task")
    if task:
        runs = runs.filter(task__name=task)
    status = request.GET.get("status")
    if status:
        wanted = status.split(",")
        bad = [s for s in wanted if s not in RunStatus.values]
        if bad:
            raise invalid(
                "Unknown status.", {"status": "must be one of " + ", ".join(RunStatus.values)}
            )
        runs = runs.filter(status__in=wanted)
    if before is not None:
        runs = runs.filter(pk__lt=before)
    page = list(runs[: limit + 1])
    next_url = None
    if len(page) > limit:
        page = page[:limit]
        query = {k: v for k, v in request.GET.items() if k != "before"}
        query["before"] = str(page[-1].pk)
        next_url = f"{reverse('taskrunner-api:runs')}?{urlencode(query)}"
    return _json({"runs": [run_json(run) for run in page], "next": next_url})


def _no_body(request: HttpRequest) -> None:
    """Pause, resume and abort take no fields: anything sent is a mistake worth saying."""
    body = read_json(request)
    if body:
        raise invalid("Unknown fields.", {field: "unknown field" for field in sorted(body)})


def _control(request: HttpRequest, run_id: int, action: str, data: str = "") -> JsonResponse:
    # Only the run itself to record the request; its whole JSON (the audit
    # trail, the artifacts) once, for the answer.
    run = (
        Run.objects.select_related("task").filter(pk=run_id).first()
        if 0 < run_id <= MAX_ID
        else None
    )
    if run is None:
        raise not_found(f"No run with id {run_id}.")
    try:
        run.request(action, user=request.user, via=Via.API, data=data, fresh=True)
    except ActionNotAllowed as exc:
        raise conflict(str(exc)) from None
    return _accepted(get_run(run_id))


@api_view({"GET": None, "DELETE": CONTROL})
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    if request.method == "DELETE":
        return _control(request, run_id, ActionKind.ABORT)
    return _json(run_json(get_run(run_id)))


@api_view({"POST": CONTROL})
def run_pause(request: HttpRequest, run_id: int) -> HttpResponse:
    _no_body(request)
    return _control(request, run_id, ActionKind.PAUSE)


@api_view({"POST": CONTROL})
def run_resume(request: HttpRequest, run_id: int) -> HttpResponse:
    _no_body(request)
    return _control(request, run_id, ActionKind.RESUME)


@api_view({"POST": CONTROL})
def run_abort(request: HttpRequest, run_id: int) -> HttpResponse:
    _no_body(request)
    return _control(request, run_id, ActionKind.ABORT)


@api_view({"POST": CONTROL})
def run_input(request: HttpRequest, run_id: int) -> HttpResponse:
    body = read_json(request)
    data = body.get("data")
    if not isinstance(data, str):
        raise invalid('Send {"data": "a line"}.', {"data": "must be a string"})
    if data.endswith("\n"):
        data = data[:-1]
    if "\n" in data or "\r" in data:
        raise invalid("Send one line at a time.", {"data": "must be one line"})
    get_run(run_id)
    return _control(request, run_id, ActionKind.INPUT, data)


EVENT_LIST_BYTES = 2 * 1024 * 1024  # of event text per page, whatever `limit` says


@api_view({"GET": None})
def run_event_list(request: HttpRequest, run_id: int) -> HttpResponse:
    """Events before `?before=SEQ` (or the last ones), oldest first: the log viewer's pager.

    A page stops at `limit` events or about 2 MiB of their text, whichever
    comes first; the next page is asked for with `before` = its first seq.
    """
    run = get_run(run_id)
    before = _int_param(request, "before", None, 1, MAX_ID)
    limit = _int_param(request, "limit", 1000, 1, 5000)
    page = store.read_before(run.pk, before, max_events=limit, max_bytes=EVENT_LIST_BYTES)
    return _json(
        {
            "events": [{"seq": e.seq, "event": e.kind, "data": event_payload(e)} for e in page],
            "first_seq": store.first_seq(run.pk),
        }
    )


def not_found_view(request: HttpRequest, path: str = "") -> HttpResponse:
    """Anything else under /api/: JSON 404, not Django's HTML page."""
    error = ApiError("not_found", f"No API endpoint at {request.path}.")
    return error.response()
