"""The argument parser of `manage.py taskrunner` and the text forms of its options."""

import argparse
from typing import Any

from django.core.management.base import CommandError, CommandParser

from taskrunner.cli import exitcodes
from taskrunner.models import RunStatus
from taskrunner.params import TYPES

# The default of an option whose "none" is a real value (`--timeout none`).
NOT_GIVEN = object()


class OneLineParser(CommandParser):
    """argparse, but a usage error is one line on stderr, not usage plus error."""

    def error(self, message: str):
        if self.called_from_command_line:
            self.exit(exitcodes.USAGE, f"{self.prog}: error: {message} (see --help)\n")
        raise CommandError(f"Error: {message}")


def split_pair(text: str, option: str) -> tuple[str, str]:
    """`K=V` to (K, V); the value may contain `=` and may be empty."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise CommandError(f"{option} wants KEY=VALUE, not {text!r}.")
    return key.strip(), value


def pairs_to_dict(items: list[str] | None, option: str) -> dict[str, str]:
    """Repeated `K=V` options to a dict; a key given twice is refused, not overwritten."""
    result: dict[str, str] = {}
    for item in items or []:
        key, value = split_pair(item, option)
        if key in result:
            raise CommandError(f"{option} {key} is given twice.")
        result[key] = value
    return result


def param_spec(text: str) -> dict[str, Any]:
    """`NAME[:TYPE][=DEFAULT]` to a parameter declaration (checked later by the model)."""
    head, has_default, default = text.partition("=")
    name, has_type, type_name = head.partition(":")
    name = name.strip()
    if not name:
        raise CommandError(f"--param wants NAME[:TYPE][=DEFAULT], not {text!r}.")
    type_name = type_name.strip() if has_type else "str"
    if type_name not in TYPES:
        raise CommandError(
            f"--param {name}: type must be one of {', '.join(TYPES)}, not {type_name!r}."
        )
    return {"name": name, "type": type_name, "default": default if has_default else None}


def apply_choices(declared: list[dict[str, Any]], items: list[str] | None) -> None:
    """Add `--choices NAME=A,B` to the declared parameter NAME."""
    by_name = {spec["name"]: spec for spec in declared}
    for name, values in pairs_to_dict(items, "--choices").items():
        if name not in by_name:
            raise CommandError(f"--choices {name}: no --param {name} is declared.")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not choices:
            raise CommandError(f"--choices {name} needs at least one value.")
        by_name[name]["choices"] = choices


def _declared(declared: list[dict[str, Any]], name: str, option: str) -> dict[str, Any]:
    for spec in declared:
        if spec["name"] == name:
            return spec
    raise CommandError(f"{option} {name}: no --param {name} is declared.")


def apply_allow_dash(declared: list[dict[str, Any]], names: list[str]) -> None:
    """`--allow-dash NAME`: values of str parameter NAME may begin with `-`."""
    for name in names:
        _declared(declared, name.strip(), "--allow-dash")["allow_dash"] = True


def apply_patterns(declared: list[dict[str, Any]], items: list[str]) -> None:
    """`--pattern NAME=REGEX`: values of str parameter NAME must match REGEX whole."""
    for name, pattern in pairs_to_dict(items, "--pattern").items():
        _declared(declared, name, "--pattern")["pattern"] = pattern or None


def optional_seconds(text: str) -> float | None:
    """A duration in seconds; `none` (or empty) clears it."""
    if text.strip().lower() in {"", "none", "off"}:
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None


def seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def run_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a run id is a number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a run id is positive, not {value}")
    return value


EPILOG = (
    "Exit codes: 0 done (with --follow: the run succeeded); 1 error (one line on stderr); "
    "2 bad usage; with --follow, by the run's final status: 3 failed, 4 aborted, "
    "5 timed out, 6 lost; 130 interrupted (the run goes on)."
)


def add_verbs(parser: CommandParser) -> None:

    parser.epilog = EPILOG
    verbs = parser.add_subparsers(
        dest="verb", metavar="VERB", required=True, parser_class=OneLineParser
    )
    _add_worker(verbs)
    _add_define(verbs)
    verbs.add_parser("tasks", help="list tasks")
    _add_start(verbs)
    _add_runs(verbs)
    _add_status(verbs)
    for action in ("pause", "resume", "abort"):
        sub = verbs.add_parser(action, help=f"{action} a run")
        sub.add_argument("run", type=run_id, metavar="RUN")
        _add_user(sub)
    _add_input(verbs)
    _add_logs(verbs)
    _add_token(verbs)
    _add_artifacts(verbs)
    _scheduling().add_verbs(verbs)  # schedule, prune


def _scheduling():
    from taskrunner.cli import scheduling  # imported late: it uses this module's helpers

    return scheduling


def _add_user(sub) -> None:
    sub.add_argument("--user", metavar="USERNAME", help="record who asked (default: nobody)")


def _add_worker(verbs) -> None:
    sub = verbs.add_parser("worker", help="run the supervisor in the foreground")
    sub.add_argument("--concurrency", type=positive_int, default=8, metavar="N")
    sub.add_argument(
        "--until-idle", action="store_true", help="exit once no run is queued or running"
    )
    sub.add_argument("--max-runs", type=positive_int, metavar="N", help="exit after N runs")


def _add_define(verbs) -> None:
    sub = verbs.add_parser(
        "define",
        help="create or update a task",
        usage="%(prog)s NAME [options] -- ARGV...",
        description="Create a task, or update the options given of an existing one. "
        "The command comes last, after --: its arguments, no shell. An argument that is "
        "exactly {NAME} is replaced by the value of parameter NAME.",
    )
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--title")
    sub.add_argument("--description")
    sub.add_argument(
        "--timeout", type=optional_seconds, default=NOT_GIVEN, metavar="S", help="seconds, or none"
    )
    sub.add_argument("--grace", type=seconds, metavar="S", help="seconds from SIGTERM to SIGKILL")
    sub.add_argument("--max-concurrent", type=positive_int, metavar="N")
    sub.add_argument("--cwd", metavar="DIR")
    sub.add_argument("--env", action="append", metavar="K=V")
    sub.add_argument("--param", action="append", metavar="NAME[:TYPE][=DEFAULT]")
    sub.add_argument("--choices", action="append", metavar="NAME=A,B,...")
    sub.add_argument(
        "--allow-dash",
        action="append",
        metavar="NAME",
        help="values of str parameter NAME may begin with '-' (refused by default)",
    )
    sub.add_argument(
        "--pattern",
        action="append",
        metavar="NAME=REGEX",
        help="values of str parameter NAME must match REGEX as a whole",
    )
    sub.add_argument(
        "--pass-env",
        action="append",
        metavar="NAME",
        help="a secret of the site the child inherits (DATABASE_URL, SECRET_KEY); "
        "repeat for each; an empty NAME clears the list",
    )
    enabled = sub.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True)
    enabled.add_argument("--disable", dest="enabled", action="store_const", const=False)
    sub.add_argument(
        "--user",
        metavar="USERNAME",
        help="act as this staff user: only a superuser may change what a task executes",
    )
    _scheduling().add_define_options(sub)
    # The command itself comes after `--` (see the management command).


def _add_start(verbs) -> None:
    sub = verbs.add_parser("start", help="queue a run and print its id")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument(
        "--param", action="append", metavar="K=V", help="a parameter's value; repeat for each"
    )
    _add_user(sub)
    sub.add_argument("--follow", action="store_true", help="print its output until it ends")
    _scheduling().add_start_options(sub)


def _add_runs(verbs) -> None:
    sub = verbs.add_parser("runs", help="list runs, newest first")
    sub.add_argument("--task", metavar="NAME")
    sub.add_argument("--status", choices=list(RunStatus.values), metavar="S")
    sub.add_argument("--limit", type=positive_int, default=20, metavar="N")


def _add_status(verbs) -> None:
    sub = verbs.add_parser("status", help="show one run")
    sub.add_argument("run", type=run_id, metavar="RUN")
    sub.add_argument("--json", action="store_true", help="the Run JSON of the API")


def _add_input(verbs) -> None:
    sub = verbs.add_parser("input", help="send one line to a run's standard input")
    sub.add_argument("run", type=run_id, metavar="RUN")
    sub.add_argument("line", metavar="LINE")
    _add_user(sub)


def _add_logs(verbs) -> None:
    sub = verbs.add_parser("logs", help="print a run's output")
    sub.add_argument("run", type=run_id, metavar="RUN")
    sub.add_argument("--follow", action="store_true", help="until the run ends")
    sub.add_argument("--tail", type=positive_int, metavar="N", help="only the last N lines")
    sub.add_argument(
        "--raw",
        action="store_true",
        help="print control characters as they are, even on a terminal (escaped by default)",
    )


def _add_token(verbs) -> None:
    sub = verbs.add_parser("token", help="API tokens")
    actions = sub.add_subparsers(
        dest="token_action", metavar="ACTION", required=True, parser_class=OneLineParser
    )
    create = actions.add_parser("create", help="create a token for a staff user")
    create.add_argument("username", metavar="USERNAME")


def _add_artifacts(verbs) -> None:
    sub = verbs.add_parser("artifacts", help="list a run's artifacts")
    sub.add_argument("run", type=run_id, metavar="RUN")
    sub.add_argument("--json", action="store_true", help="the Artifact JSON of the API")
    sub = verbs.add_parser("artifact", help="write one artifact to standard output or FILE")
    sub.add_argument("run", type=run_id, metavar="RUN")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("-o", "--output", metavar="FILE", help="write to FILE (- for stdout)")
