"""Admin registrations: tasks, runs (with their audit trail), workers, API tokens.

What the admin lets a user do is narrower than the model permissions alone:
- Only superusers create tasks or change what a task executes: its command,
  working directory, environment, inherited secrets, parameter declaration
  (it limits what reaches the command) and name (the command line and scripts
  start tasks by name). Other staff with `change_task` see those read-only,
  and a POST of them is ignored: the form has no such fields.
- A task's environment values are masked for everyone but superusers.
- Schedules are edited inline in their task, with their own permissions
  (add/change/delete_schedule): the superuser-only rule covers what a task
  executes, not when it runs. A changed time (or enabling) starts the
  schedule's times afresh from now.
- Active runs cannot be deleted (one by one, or with the bulk action): their
  worker still owns their processes. Abort first.
- Worker rows are read-only: the workers write them, and their identity
  (pid, create time) decides which processes a worker may kill.
- A token can be revoked, never un-revoked: every field is read-only and the
  only change offered is the "revoke" action.
"""

from django.contrib import admin, messages
from django.contrib.admin import actions as admin_actions
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from django.utils.html import format_html_join

from taskrunner.models import (
    ActiveRunDeletion,
    ApiToken,
    Run,
    RunAction,
    Schedule,
    Task,
    Worker,
)

EXECUTION_FIELDS = ("name", "argv", "cwd", "env", "pass_env", "params")
MASK = "•••"


TIMING_FIELDS = ("cron", "every", "timezone", "enabled")


class ScheduleInline(admin.TabularInline):
    model = Schedule
    extra = 0
    fields = (
        "cron",
        "every",
        "timezone",
        "params",
        "overlap",
        "enabled",
        "next_run_at",
        "last_run",
    )
    readonly_fields = ("next_run_at", "last_run")


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("name", "title", "enabled", "max_concurrent", "timeout", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("name", "title", "description")
    inlines = [ScheduleInline]

    def save_formset(self, request, form, formset, change):
        if formset.model is Schedule:
            for schedule_form in formset.forms:
                if set(schedule_form.changed_data) & set(TIMING_FIELDS):
                    schedule_form.instance.next_run_at = None  # save() computes it from now
        super().save_formset(request, form, formset, change)

    def has_add_permission(self, request):
        # A new task is nothing but what it executes.
        return request.user.is_superuser and super().has_add_permission(request)

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if not request.user.is_superuser:
            # The masked copy replaces the real field on every page a
            # non-superuser sees: the change form and the view-only page.
            fields = ["masked_env" if f == "env" else f for f in fields if f != "masked_env"]
        return fields

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += [f for f in EXECUTION_FIELDS if f != "env"] + ["masked_env"]
        return readonly

    @admin.display(description="extra environment")
    def masked_env(self, obj):
        if not obj or not obj.env:
            return "-"
        return format_html_join(", ", "<code>{}={}</code>", ((k, MASK) for k in obj.env))

    def save_model(self, request, obj, form, change):
        # The form cannot carry them, but a second line of defence costs little.
        if not request.user.is_superuser:
            stored = Task.objects.filter(pk=obj.pk).first() if change else None
            if stored is None or any(
                getattr(stored, f) != getattr(obj, f) for f in EXECUTION_FIELDS
            ):
                raise PermissionDenied("Only superusers may change what a task executes.")
        super().save_model(request, obj, form, change)


class RunActionInline(admin.TabularInline):
    model = RunAction
    extra = 0
    can_delete = False
    fields = ("action", "by", "via", "data", "at", "applied_at", "outcome")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.action(permissions=["delete"], description="Delete the selected finished runs")
def delete_selected(modeladmin, request, queryset):
    """Django's delete action (same name, so it replaces it), refused as a
    whole when an active run is selected."""
    active = list(queryset.active().order_by("id").values_list("id", flat=True)[:10])
    if active:
        modeladmin.message_user(
            request,
            f"Nothing was deleted: active runs cannot be deleted "
            f"(run {', '.join(map(str, active))}). Abort them first.",
            messages.ERROR,
        )
        return None
    return admin_actions.delete_selected(modeladmin, request, queryset)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "task",
        "status",
        "requested_by",
        "created_at",
        "finished_at",
        "exit_code",
    )
    list_filter = ("status", "task", "created_at")
    search_fields = ("=id", "task__name", "requested_by__username", "error")
    list_select_related = ("task", "requested_by")
    date_hierarchy = "created_at"
    inlines = [RunActionInline]
    readonly_fields = [f.name for f in Run._meta.fields]
    actions = [delete_selected]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.is_active:
            return False
        return super().has_delete_permission(request, obj)

    def delete_queryset(self, request, queryset):
        # The action refuses active runs before this; the model refuses them
        # too, and that must read as a refusal, not a 500.
        try:
            super().delete_queryset(request, queryset)
        except ActiveRunDeletion as exc:
            raise PermissionDenied(str(exc)) from None


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """Read-only: a worker row's identity decides which processes may be killed."""

    list_display = ("__str__", "concurrency", "started_at", "heartbeat_at", "stopped_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.action(permissions=["change"], description="Revoke the selected tokens")
def revoke_tokens(modeladmin, request, queryset):
    count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
    modeladmin.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Lists and revokes tokens; revocation is final (`revoked_at` is read-only)."""

    list_display = ("prefix", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "user__username")
    readonly_fields = ("user", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at")
    actions = [revoke_tokens]

    def has_add_permission(self, request):
        # Tokens are created with `manage.py taskrunner token create USERNAME`,
        # which shows the secret once; the admin only lists and revokes them.
        return False
