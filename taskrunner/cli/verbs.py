"""One function per verb of `manage.py taskrunner`; each returns the exit code.

Bad input raises CommandError with one sentence; the command prints it as one
line on stderr and exits non-zero.
"""

import json
import os
from argparse import Namespace
from dataclasses import dataclass
from typing import Any, TextIO

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db.models import Count

from taskrunner.cli import artifacts, exitcodes, follow, parsing, scheduling, text
from taskrunner.models import ActionNotAllowed, ApiToken, Run, Task, Via
from taskrunner.params import ParamError
from taskrunner.serializers import run_json


@dataclass
class Console:
    """Where a verb writes; on a terminal, text a child made (progress
    messages, errors) cannot carry escape sequences to it (see text.terminal_safe)."""

    out: TextIO
    err: TextIO

    def say(self, line: Any = "") -> None:
        self.out.write(_for(self.out, f"{line}\n"))
        self.out.flush()

    def note(self, line: str) -> None:
        self.err.write(_for(self.err, f"{line}\n"))
        self.err.flush()


def _for(stream: TextIO, line: str) -> str:
    return text.terminal_safe(line) if follow.is_terminal(stream) else line


# --- look-ups that fail with one clear sentence ----------------------------


def get_task(name: str) -> Task:
    task = Task.objects.filter(name=name).first()
    if task is None:
        raise CommandError(f"No task named '{name}'.")
    return task


def get_run(run_id: int) -> Run:
    run = Run.objects.select_related("task", "requested_by").filter(pk=run_id).first()
    if run is None:
        raise CommandError(f"No run {run_id}.")
    return run


def get_user(username: str | None):
    """The staff user `--user` names (None when not given); anyone else is refused.

    The command line runs as the shell user, who owns the database anyway;
    `--user` says on whose behalf, and only a staff user can act in the back
    office, so only a staff user can be named.
    """
    if username is None:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user named '{username}'.")
    if not user.is_active:
        raise CommandError(f"User '{username}' is inactive.")
    if not user.is_staff:
        raise CommandError(f"User '{username}' is not staff; only staff users act here.")
    return user


def param_error(exc: ParamError) -> CommandError:
    noun = "parameter" if len(exc.errors) == 1 else "parameters"
    details = "; ".join(f"{name}: {message}" for name, message in exc.errors.items())
    return CommandError(f"Bad {noun}: {details}.")


def validation_error(exc: ValidationError) -> CommandError:
    parts = []
    for field, messages in exc.message_dict.items():
        parts.append(f"{field}: {' '.join(messages)}")
    return CommandError("Invalid task: " + "; ".join(parts))


# --- verbs ---------------------------------------------------------------


def worker(opts: Namespace, console: Console) -> int:
    # Imported here: the other verbs must not depend on the supervisor's code.
    from taskrunner.worker import run_worker

    return run_worker(
        concurrency=opts.concurrency, until_idle=opts.until_idle, max_runs=opts.max_runs
    )


# What decides what a child executes: with `define --user`, only a superuser
# may set them (the admin's rule, taskrunner.admin).
EXECUTION_OPTIONS = ("argv", "cwd", "env", "pass_env", "param", "choices", "allow_dash", "pattern")


def _check_define_user(opts: Namespace, creating: bool) -> None:
    """`define --user NAME` acts as that user: the admin's rules apply to it.

    Without `--user` the shell user is trusted as the operator it is (it can
    read the database and the code); with it, a non-superuser may change only
    what does not decide what runs, and needs `change_task` for that.
    """
    user = get_user(opts.user)
    if user is None or user.is_superuser:
        return
    changed = [o for o in EXECUTION_OPTIONS if getattr(opts, o)]
    if creating or changed:
        what = "create tasks" if creating else "change what a task executes"
        options = ", ".join("--" + o.replace("_", "-") for o in changed if o != "argv")
        detail = f" ({options})" if options and not creating else ""
        raise CommandError(
            f"User '{user.get_username()}' is not a superuser: cannot {what}{detail}."
        )
    if not user.has_perm("taskrunner.change_task"):
        raise CommandError(f"User '{user.get_username()}' may not change tasks.")


def define(opts: Namespace, console: Console) -> int:
    existing = Task.objects.filter(name=opts.name).first()
    creating = existing is None
    _check_define_user(opts, creating)
    if existing is not None:
        task = existing
    else:
        if not opts.argv:
            raise CommandError(
                f"Task '{opts.name}' is new: give its command after --, "
                f"e.g. define {opts.name} -- python script.py."
            )
        task = Task(name=opts.name)
    _apply_definition(task, opts)
    try:
        task.full_clean()
    except ValidationError as exc:
        raise validation_error(exc) from None
    task.save()
    console.say(f"{'Created' if creating else 'Updated'} task {task.name}.")
    return exitcodes.OK


