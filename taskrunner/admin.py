"""Admin registrations: tasks, runs (with their audit trail), workers, API tokens.

Only superusers may change what a task executes (its command, environment and
working directory); other staff with the change permission see them read-only.
"""

from django.contrib import admin
from django.utils import timezone

from taskrunner.models import ApiToken, Run, RunAction, Task, Worker

EXECUTION_FIELDS = ("argv", "cwd", "env")


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("name", "title", "enabled", "max_concurrent", "timeout", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("name", "title", "description")

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += EXECUTION_FIELDS
        return readonly


class RunActionInline(admin.TabularInline):
    model = RunAction
    extra = 0
    can_delete = False
    fields = ("action", "by", "via", "data", "at", "applied_at", "outcome")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("__str__", "concurrency", "started_at", "heartbeat_at", "stopped_at")
    readonly_fields = (
        "hostname",
        "pid",
        "boot_id",
        "concurrency",
        "started_at",
        "heartbeat_at",
        "stopped_at",
    )


@admin.action(description="Revoke the selected tokens")
def revoke_tokens(modeladmin, request, queryset):
    queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "user__username")
    readonly_fields = ("user", "prefix", "key_hash", "created_at", "last_used_at")
    actions = [revoke_tokens]

    def has_add_permission(self, request):
        # Tokens are created with `manage.py taskrunner token create USERNAME`,
        # which shows the secret once; the admin only lists and revokes them.
        return False
