"""The back-office pages: dashboard, run, task and timeline, and their forms.

Every page is rendered on the server in the admin's look; a small ES module per
page streams and updates it (STYLE habit 13). Starting and controlling runs are
plain HTML forms POSTing here; the JS may submit the same forms with `fetch`
and `Accept: application/json` to stay on the page, and then gets JSON back.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.db.models import Max, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from taskrunner import coming as coming_mod
from taskrunner.models import (
    FINAL_STATUSES,
    ActionNotAllowed,
    Run,
    RunStatus,
    Schedule,
    Task,
)
from taskrunner.params import ParamError
from taskrunner.schedule_views import schedule_permissions
from taskrunner.serializers import iso

START_PERM = "taskrunner.start_run"
CONTROL_PERM = "taskrunner.control_run"
HISTORY_PAGE_SIZE = 25
CHART_RUNS = 40
# The log viewer starts with this many events from the end of the run.
LOG_TAIL = 1000
MAX_INPUT_CHARS = 64 * 1024

# Window choices of the timeline: (key, label, seconds).
TIMELINE_WINDOWS = [
    ("15m", "15 minutes", 15 * 60),
    ("1h", "1 hour", 3600),
    ("6h", "6 hours", 6 * 3600),
    ("24h", "24 hours", 24 * 3600),
    ("7d", "7 days", 7 * 24 * 3600),
]
DEFAULT_WINDOW = "1h"
TIMELINE_MAX_RUNS = 2000


# --- helpers ------------------------------------------------------------------


def _api_url(name: str, *args: Any) -> str:
    """A URL of the JSON API (taskrunner.api.urls), for the pages' scripts."""
    return reverse(f"taskrunner-api:{name}", args=args)


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    """The admin's context (header, user tools, theme toggle) plus the page's own."""
    context = admin.site.each_context(request)
    context["is_nav_sidebar_enabled"] = False  # the pages need the width
    context.update(
        title=title,
        can_start=request.user.has_perm(START_PERM),
        can_control=request.user.has_perm(CONTROL_PERM),
        events_feed_url=_api_url("events"),
        api_runs_url=_api_url("runs"),
    )
    context.update(extra)
    return context


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _refuse(request: HttpRequest, message: str, status: int, back: str) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": {"message": message}}, status=status)
    if status == 403:
        return HttpResponse(message, status=403, content_type="text/plain")
    messages.error(request, message)
    return redirect(back)


def _safe_next(request: HttpRequest, default: str) -> str:
    """Where to go back after a form: a same-site path from `next`, or `default`."""
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _last_final_runs() -> dict[int, Run]:
    """The newest finished run of each task (task id -> run), in two queries."""
    ids = (
        Run.objects.final()
        .order_by()
        .values("task_id")
        .annotate(last=Max("id"))
        .values_list("last", flat=True)
    )
    return {run.task_id: run for run in Run.objects.filter(id__in=list(ids))}


def _param_fields(task: Task) -> list[dict[str, Any]]:
    """The task's declared parameters, shaped for the start form."""
    fields = []
    for spec in task.params or []:
        default = spec.get("default")
        if isinstance(default, bool):
            default = "true" if default else "false"
        choices = spec.get("choices")
        fields.append(
            {
                "name": spec["name"],
                "type": spec.get("type", "str"),
                "required": spec.get("required", default is None),
                "default": "" if default is None else default,
                "choices": [
                    ("true" if c else "false") if isinstance(c, bool) else c for c in choices
                ]
                if choices
                else None,
                "input_type": {"int": "number", "float": "number"}.get(
                    spec.get("type", "str"), "text"
                ),
                "step": "any" if spec.get("type") == "float" else "1",
            }
        )
    return fields


# --- pages --------------------------------------------------------------------


@require_GET
@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    active = list(Run.objects.active().select_related("task", "requested_by").order_by("id"))
    last_final = _last_final_runs()
    active_by_task: dict[int, list[Run]] = {}
    for run in active:
        active_by_task.setdefault(run.task_id, []).append(run)
    rows = []
    next_runs = dict(
        Schedule.objects.filter(enabled=True)
        .values("task_id")
        .annotate(at=Min("next_run_at"))
        .values_list("task_id", "at")
    )
    for task in Task.objects.all():
        runs = active_by_task.get(task.pk, [])
        rows.append(
            {
                "task": task,
                "next_run_at": next_runs.get(task.pk),
                "active": runs,
                "current": runs[-1] if runs else None,
                "last": last_final.get(task.pk),
                "fields": _param_fields(task),
            }
        )
    return render(
        request,
        "taskrunner/dashboard.html",
        _context(request, "Tasks", rows=rows, active=active),
    )


