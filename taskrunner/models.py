"""Tasks, runs, their events and audit trail, workers and API tokens.

State changes of a run are methods of `Run` that end in a conditional update
or `save(update_fields=...)`; nothing else assigns `status`. Queries are
methods of `RunQuerySet`.
"""

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.utils import timezone

from taskrunner import params as params_mod
from taskrunner.events.store import append_events
from taskrunner.process.output import EventKind


class RunStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    """Waiting for a worker to claim it."""
    RUNNING = "running", "running"
    """Claimed by a worker; its child process is alive."""
    PAUSED = "paused", "paused"
    """The whole process tree is stopped (SIGSTOP)."""
    SUCCEEDED = "succeeded", "succeeded"
    """The child exited with code 0."""
    FAILED = "failed", "failed"
    """The child exited non-zero, died of a signal, or could not start."""
    ABORTED = "aborted", "aborted"
    """Someone asked to abort it, or its worker stopped."""
    TIMED_OUT = "timed_out", "timed out"
    """It ran longer than its task's timeout (time paused not counted)."""
    LOST = "lost", "lost"
    """Its worker died and the run could not be completed."""


FINAL_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.ABORTED,
        RunStatus.TIMED_OUT,
        RunStatus.LOST,
    }
)
ACTIVE_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED})
LIVE_STATUSES = frozenset({RunStatus.RUNNING, RunStatus.PAUSED})  # a process exists


class Via(models.TextChoices):
    PAGE = "page"
    API = "api"
    CLI = "cli"
    WORKER = "worker"
    DJANGO = "django"  # a Django task's enqueue (taskrunner.backends)
    RETRY = "retry"
    SCHEDULE = "schedule"


class ActionKind(models.TextChoices):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    INPUT = "input"


CONTROL_ACTIONS = frozenset({ActionKind.PAUSE, ActionKind.RESUME, ActionKind.ABORT})


# The vocabulary of events lives with the Django-free process core, which makes them.
EVENT_KIND_CHOICES = [(kind.value, kind.value.capitalize()) for kind in EventKind]


class ActionNotAllowed(Exception):
    """The run's state does not allow this action (the API's 409)."""


class ActiveRunDeletion(ActionNotAllowed):
    """An active run cannot be deleted: its worker still owns it (abort it first)."""


