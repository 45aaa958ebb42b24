"""The verbs of runs that start themselves: `schedule ...` and `prune`, and their options.

(`start --at/--in` and `define --retries/--retry-delay/--keep-days/--keep-runs`
are options of those verbs, parsed here and applied in `taskrunner.cli.verbs`.)
"""

import argparse
from argparse import Namespace
from datetime import datetime, timedelta

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from taskrunner.cli import exitcodes, parsing
from taskrunner.models import Schedule, Task
from taskrunner.retention import prune as prune_runs
from taskrunner.schedules import validate_schedule

# --- option types -------------------------------------------------------------


def iso_time(text: str) -> datetime:
    """`--at`: an ISO time with an offset; a naive time is refused (ambiguous)."""
    try:
        when = parse_datetime(text.strip())
    except ValueError:
        when = None
    if when is None:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}")
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no offset; add Z or +01:00 (a naive time is ambiguous)"
        )
    return when


def non_negative_seconds(text: str) -> float:
    value = parsing.seconds(text)
    if not 0 <= value <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and a year of seconds, not {text}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative, not {value}")
    return value


def optional_count(text: str) -> int | None:
    """`--keep-days` / `--keep-runs`: a number, or `none` for the site's setting."""
    if text.strip().lower() in {"", "none", "default"}:
        return None
    return non_negative_int(text)


def interval(text: str) -> float:
    value = parsing.seconds(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"an interval is at least 1 second, not {text}")
    return value


def schedule_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a schedule id is a number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a schedule id is positive, not {value}")
    return value


# --- parsers ------------------------------------------------------------------


def add_start_options(sub) -> None:
    when = sub.add_mutually_exclusive_group()
    when.add_argument("--at", type=iso_time, metavar="ISO_TIME", help="no worker starts it before")
    when.add_argument("--in", dest="in_seconds", type=non_negative_seconds, metavar="SECONDS")


def add_define_options(sub) -> None:
    sub.add_argument("--retries", type=non_negative_int, metavar="N", help="extra attempts")
    sub.add_argument(
        "--retry-delay",
        type=non_negative_seconds,
        metavar="S",
        help="seconds before the first retry (fractions allowed), doubled each time",
    )
    sub.add_argument("--keep-days", type=optional_count, default=parsing.NOT_GIVEN, metavar="N")
    sub.add_argument("--keep-runs", type=optional_count, default=parsing.NOT_GIVEN, metavar="N")


def add_verbs(verbs) -> None:
    sub = verbs.add_parser("schedule", help="schedules: add, list, enable, disable, remove")
    actions = sub.add_subparsers(
        dest="schedule_action", metavar="ACTION", required=True, parser_class=parsing.OneLineParser
    )
    add = actions.add_parser("add", help="add a schedule to a task; prints its id")
    add.add_argument("name", metavar="NAME")
    how = add.add_mutually_exclusive_group(required=True)
    how.add_argument("--cron", metavar="EXPR", help="five fields, or @hourly, @daily, ...")
    how.add_argument("--every", type=interval, metavar="SECONDS")
    add.add_argument("--timezone", metavar="TZ", help="an IANA name (default: the site's)")
    add.add_argument("--param", action="append", metavar="K=V")
    add.add_argument("--overlap", choices=["skip", "queue"], default="skip")
    add.add_argument("--disabled", action="store_true", help="add it disabled")
    listing = actions.add_parser("list", help="schedules with their next times")
    listing.add_argument("--task", metavar="NAME")
    for action in ("enable", "disable", "remove"):
        one = actions.add_parser(action, help=f"{action} a schedule")
        one.add_argument("schedule", type=schedule_id, metavar="ID")
    prune = verbs.add_parser("prune", help="delete finished runs past the retention rules now")
    prune.add_argument("--dry-run", action="store_true", help="only count what would go")


# --- applying options of other verbs -----------------------------------------------


def run_after(opts: Namespace) -> datetime | None:
    if getattr(opts, "at", None) is not None:
        return opts.at
    if getattr(opts, "in_seconds", None) is not None:
        return timezone.now() + timedelta(seconds=opts.in_seconds)
    return None


def apply_define_options(task: Task, opts: Namespace) -> None:
    if opts.retries is not None:
        task.retries = opts.retries
    if opts.retry_delay is not None:
        task.retry_delay = opts.retry_delay
    if opts.keep_days is not parsing.NOT_GIVEN:
        task.keep_days = opts.keep_days
    if opts.keep_runs is not parsing.NOT_GIVEN:
        task.keep_runs = opts.keep_runs


# --- verbs --------------------------------------------------------------------


def _get(pk: int) -> Schedule:
    schedule = Schedule.objects.select_related("task").filter(pk=pk).first()
    if schedule is None:
        raise CommandError(f"No schedule {pk}.")
    return schedule


def _when(schedule: Schedule) -> str:
    return schedule.cron or f"every {schedule.every:g} s"


def schedule(opts: Namespace, console) -> int:
    action = opts.schedule_action
    if action == "add":
        return _add(opts, console)
    if action == "list":
        return _list(opts, console)
    found = _get(opts.schedule)
    if action == "remove":
        found.delete()
        console.say(f"Removed schedule {opts.schedule}.")
        return exitcodes.OK
    found.enabled = action == "enable"
    found.next_run_at = None  # enabling starts afresh from now; disabling clears it
    found.save()
    console.say(f"Schedule {found.pk} {action}d; next run {_next(found)}.")
    return exitcodes.OK


def _next(schedule: Schedule) -> str:
    if not schedule.enabled or schedule.next_run_at is None:
        return "none (disabled)"
    return timezone.localtime(schedule.next_run_at).isoformat(timespec="seconds")


def _add(opts: Namespace, console) -> int:
    task = Task.objects.filter(name=opts.name).first()
    if task is None:
        raise CommandError(f"No task named '{opts.name}'.")
    new = Schedule(
        task=task,
        cron=opts.cron or "",
        every=opts.every,
        timezone=opts.timezone or "",
        params=parsing.pairs_to_dict(opts.param, "--param"),
        overlap=opts.overlap,
        enabled=not opts.disabled,
    )
    errors = validate_schedule(new)
    if errors:
        details = "; ".join(f"{name}: {message}" for name, message in errors.items())
        raise CommandError(f"Bad schedule: {details}")
    new.save()
    console.say(new.pk)
    console.note(f"Schedule {new.pk} of {task.name} ({_when(new)}); next run {_next(new)}.")
    return exitcodes.OK


def _list(opts: Namespace, console) -> int:
    found = Schedule.objects.select_related("task").order_by("task__name", "id")
    if opts.task is not None:
        if not Task.objects.filter(name=opts.task).exists():
            raise CommandError(f"No task named '{opts.task}'.")
        found = found.filter(task__name=opts.task)
    rows = list(found)
    if not rows:
        console.say("No schedules.")
        return exitcodes.OK
    console.say(f"{'ID':>5}  {'TASK':<24} {'WHEN':<20} {'TZ':<16} {'OVERLAP':<7} NEXT")
    for s in rows:
        tz = s.timezone or "(site)"
        console.say(
            f"{s.pk:>5}  {s.task.name:<24} {_when(s):<20} {tz:<16} {s.overlap:<7} {_next(s)}"
        )
    return exitcodes.OK


def prune(opts: Namespace, console) -> int:
    done = prune_runs(dry_run=opts.dry_run)
    verb = "Would remove" if opts.dry_run else "Removed"
    console.say(
        f"{verb} {done.runs} run(s), {done.log_bytes} bytes of log, "
        f"{done.other_bytes} bytes of artifacts."
    )
    return exitcodes.OK