@require_GET
@staff_member_required
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(Run.objects.select_related("task", "requested_by"), pk=pk)
    return render(
        request,
        "taskrunner/run.html",
        _context(
            request,
            f"Run {run.pk} of {run.task.display_title}",
            run=run,
            actions=list(run.actions.order_by("id")),
            api_run_url=_api_url("run", run.pk),
            events_url=_api_url("run-events", run.pk),
            event_list_url=_api_url("run-event-list", run.pk),
            download_url=_api_url("run-log", run.pk) + "?download=1",
            log_tail=LOG_TAIL,
        ),
    )


@require_GET
@staff_member_required
def task_detail(request: HttpRequest, name: str) -> HttpResponse:
    return render_task_page(request, get_object_or_404(Task, name=name))


def render_task_page(request: HttpRequest, task: Task, http_status: int = 200, **extra: Any):
    """The task page; `extra` context such as a schedule form with its errors."""
    status = request.GET.get("status") or ""
    if status not in RunStatus.values:
        status = ""
    history = task.runs.select_related("requested_by").order_by("-id")
    if status:
        history = history.filter(status=status)
    page = Paginator(history, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    recent = list(
        task.runs.filter(status__in=FINAL_STATUSES, started_at__isnull=False).order_by("-id")[
            :CHART_RUNS
        ]
    )
    recent.reverse()
    edit_url = None
    if request.user.is_superuser:
        edit_url = reverse("admin:taskrunner_task_change", args=[task.pk])
    return render(
        request,
        "taskrunner/task.html",
        _context(
            request,
            task.display_title,
            task=task,
            fields=_param_fields(task),
            page=page,
            status=status,
            statuses=RunStatus.choices,
            chart=duration_chart(recent),
            edit_url=edit_url,
            show_env_values=request.user.is_superuser,
            active_count=task.runs.active().count(),
            schedules=list(task.schedules.select_related("last_run")),
            schedule_form=extra.pop("schedule_form", {"values": {}, "errors": {}}),
            site_time_zone=settings.TIME_ZONE,
            **schedule_permissions(request.user),
            **extra,
        ),
        status=http_status,
    )


def _timeline_window(request: HttpRequest) -> tuple[str, int]:
    """The `?window=` key of the timeline and its seconds (the default when unknown)."""
    choices = {key: seconds for key, _, seconds in TIMELINE_WINDOWS}
    window = request.GET.get("window") or DEFAULT_WINDOW
    if window not in choices:
        window = DEFAULT_WINDOW
    return window, choices[window]


@require_GET
@staff_member_required
def timeline(request: HttpRequest) -> HttpResponse:
    """The runs of the window behind now, and the coming runs of as long a window ahead."""
    window, span = _timeline_window(request)
    now = timezone.now()
    start, end = now - timedelta(seconds=span), now + timedelta(seconds=span)
    # The newest runs of the window (a week of a busy task could be thousands).
    runs = list(
        Run.objects.filter(created_at__lt=now)
        .exclude(finished_at__lt=start)
        .select_related("task")
        .order_by("-id")[:TIMELINE_MAX_RUNS]
    )
    runs.reverse()
    ahead = coming_mod.coming(now, end)
    return render(
        request,
        "taskrunner/timeline.html",
        _context(
            request,
            "Timeline",
            gantt=gantt(runs, list(Task.objects.all()), start, end, now=now, coming=ahead.marks),
            coming=ahead,
            per_schedule=coming_mod.PER_SCHEDULE,
            coming_total=coming_mod.TOTAL,
            window=window,
            windows=TIMELINE_WINDOWS,
            span=span,
        ),
    )


@require_GET
@staff_member_required
def timeline_coming(request: HttpRequest) -> JsonResponse:
    """The timeline's coming runs as JSON, for its script to redraw them.

    The page asks again when the live feed shows a new run, when a drawn time
    has passed, when the feed reconnects, and every few minutes (see
    `taskrunner.coming` for why each).
    """
    _, span = _timeline_window(request)
    now = timezone.now()
    ahead = coming_mod.coming(now, now + timedelta(seconds=span))
    return JsonResponse(
        {
            "now": iso(now),
            "marks": [coming_mod.as_json(mark) for mark in ahead.marks],
            "capped": ahead.capped,
        }
    )


# --- forms --------------------------------------------------------------------


@require_POST
@staff_member_required
def start_task(request: HttpRequest, name: str) -> HttpResponse:
    task = get_object_or_404(Task, name=name)
    back = _safe_next(request, reverse("taskrunner:task", args=[task.name]))
    if not request.user.has_perm(START_PERM):
        return _refuse(request, "You may not start runs.", 403, back)
    declared = {spec["name"]: spec for spec in task.params or []}
    given: dict[str, Any] = {}
    for field, spec in declared.items():
        if spec.get("type") == "bool":
            # A checkbox sends nothing when unticked: that means false.
            given[field] = field in request.POST and request.POST[field] not in ("", "false")
        elif request.POST.get(field, "") != "":
            given[field] = request.POST[field]
    try:
        run_after = _run_after_from_form(request.POST.get("run_after", ""))
    except ValueError as exc:
        return _refuse(request, f"Could not start {task.name}: {exc}", 400, back)
    try:
        run = task.start(given, user=request.user, via="page", run_after=run_after)
    except ParamError as exc:
        text = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
        return _refuse(request, f"Could not start {task.name}: {text}", 400, back)
    except ActionNotAllowed as exc:
        return _refuse(request, str(exc), 409, back)
    target = reverse("taskrunner:run", args=[run.pk])
    if _wants_json(request):
        return JsonResponse({"id": run.pk, "page_url": target}, status=202)
    messages.success(request, f"Run {run.pk} of {task.display_title} queued.")
    return redirect(target)


def _run_after_from_form(text: str):
    """The start form's "start later": a local time (the site's time zone), or none."""
    text = text.strip()
    if not text:
        return None
    when = parse_datetime(text)
    if when is None:
        raise ValueError(f"start later: {text!r} is not a date and time.")
    if when.tzinfo is None:
        when = timezone.make_aware(when)  # a datetime-local input: the site's time zone
    return when


@require_POST
@staff_member_required
def control_run(request: HttpRequest, pk: str, action: str) -> HttpResponse:
    """Pause, resume, abort (the URL allows only these) or a line of input."""
    run = get_object_or_404(Run.objects.select_related("task"), pk=int(pk))
    back = _safe_next(request, reverse("taskrunner:run", args=[run.pk]))
    if not request.user.has_perm(CONTROL_PERM):
        return _refuse(request, "You may not control runs.", 403, back)
    data = ""
    if action == "input":
        data = request.POST.get("data", "")
        if len(data) > MAX_INPUT_CHARS or "\n" in data or "\r" in data:
            return _refuse(request, "Input is one line of at most 64 KiB.", 400, back)
    try:
        run.request(action, user=request.user, via="page", data=data)
    except ActionNotAllowed as exc:
        return _refuse(request, str(exc), 409, back)
    if _wants_json(request):
        return JsonResponse({"id": run.pk, "action": action}, status=202)
    done = {"pause": "Pause", "resume": "Resume", "abort": "Abort", "input": "Input"}[action]
    messages.success(request, f"{done} of run {run.pk} requested.")
    return redirect(back)


# --- drawings -------------------------------------------------------------------

CHART_W, CHART_H, CHART_LEFT, CHART_BOTTOM, CHART_TOP = 1100, 220, 64, 24, 12
AXIS_UNITS = [(1, "s"), (60, "min"), (3600, "h")]


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _nice_ceiling(value: float) -> float:
    """The next 1, 2 or 5 × 10^k at or above value (for a readable axis)."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * 10**exp >= value:
            return step * 10**exp
    return 10 ** (exp + 1)


def duration_chart(runs: list[Run]) -> dict[str, Any] | None:
    """Geometry of an SVG bar chart of the runs' durations (oldest left, newest right)."""
    if not runs:
        return None
    durations = [run.duration or 0.0 for run in runs]
    longest = max(durations)
    unit, unit_name = next(
        ((u, n) for u, n in reversed(AXIS_UNITS) if longest >= 2 * u), AXIS_UNITS[0]
    )
    top = _nice_ceiling(longest / unit) * unit
    plot_w = CHART_W - CHART_LEFT - 8
    plot_h = CHART_H - CHART_BOTTOM - CHART_TOP
    slot = plot_w / max(len(runs), 12)
    offset = CHART_LEFT + plot_w - slot * len(runs)  # the newest run on the right
    bars = []
    for index, (run, seconds) in enumerate(zip(runs, durations, strict=True)):
        height = max(1.5, plot_h * seconds / top)
        bars.append(
            {
                "run": run,
                "x": round(offset + index * slot + slot * 0.15, 1),
                "y": round(CHART_TOP + plot_h - height, 1),
                "width": round(slot * 0.7, 1),
                "height": round(height, 1),
                "label": format_seconds(seconds),
                "url": reverse("taskrunner:run", args=[run.pk]),
            }
        )
    grid = []
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        y = round(CHART_TOP + plot_h - plot_h * fraction, 1)
        value = top * fraction / unit
        grid.append({"y": y, "label": f"{value:g} {unit_name}", "text_y": y + 4})
    return {
        "width": CHART_W,
        "height": CHART_H,
        "left": CHART_LEFT,
        "right": CHART_W - 8,
        "baseline": CHART_TOP + plot_h,
        "bars": bars,
        "grid": grid,
        "statuses": sorted({run.status for run in runs}),
    }


GANTT_W, GANTT_LABEL, GANTT_ROW, GANTT_AXIS = 1240, 190, 30, 26
GANTT_TICKS = 8  # intervals of the time axis
COMING_W = 6  # width of a coming run's mark


def gantt(
    runs: list[Run],
    tasks: list[Task],
    start,
    end,
    *,
    now=None,
    coming: list[coming_mod.Mark] | None = None,
) -> dict[str, Any]:
    """Geometry of the timeline: a row per task, a bar per run, an axis of times.

    The axis runs from `start` to `end`; `now` (default: `end`) is where
    running bars end, and the `coming` runs (`taskrunner.coming`) are marks
    after it, an overdue one at it. The page's script redraws the same
    geometry as time passes, from the `data-start`/`data-end` of each bar
    and the `data-at` of each mark, so the server and the JS agree.
    """
    now = now or end
    span = (end - start).total_seconds()
    plot_w = GANTT_W - GANTT_LABEL - 24
    by_task: dict[int, list[Run]] = {}
    for run in runs:
        by_task.setdefault(run.task_id, []).append(run)
    marks_by_task: dict[int, list[coming_mod.Mark]] = {}
    for mark in coming or []:
        marks_by_task.setdefault(mark.task.pk, []).append(mark)

    def x_of(moment) -> float:
        offset = (moment - start).total_seconds() / span
        return round(GANTT_LABEL + min(1.0, max(0.0, offset)) * plot_w, 2)

    rows = []
    for index, task in enumerate(tasks):
        y = GANTT_AXIS + index * GANTT_ROW
        bars = []
        for run in by_task.get(task.pk, []):
            begin = run.started_at or run.created_at
            finish = run.finished_at
            x0 = x_of(begin)
            x1 = x_of(finish or now)
            bars.append(
                {
                    "run": run,
                    "x": x0,
                    "width": round(max(2.0, x1 - x0), 2),
                    "start": iso(begin),
                    "end": iso(finish) if finish else "",
                    "duration": format_seconds(((finish or now) - begin).total_seconds()),
                    "url": reverse("taskrunner:run", args=[run.pk]),
                }
            )
        marks = [
            dict(coming_mod.as_json(mark), x=round(x_of(max(mark.at, now)) - COMING_W / 2, 2))
            for mark in marks_by_task.get(task.pk, [])
        ]
        rows.append(
            {
                "task": task,
                "y": y,
                "bar_y": y + 6,
                "text_y": y + GANTT_ROW / 2 + 4,
                "bars": bars,
                "marks": marks,
                "url": reverse("taskrunner:task", args=[task.name]),
            }
        )
    ticks = []
    for i in range(GANTT_TICKS + 1):
        moment = start + (end - start) * (i / GANTT_TICKS)
        ticks.append(
            {
                "x": x_of(moment),
                "label": timezone.localtime(moment).strftime(
                    "%H:%M" if span <= 24 * 3600 else "%d %b %H:%M"
                ),
            }
        )
    height = GANTT_AXIS + max(1, len(tasks)) * GANTT_ROW + 6
    now_x = x_of(now)
    return {
        "width": GANTT_W,
        "height": height,
        "label_w": GANTT_LABEL,
        "plot_right": GANTT_LABEL + plot_w,
        "now_x": now_x,
        "ahead_w": round(GANTT_LABEL + plot_w - now_x, 2),
        "plot_h": height - 6 - (GANTT_AXIS - 8),
        "axis_y": GANTT_AXIS - 8,
        "row_h": GANTT_ROW,
        "bar_h": GANTT_ROW - 12,
        "mark_w": COMING_W,
        "rows": rows,
        "ticks": ticks,
        "start": iso(start),
        "end": iso(end),
        "now": iso(now),
        "grid_bottom": height - 6,
    }