# Variables of the site's own configuration that hold its secrets: a child
# never inherits them from its worker unless its task names them in `pass_env`
# (the demo smoke tests need the database, for instance).
SITE_SECRET_VARIABLES = frozenset({"SECRET_KEY", "SECRET_KEY_FALLBACKS", "DATABASE_URL"})
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Task(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    argv = models.JSONField(help_text="The command as a list of arguments; no shell.")
    cwd = models.CharField("working directory", max_length=1000, blank=True)
    env = models.JSONField("extra environment", default=dict, blank=True)
    params = models.JSONField("declared parameters", default=list, blank=True)
    pass_env = models.JSONField(
        "secrets passed to the child",
        default=list,
        blank=True,
        help_text="Names of the site's secret variables (e.g. DATABASE_URL, SECRET_KEY) the "
        "child inherits from its worker; by default it gets none of them.",
    )
    timeout = models.FloatField(
        null=True, blank=True, help_text="Seconds of running (not paused) time; empty for none."
    )
    grace = models.FloatField(default=10.0, help_text="Seconds between SIGTERM and SIGKILL.")
    max_concurrent = models.PositiveIntegerField(default=1)
    enabled = models.BooleanField(default=True)
    # Retries and retention (taskrunner.retries, taskrunner.retention).
    retries = models.PositiveIntegerField(
        default=0, help_text="Extra attempts after a failed, timed-out or lost run."
    )
    retry_delay = models.FloatField(
        default=10.0,
        help_text="Seconds before the first retry; each later one waits twice as long "
        "(capped at an hour), plus up to 10% jitter.",
    )
    keep_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Days finished runs are kept; empty: the site's setting."
    )
    keep_runs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Finished runs kept (the newest); empty: the site's setting.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # Stored declarations are always in their full form, whoever saves
        # (the admin and the CLI clean first; code may not): `resolve` relies on it.
        self.params = params_mod.normalize_declaration(self.params or [])
        super().save(*args, **kwargs)

    @property
    def display_title(self) -> str:
        return self.title or self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if (
            not isinstance(self.argv, list)
            or not self.argv
            or not all(isinstance(a, str) for a in self.argv)
        ):
            errors["argv"] = "The command must be a non-empty list of strings."
        if not isinstance(self.env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            errors["env"] = "The environment must map names to strings."
        if not isinstance(self.pass_env, list) or not all(
            isinstance(n, str) and ENV_NAME_RE.match(n) for n in self.pass_env
        ):
            errors["pass_env"] = "A list of environment variable names."  # noqa: S105
        try:
            self.params = params_mod.normalize_declaration(self.params)
        except params_mod.ParamError as exc:
            errors["params"] = str(exc)
        if self.timeout is not None and self.timeout <= 0:
            errors["timeout"] = "The timeout must be positive."
        if self.grace < 0:
            errors["grace"] = "The grace period cannot be negative."
        if self.max_concurrent < 1:
            errors["max_concurrent"] = "At least one run must be allowed."
        if self.retry_delay is None or not 0 <= self.retry_delay <= 86400:
            errors["retry_delay"] = "The retry delay must be between 0 and 86400 seconds."
        if errors:
            raise ValidationError(errors)

    def child_environment(self, inherited: dict[str, str]) -> dict[str, str]:
        """The worker's environment minus the site's secrets (unless passed), plus the task's."""
        passed = set(self.pass_env or [])
        kept = {
            name: value
            for name, value in inherited.items()
            if name not in SITE_SECRET_VARIABLES or name in passed
        }
        return {**kept, **self.env}

    def resolve_params(self, given: Any) -> dict[str, Any]:
        """The run's parameters from given values; ParamError names each bad one."""
        return params_mod.resolve(self.params, given)

    def start(
        self, given_params: Any = None, *, user=None, via: str = Via.API, **run_fields: Any
    ) -> "Run":
        """Queue a run of this task and record who asked; never waits for a worker.

        `run_fields` are more of the run's fields (`run_after`, `schedule`, ...).
        """
        if not self.enabled:
            raise ActionNotAllowed(f"Task '{self.name}' is disabled.")
        values = self.resolve_params(given_params)
        with transaction.atomic():
            run = Run.objects.create(task=self, params=values, requested_by=user, **run_fields)
            started = RunAction.objects.create(
                run=run,
                action=ActionKind.START,
                user=user,
                by=_username(user),
                via=via,
                applied_at=run.created_at,
            )
            # A new run: its one action is known, and it has no artifacts yet.
            run.record_status_event(actions=[started], artifacts=[])
            notify("run", run.pk)
        return run


class WorkerQuerySet(models.QuerySet):
    def dead(self, now=None):
        """Workers that stopped heartbeating without saying they stopped."""
        from taskrunner import conf

        now = now or timezone.now()
        limit = now - timedelta(seconds=conf.worker_dead_after())
        return self.filter(stopped_at__isnull=True, heartbeat_at__lt=limit)


class Worker(models.Model):
    """A supervisor process (`manage.py taskrunner worker`)."""

    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    # With the pid, tells this worker's process from a later one given its pid.
    create_time = models.FloatField(null=True, blank=True)
    boot_id = models.CharField(max_length=64, blank=True)
    concurrency = models.PositiveIntegerField(default=8)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now, db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class RunQuerySet(models.QuerySet):
    def delete(self):
        """Delete finished runs; refuse if any selected run is still active.

        A worker owns an active run's process and writes its events: deleting
        the row under it would leave the process running with nothing to abort
        it through. Abort first, delete once it is final.
        """
        active = list(self.active().order_by("id").values_list("id", flat=True)[:10])
        if active:
            raise ActiveRunDeletion(
                f"Active runs cannot be deleted (run {', '.join(map(str, active))}); "
                "abort them first."
            )
        return super().delete()

    delete.alters_data = True  # type: ignore[attr-defined]  # Django's markers on a method
    delete.queryset_only = True  # type: ignore[attr-defined]

    def active(self):
        return self.filter(status__in=ACTIVE_STATUSES)

    def live(self):
        return self.filter(status__in=LIVE_STATUSES)

    def final(self):
        return self.filter(status__in=FINAL_STATUSES)

    def queued(self):
        return self.filter(status=RunStatus.QUEUED)

    def owned_by(self, worker):
        return self.filter(worker=worker)

    def claim(self, worker: "Worker", limit: int) -> list[int]:
        """Claim up to `limit` queued runs for `worker`; the ids claimed, in start order.

        Higher `priority` first, then oldest first. The per-task window that
        counts a task's free slots orders its runs the same way, so a task's
        `max_concurrent` slots go to its highest-priority runs.

        `max_concurrent` holds across workers and hosts: the claim counts each
        task's live runs under a lock on the task's row, so two workers cannot
        both take a task's last free slot. On PostgreSQL the task rows are
        taken `FOR UPDATE SKIP LOCKED` (a worker never waits for another's
        claim: it leaves that task's runs to it, and the status events of the
        claimed runs wake it again), then one `UPDATE ... RETURNING` claims,
        in a fresh snapshot that sees every run the other worker committed.
        SQLite's IMMEDIATE transaction locks the whole database instead.
        An empty result is normal: another worker was faster, or nothing waits.
        """
        run_table, task_table = Run._meta.db_table, Task._meta.db_table
        postgres = connection.vendor == "postgresql"
        if not Run.objects.queued().exists():
            # A cheap look first: the claim takes SQLite's write lock, and is a
            # transaction of three statements on PostgreSQL (a worker claims every second).
            return []
        live = ", ".join(f"'{status}'" for status in sorted(LIVE_STATUSES))
        with transaction.atomic(), connection.cursor() as cursor:
            task_filter, task_params = "", []
            if postgres:
                cursor.execute(
                    f"SELECT t.id FROM {task_table} t WHERE t.enabled AND EXISTS "  # noqa: S608
                    f"(SELECT 1 FROM {run_table} r WHERE r.task_id = t.id AND r.status = %s) "
                    "ORDER BY t.id FOR UPDATE SKIP LOCKED",
                    [RunStatus.QUEUED.value],
                )
                task_ids = [row[0] for row in cursor.fetchall()]
                if not task_ids:
                    return []
                task_filter, task_params = "AND r.task_id = ANY(%s)", [task_ids]
            # As the ORM would store it (SQLite keeps UTC text without an offset).
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            cursor.execute(
                f"UPDATE {run_table} SET status = %s, worker_id = %s, hostname = %s, "  # noqa: S608
                "started_at = %s, updated_at = %s "
                "WHERE status = %s AND id IN ("
                "  SELECT id FROM ("
                "    SELECT r.id AS id, r.priority AS priority, t.max_concurrent AS max_concurrent,"
                "      ROW_NUMBER() OVER (PARTITION BY r.task_id ORDER BY r.priority DESC, r.id)"
                "        AS place,"
                f"     (SELECT COUNT(*) FROM {run_table} a"
                f"      WHERE a.task_id = r.task_id AND a.status IN ({live})) AS live"
                f"    FROM {run_table} r JOIN {task_table} t ON t.id = r.task_id"
                f"    WHERE r.status = %s AND t.enabled {task_filter}"
                "     AND (r.run_after IS NULL OR r.run_after <= %s)"
                "  ) AS candidates"
                "  WHERE place + live <= max_concurrent ORDER BY priority DESC, id LIMIT %s"
                ") RETURNING id, priority",
                [
                    RunStatus.RUNNING.value,
                    worker.pk,
                    worker.hostname,
                    now,
                    now,
                    RunStatus.QUEUED.value,
                    RunStatus.QUEUED.value,
                    *task_params,
                    now,
                    limit,
                ],
            )
            return [run_id for _, run_id in sorted((-row[1], row[0]) for row in cursor.fetchall())]


class Run(models.Model):
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(
        max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    params = models.JSONField(default=dict, blank=True)
    attempt = models.PositiveIntegerField(default=1)
    # Higher first among queued runs (a Django task's `priority`, -100 to 100).
    priority = models.IntegerField(default=0)
    progress = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The supervisor that owns the run, and the identity of its child process:
    # a pid alone is never signalled, only pid + create time on this host.
    worker = models.ForeignKey(
        Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    pgid = models.PositiveIntegerField(null=True, blank=True)
    pid_create_time = models.FloatField(null=True, blank=True)
    # A random key put in the child's environment (TASKRUNNER_PROCESS_KEY): it
    # finds every process of the run, even one that double-forked away.
    process_key = models.CharField(max_length=64, blank=True)
    # Highest event sequence number used; allocated under the row's write lock.
    last_seq = models.PositiveBigIntegerField(default=0)
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_seconds = models.FloatField(default=0.0)
    # Sampled by the worker every few seconds: the whole process tree's usage.
    cpu_percent = models.FloatField(null=True, blank=True)
    memory_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    # Delayed runs, retries and schedules: no worker claims it before `run_after`.
    run_after = models.DateTimeField(null=True, blank=True)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Stored (not only the reverse of retry_of) so a list of runs needs no query per run.
    retried_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    schedule = models.ForeignKey(
        "Schedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    scheduled_for = models.DateTimeField(null=True, blank=True)
    # The log cap (TASKRUNNER_MAX_LOG_BYTES) deleted the run's log lines before
    # this seq (streams skip to it after a `pruned` event), this many lines.
    log_pruned_before = models.PositiveBigIntegerField(default=0)
    log_pruned_lines = models.PositiveBigIntegerField(default=0)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        permissions = [
            ("start_run", "Can start runs"),
            ("control_run", "Can pause, resume and abort runs and send them input"),
        ]
        indexes = [models.Index(fields=["task", "status"])]
        constraints = [
            # Each due time of a schedule starts one run, however many workers race for it.
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"], name="run_schedule_scheduled_for"
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.task_id and self.task.name}"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def delete(self, *args, **kwargs):
        """Delete a finished run; an active one is refused (see RunQuerySet.delete)."""
        # The status in the database, not this instance's possibly stale copy.
        if Run.objects.filter(pk=self.pk).active().exists():
            raise ActiveRunDeletion(f"Run {self.pk} is active; abort it before deleting it.")
        return super().delete(*args, **kwargs)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (or to now while running)."""
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return max(0.0, (end - self.started_at).total_seconds())

    # --- events -----------------------------------------------------------

    def record_status_event(self, *, actions=None, artifacts=None) -> int:
        """Append a `status` event holding this run's JSON as it is now; its seq.

        `actions` and `artifacts`, when the caller knows them, spare their queries.
        """
        from taskrunner.serializers import run_json

        data = run_json(self, actions=actions, artifacts=artifacts)
        return append_events(self.pk, [(EventKind.STATUS, "", "", data)])[0]

    # --- control requests (any process) -----------------------------------

    def request(
        self, action: str, *, user=None, via: str = Via.API, data: str = "", fresh: bool = False
    ) -> "RunAction":
        """Record a pause, resume, abort or input request for the owning worker.

        Raises ActionNotAllowed when the run's state does not allow it. Aborting
        a queued run finalises it here, without a worker. `fresh`: the caller
        has just read the run, so its status is not read again (a control
        request's path to the worker is a query shorter).
        """
        if not fresh:
            self.refresh_from_db(fields=["status"])
        data = data.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
        allowed = {
            ActionKind.PAUSE: {RunStatus.RUNNING},
            ActionKind.RESUME: {RunStatus.PAUSED},
            ActionKind.ABORT: ACTIVE_STATUSES,
            ActionKind.INPUT: LIVE_STATUSES,
        }[ActionKind(action)]
        if self.status not in allowed:
            raise ActionNotAllowed(f"Run {self.pk} is {self.status}; it cannot {action}.")
        with transaction.atomic():
            act = RunAction.objects.create(
                run=self, action=action, user=user, by=_username(user), via=via, data=data
            )
            # 0 rows means a worker claimed it meanwhile: the request stays
            # pending and the worker applies it like any other abort.
            if (
                action == ActionKind.ABORT
                and self.status == RunStatus.QUEUED
                and self.finish(
                    RunStatus.ABORTED,
                    error="Aborted before it started.",
                    only_if=(RunStatus.QUEUED,),
                )
            ):
                act.mark_applied()
            # The worker can act on the payload alone, without reading the action first.
            notify("control", self.pk, f"{act.pk}:{action}:{via}:{act.by}")
        return act

    # --- state changes (the worker) ---------------------------------------

    @transaction.atomic
    def mark_started(
        self, *, hostname: str, pid: int, pgid: int, create_time: float, process_key: str
    ) -> None:
        """The child is alive: record its identity and tell the viewers."""
        now = timezone.now()
        self.hostname, self.pid, self.pgid = hostname, pid, pgid
        self.pid_create_time, self.process_key, self.updated_at = create_time, process_key, now
        self.save(
            update_fields=[
                "hostname",
                "pid",
                "pgid",
                "pid_create_time",
                "process_key",
                "updated_at",
            ]
        )
        self.record_status_event()

    @transaction.atomic
    def mark_paused(self) -> None:
        now = timezone.now()
        self.status, self.paused_at, self.updated_at = RunStatus.PAUSED, now, now
        self.save(update_fields=["status", "paused_at", "updated_at"])
        self.record_status_event()

    @transaction.atomic
    def mark_resumed(self) -> None:
        now = timezone.now()
        if self.paused_at is not None:
            self.paused_seconds += (now - self.paused_at).total_seconds()
        self.status, self.paused_at, self.updated_at = RunStatus.RUNNING, None, now
        self.save(update_fields=["status", "paused_at", "paused_seconds", "updated_at"])
        self.record_status_event()

    @transaction.atomic
    def finish(
        self,
        status: str,
        *,
        exit_code: int | None = None,
        error: str = "",
        only_if=ACTIVE_STATUSES,
    ) -> bool:
        """Record the final status, with its event, in one transaction.

        Only a run whose status is in `only_if` changes: a run already final
        stays as it was (another worker may have marked it lost meanwhile), and
        a queued run's abort loses to a worker that claimed it first. True if
        this call did it.
        """
        assert status in FINAL_STATUSES, status
        now = timezone.now()
        paused_seconds = self.paused_seconds
        if self.paused_at is not None:
            paused_seconds += (now - self.paused_at).total_seconds()
        changed = Run.objects.filter(pk=self.pk, status__in=only_if).update(
            status=status,
            exit_code=exit_code,
            error=error,
            finished_at=now,
            updated_at=now,
            paused_at=None,
            paused_seconds=paused_seconds,
        )
        self.refresh_from_db()
        if changed:
            from taskrunner.retries import retry_if_due

            retry_if_due(self)  # in this transaction: a final failure always gets its successor
            self.record_status_event()
        return bool(changed)


NOTIFY_CHANNEL = "taskrunner"


# Payload kinds that wake the workers on SQLite too (see taskrunner.wakesocket).
WORKER_WAKE_KINDS = {"control", "run", "schedule"}


def notify(kind: str, run_id: int, detail: str = "") -> None:
    """Wake listeners when the transaction commits: `kind:run_id[:detail]`.

    PostgreSQL: NOTIFY, which the server delivers on commit (and drops on a
    rollback). SQLite: the web's readers notice commits with `PRAGMA
    data_version`; the workers on this host are woken directly, after the
    commit, for a control request, a new run or a saved schedule (the kinds
    they act on).
    Payloads are tiny; never log text (8000-byte limit).
    """
    payload = f"{kind}:{run_id}:{detail}" if detail else f"{kind}:{run_id}"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, payload])
    elif kind in WORKER_WAKE_KINDS:
        from taskrunner.wakesocket import send_wake

        transaction.on_commit(lambda: send_wake(payload))


def notify_events(run_ids: list[int]) -> None:
    """`notify("event", id)` for each run, in one statement on PostgreSQL.

    Nothing on SQLite: readers there notice commits with `data_version`, and
    workers are not woken by events.
    """
    if connection.vendor == "postgresql" and run_ids:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_notify(%s, 'event:' || id) FROM unnest(%s::bigint[]) AS id",
                [NOTIFY_CHANNEL, list(run_ids)],
            )


class EventChunk(models.Model):
    """Consecutive events of one run: many log lines, or one other event.

    The layout (and why) is in `taskrunner.events.store`, which owns this
    table: nothing else reads or writes it.
    """

    # No index of its own (the unique (run, last_seq) index serves every
    # lookup by run) and no database-level constraint (the ORM still cascades
    # deletes): each would cost every insert on the log's hot path.
    run = models.ForeignKey(
        Run,
        on_delete=models.CASCADE,
        related_name="event_chunks",
        db_index=False,
        db_constraint=False,
    )
    first_seq = models.PositiveBigIntegerField()
    last_seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=8, choices=EVENT_KIND_CHOICES)
    ts = models.DateTimeField()  # of the first event; log lines add their offset
    body = models.TextField()  # packed log lines, or the event's JSON data
    size = models.PositiveIntegerField()  # characters of body, for pruning and budgets

    class Meta:
        ordering = ["run", "last_seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "last_seq"], name="event_chunk_run_last_seq")
        ]
        # Covers the reads' key scans, so a read bounded by bytes never
        # touches the bodies it does not keep (`taskrunner.events.store`).
        indexes = [
            models.Index(
                fields=["run", "last_seq", "first_seq", "kind", "size"], name="event_chunk_budget"
            )
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.first_seq}-{self.last_seq} {self.kind}"


class RunAction(models.Model):
    """The audit trail: who asked for a start, pause, resume, abort or input.

    Control requests wait here (`applied_at` empty) for the owning worker.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=8, choices=ActionKind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The username at the time, kept if the user is deleted later.
    by = models.CharField(max_length=150, blank=True)
    via = models.CharField(max_length=8, choices=Via.choices)
    data = models.TextField(blank=True)  # the line, for input
    at = models.DateTimeField(default=timezone.now)
    applied_at = models.DateTimeField(null=True, blank=True, db_index=True)
    outcome = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.action} of run {self.run_id} by {self.by or '-'} via {self.via}"

    def mark_applied(self, outcome: str = "") -> None:
        self.applied_at, self.outcome = timezone.now(), outcome
        self.save(update_fields=["applied_at", "outcome"])


TOKEN_USE_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for scripts; only its hash is stored, so it is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    prefix = models.CharField(max_length=12, help_text="The start of the token, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def create_for(cls, user) -> tuple["ApiToken", str]:
        """A new token for `user`: the stored row and the secret, to show once."""
        secret = "trt_" + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, prefix=secret[:12], key_hash=hash_token(secret))
        return token, secret

    @classmethod
    def user_for(cls, secret: str):
        """The active staff user a token stands for, or None."""
        token = (
            cls.objects.select_related("user")
            .filter(key_hash=hash_token(secret), revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            return None
        now = timezone.now()
        # At most one write a minute: a write per request would take SQLite's
        # write lock and wake every event hub for nothing.
        if token.last_used_at is None or now - token.last_used_at > TOKEN_USE_RESOLUTION:
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user


def _username(user) -> str:
    return user.get_username() if user is not None and user.is_authenticated else ""


class ArtifactQuerySet(models.QuerySet):
    def delete_files(self) -> int:
        """Delete these artifacts' stored files now (rows stay); how many bytes they held."""
        from taskrunner.artifacts import delete_stored

        total = 0
        for storage_name, size in self.values_list("storage_name", "size"):
            delete_stored(storage_name)
            total += size
        return total


class Artifact(models.Model):
    """A file a run made, kept in the artifact storage (`taskrunner.artifacts`).

    A row exists only once its bytes are fully stored and checked; deleting a
    row (a run's deletion cascades to it) deletes the stored file once the
    transaction commits (`taskrunner.artifacts.delete_file_with_row`).
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=500, help_text="The path under the run's directory.")
    storage_name = models.CharField(max_length=600, help_text="Its name in the storage.")
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ArtifactQuerySet.as_manager()

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="artifact_run_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} of run {self.run_id}"

    def delete_files(self) -> None:
        """Delete the stored file now (the row stays)."""
        from taskrunner.artifacts import delete_stored

        delete_stored(self.storage_name)


class ScheduleOverlap(models.TextChoices):
    SKIP = "skip"
    """A due time is skipped while a run this schedule started is still active."""
    QUEUE = "queue"
    """A run is queued anyway (the task's max_concurrent still holds)."""


class Schedule(models.Model):
    """When a task starts by itself: a cron expression or a fixed interval.

    The times are computed in `taskrunner.schedules`; every worker fires due
    schedules (`taskrunner.worker.schedules`).
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(max_length=200, blank=True)
    every = models.FloatField(null=True, blank=True, help_text="Seconds between runs (at least 1).")
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    overlap = models.CharField(
        max_length=5, choices=ScheduleOverlap.choices, default=ScheduleOverlap.SKIP
    )
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_run = models.ForeignKey(
        "Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # Declared last: the field's name hides the module inside the class body.
    timezone = models.CharField(
        max_length=64, blank=True, help_text="An IANA name; empty: the site's TIME_ZONE."
    )

    class Meta:
        ordering = ["task", "id"]

    def __str__(self) -> str:
        when = self.cron or f"every {self.every:g} s"
        return f"{self.task_id and self.task.name}: {when}"

    def save(self, *args, **kwargs) -> None:
        from taskrunner.schedules import first_run_at

        if self.enabled and self.next_run_at is None:
            self.next_run_at = first_run_at(self)
        elif not self.enabled:
            self.next_run_at = None
        super().save(*args, **kwargs)
        if self.pk:
            notify("schedule", self.pk)  # workers sleeping until their next time look again

    def clean(self) -> None:
        from taskrunner.schedules import validate_schedule

        errors = validate_schedule(self)
        if errors:
            raise ValidationError(errors)
