"""The task page's schedule forms: add, enable, disable, remove (plain HTML forms).

A bad schedule re-renders the task page with the form's errors next to its
fields (nothing is saved); the rules are the API's (`taskrunner.schedules`).
"""

from typing import Any

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from taskrunner.models import Schedule, ScheduleOverlap, Task
from taskrunner.schedules import validate_schedule

ADD_PERM = "taskrunner.add_schedule"
CHANGE_PERM = "taskrunner.change_schedule"
DELETE_PERM = "taskrunner.delete_schedule"


def schedule_permissions(user) -> dict[str, bool]:
    return {
        "can_add_schedule": user.has_perm(ADD_PERM),
        "can_change_schedule": user.has_perm(CHANGE_PERM),
        "can_delete_schedule": user.has_perm(DELETE_PERM),
    }


def _params_from_form(task: Task, request: HttpRequest) -> dict[str, Any]:
    """The declared parameters given in the form (`param-NAME`); empty ones take the default."""
    given: dict[str, Any] = {}
    for spec in task.params or []:
        value = request.POST.get(f"param-{spec['name']}", "")
        if value != "":
            given[spec["name"]] = value
    return given


@require_POST
@staff_member_required
def add_schedule(request: HttpRequest, name: str) -> HttpResponse:
    from taskrunner.views import render_task_page  # the page this form lives on

    task = get_object_or_404(Task, name=name)
    if not request.user.has_perm(ADD_PERM):
        return HttpResponse("You may not add schedules.", status=403, content_type="text/plain")
    kind = request.POST.get("kind", "cron")
    cron = request.POST.get("cron", "").strip() if kind == "cron" else ""
    every: Any = None
    errors: dict[str, str] = {}
    if kind == "every":
        raw = request.POST.get("every", "").strip()
        try:
            every = float(raw)
        except ValueError:
            errors["every"] = "A number of seconds (at least 1)."
    schedule = Schedule(
        task=task,
        cron=cron,
        every=every,
        timezone=request.POST.get("timezone", "").strip(),
        overlap=request.POST.get("overlap", ScheduleOverlap.SKIP),
        params=_params_from_form(task, request),
        enabled=True,
    )
    if not errors:
        errors = validate_schedule(schedule)
    if errors:
        form = {"values": request.POST, "errors": errors}
        return render_task_page(request, task, schedule_form=form)  # 200, as Django forms do
    schedule.save()
    messages.success(
        request, f"Schedule added; next run {schedule.next_run_at:%Y-%m-%d %H:%M:%S %Z}."
    )
    return redirect(reverse("taskrunner:task", args=[task.name]) + "#schedules")


@require_POST
@staff_member_required
def change_schedule(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    schedule = get_object_or_404(Schedule.objects.select_related("task"), pk=pk)
    perm = DELETE_PERM if action == "remove" else CHANGE_PERM
    if not request.user.has_perm(perm):
        return HttpResponse("You may not change schedules.", status=403, content_type="text/plain")
    if action == "remove":
        schedule.delete()
        messages.success(request, "Schedule removed; its past runs stay.")
    else:
        schedule.enabled = action == "enable"
        schedule.next_run_at = None  # enabling starts afresh from now
        schedule.save()
        messages.success(request, f"Schedule {action}d.")
    return redirect(reverse("taskrunner:task", args=[schedule.task.name]) + "#schedules")