def _apply_definition(task: Task, opts: Namespace) -> None:
    """Copy the options given onto the task; options not given keep their value."""
    if opts.argv:
        task.argv = list(opts.argv)
    for field in ("title", "description", "grace", "max_concurrent", "enabled"):
        value = getattr(opts, field)
        if value is not None:
            setattr(task, field, value)
    # `--timeout none` clears it, so "not given" is told apart with a sentinel.
    if opts.timeout is not parsing.NOT_GIVEN:
        task.timeout = opts.timeout
    if opts.cwd is not None:
        task.cwd = os.path.abspath(opts.cwd) if opts.cwd else ""
    if opts.env is not None:
        task.env = parsing.pairs_to_dict(opts.env, "--env")
    if opts.pass_env is not None:
        task.pass_env = [name for name in opts.pass_env if name]
    if opts.param is not None:
        task.params = [parsing.param_spec(p) for p in opts.param]
    if opts.choices:
        parsing.apply_choices(task.params, opts.choices)
    if opts.allow_dash:
        parsing.apply_allow_dash(task.params, opts.allow_dash)
    if opts.pattern:
        parsing.apply_patterns(task.params, opts.pattern)
    scheduling.apply_define_options(task, opts)


def tasks(opts: Namespace, console: Console) -> int:
    all_tasks = list(Task.objects.all())
    if not all_tasks:
        console.say("No tasks. Define one: manage.py taskrunner define NAME -- COMMAND...")
        return exitcodes.OK
    active = dict(
        Run.objects.active().values("task").annotate(n=Count("id")).values_list("task", "n")
    )
    last = {}
    for task in all_tasks:
        last_run = task.runs.order_by("-id").first()
        if last_run is not None:
            last[task.pk] = last_run
    console.say(text.tasks_table(all_tasks, active, last))
    return exitcodes.OK


def start(opts: Namespace, console: Console) -> int:
    task = get_task(opts.name)
    user = get_user(opts.user)
    given = parsing.pairs_to_dict(opts.param, "--param")
    try:
        run = task.start(given, user=user, via=Via.CLI, run_after=scheduling.run_after(opts))
    except ParamError as exc:
        raise param_error(exc) from None
    except ActionNotAllowed as exc:
        raise CommandError(str(exc)) from None
    if not opts.follow:
        console.say(run.pk)
        return exitcodes.OK
    with follow.recording_interrupts() as interrupts:
        console.say(run.pk)
        return _follow(run, console, interrupts)


def _follow(
    run: Run, console: Console, interrupts, tail: int | None = None, raw: bool = False
) -> int:
    printer = follow.LogPrinter(console.out, console.err, raw=raw)
    ended = follow.follow(run, printer, interrupts, tail)
    if ended is None:
        console.note(f"Stopped following run {run.pk}; the run goes on.")
        return exitcodes.INTERRUPTED
    console.note(text.ending(ended))
    return exitcodes.for_status(ended.status)


def runs(opts: Namespace, console: Console) -> int:
    query = Run.objects.select_related("task", "requested_by").order_by("-id")
    if opts.task is not None:
        query = query.filter(task=get_task(opts.task))
    if opts.status is not None:
        query = query.filter(status=opts.status)
    found = list(query[: opts.limit])
    if not found:
        console.say("No runs.")
        return exitcodes.OK
    console.say(text.runs_table(found))
    return exitcodes.OK


def status(opts: Namespace, console: Console) -> int:
    run = get_run(opts.run)
    if opts.json:
        console.say(json.dumps(run_json(run), indent=2))
    else:
        console.say(text.run_details(run))
    return exitcodes.OK


def control(opts: Namespace, console: Console) -> int:
    """pause, resume, abort: a request the owning worker applies (a queued run aborts here)."""
    run = get_run(opts.run)
    _request(run, opts.verb, get_user(opts.user))
    run.refresh_from_db(fields=["status"])
    console.say(f"Asked run {run.pk} to {opts.verb}; it is {run.status}.")
    return exitcodes.OK


def send_input(opts: Namespace, console: Console) -> int:
    run = get_run(opts.run)
    if "\n" in opts.line or "\r" in opts.line:
        raise CommandError("Input is one line: it cannot contain a line break.")
    _request(run, "input", get_user(opts.user), data=opts.line)
    console.say(f"Sent one line to run {run.pk}.")
    return exitcodes.OK


def _request(run: Run, action: str, user, data: str = "") -> None:
    try:
        run.request(action, user=user, via=Via.CLI, data=data)
    except ActionNotAllowed as exc:
        raise CommandError(str(exc)) from None


def logs(opts: Namespace, console: Console) -> int:
    run = get_run(opts.run)
    if opts.follow:
        with follow.recording_interrupts() as interrupts:
            return _follow(run, console, interrupts, opts.tail, opts.raw)
    follow.print_log(run, follow.LogPrinter(console.out, console.err, raw=opts.raw), opts.tail)
    return exitcodes.OK


def token_create(opts: Namespace, console: Console) -> int:
    user = get_user(opts.username)
    if not user.is_staff:
        raise CommandError(f"User '{user.get_username()}' is not staff; tokens are for staff.")
    _row, secret = ApiToken.create_for(user)
    console.say(f"API token for {user.get_username()} (shown once; only its hash is stored):")
    console.say(secret)
    return exitcodes.OK


VERBS = {
    "worker": worker,
    "define": define,
    "tasks": tasks,
    "start": start,
    "runs": runs,
    "status": status,
    "pause": control,
    "resume": control,
    "abort": control,
    "input": send_input,
    "logs": logs,
    "token": token_create,
    "artifacts": artifacts.list_artifacts,
    "artifact": artifacts.get_artifact,
    "schedule": scheduling.schedule,
    "prune": scheduling.prune,
}
