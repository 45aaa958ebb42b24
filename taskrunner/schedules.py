"""A schedule's times: checking its fields, its first time, the time due now and the next one.

Cron expressions are read by cronsim (the parser Healthchecks uses), which
follows Debian cron across daylight-saving changes: a job at a fixed time the
spring-forward skips runs once just after the jump, and a fixed time the
fall-back repeats runs once (the first). Jobs with `*` in the minute or hour
field simply follow real time. Only the five classic fields are accepted
(cronsim also knows a sixth, seconds, which Debian cron does not).

Nothing here touches the database except `validate_schedule`, which reads the
task's parameter declaration; firing is `taskrunner.worker.schedules`.
"""

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.conf import settings
from django.utils import timezone

from taskrunner import params as params_mod

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_STEPS = 100_000  # cron times walked to find the latest missed one before giving up
OVERLAPS = ("skip", "queue")


def cron_fields(expr: str) -> str:
    """The five-field form of `expr`; ValueError says what is wrong."""
    text = " ".join(expr.split())
    text = ALIASES.get(text.lower(), text)
    if len(text.split()) != 5:
        raise ValueError("A cron expression has five fields (or is @hourly, @daily, ...).")
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError, IndexError) as exc:
        raise ValueError(f"Not a valid cron expression: {exc or 'bad field'}.") from None
    return text


def zone(name: str) -> tzinfo:
    """The IANA time zone `name` (empty: the site's TIME_ZONE); ValueError if unknown."""
    name = name or settings.TIME_ZONE or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown time zone {name!r}.") from None


def cron_after(expr: str, tz: tzinfo, after: datetime) -> datetime:
    """The first time of `expr` (read in `tz`) strictly after `after`, in UTC."""
    start = after.astimezone(tz).replace(microsecond=0)
    when = next(iter(CronSim(cron_fields(expr), start)))
    return when.astimezone(UTC)


def next_after(schedule, after: datetime) -> datetime:
    """The schedule's first time strictly after `after` (for an interval: one interval on)."""
    if schedule.every:
        return after + timedelta(seconds=schedule.every)
    return cron_after(schedule.cron, zone(schedule.timezone), after)


def first_run_at(schedule, now: datetime | None = None) -> datetime:
    """The first time of a schedule created or enabled `now`."""
    return next_after(schedule, now or timezone.now())


def due(schedule, due_at: datetime, now: datetime) -> tuple[datetime, datetime]:
    """(the time to fire, the next time) for a schedule whose `next_run_at` (`due_at`) has come.

    Only the latest time at or before `now` fires; the earlier missed ones are
    dropped. The next time is the first strictly after `now`.
    """
    if schedule.every:
        step = timedelta(seconds=schedule.every)
        missed = int((now - due_at) / step)
        fire = due_at + missed * step
        return fire, fire + step
    expr, tz = cron_fields(schedule.cron), zone(schedule.timezone)
    fire = due_at
    for _ in range(MAX_STEPS):
        following = cron_after(expr, tz, fire)
        if following > now:
            return fire, following
        fire = following
    # Down for longer than MAX_STEPS times: the latest one from cron walked backwards.
    latest = next(iter(CronSim(expr, now.astimezone(tz), reverse=True))).astimezone(UTC)
    return latest, cron_after(expr, tz, now)


def validate_schedule(schedule) -> dict[str, str]:
    """The schedule's bad fields (`cron`, `every`, `timezone`, `overlap`, `params.NAME`).

    `params` are resolved as a start's are: on success they hold every
    declared parameter, defaults filled in.
    """
    errors: dict[str, str] = {}
    has_cron, has_every = bool(schedule.cron), schedule.every is not None
    if has_cron == has_every:
        errors["cron" if not has_cron else "every"] = "Give exactly one of cron and every."
    if has_cron:
        try:
            schedule.cron = cron_fields(schedule.cron)
        except ValueError as exc:
            errors["cron"] = str(exc)
    if has_every:
        every = schedule.every
        if isinstance(every, bool) or not isinstance(every, int | float) or not every >= 1:
            errors["every"] = "An interval of at least 1 second."
        elif every > 366 * 86400:
            errors["every"] = "An interval of at most a year."
    try:
        zone(schedule.timezone)
    except ValueError as exc:
        errors["timezone"] = str(exc)
    if schedule.overlap not in OVERLAPS:
        errors["overlap"] = "One of skip, queue."
    try:
        schedule.params = params_mod.resolve(schedule.task.params, schedule.params or {})
    except params_mod.ParamError as exc:
        for name, message in exc.errors.items():
            errors[name if name == "params" else f"params.{name}"] = message
    return errors


def schedule_fields(data: dict[str, Any]) -> dict[str, str]:
    """Fields of an API or CLI body that are not schedule fields."""
    known = {"cron", "every", "timezone", "params", "enabled", "overlap"}
    return {name: "unknown field" for name in sorted(set(data) - known)}
