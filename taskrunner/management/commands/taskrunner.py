"""`python manage.py taskrunner VERB`: the task runner's command line.

A thin shell: parsing lives in `taskrunner.cli.parsing`, each verb in
`taskrunner.cli.verbs`, exit codes in `taskrunner.cli.exitcodes`. Errors are
one line on stderr and a non-zero exit, never a traceback (`--traceback`
shows one when debugging).
"""

import os
import sys
from argparse import Namespace

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from taskrunner.cli import exitcodes, verbs
from taskrunner.cli.parsing import OneLineParser, add_verbs


class Command(BaseCommand):
    help = "Run the supervisor, define tasks, start, watch and control runs."
    # The verbs must answer fast; the worker runs the checks itself.
    requires_system_checks = []

    # The command after `define NAME ... --`: argparse cannot take positionals
    # after options, so run_from_argv cuts it off before parsing.
    command_argv: list[str] | None = None

    def run_from_argv(self, argv):
        if "--" in argv[2:]:
            cut = argv.index("--", 2)
            argv, self.command_argv = argv[:cut], argv[cut + 1 :]
        super().run_from_argv(argv)

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django builds a plain CommandParser; ours prints usage errors on one line.
        parser.__class__ = OneLineParser
        return parser

    def add_arguments(self, parser):
        add_verbs(parser)

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            if not getattr(self, "_called_from_command_line", False) or options.get("traceback"):
                raise
            self.stderr.write(f"error: {exc}")
            sys.exit(exc.returncode)

    def handle(self, *args, **options):
        opts = Namespace(**options)
        if opts.verb == "define":
            opts.argv = self.command_argv or []
        elif self.command_argv is not None:
            raise CommandError(f"Only define takes a command after --, not {opts.verb}.")
        console = verbs.Console(_raw(self.stdout), _raw(self.stderr))
        if opts.verb == "worker":
            self.check()
        try:
            code = verbs.VERBS[opts.verb](opts, console)
        except DatabaseError as exc:
            raise CommandError(_database_error(exc)) from exc
        except KeyboardInterrupt:
            code = exitcodes.INTERRUPTED
        except BrokenPipeError:
            _silence_stdout()
            code = exitcodes.ERROR
        if code:
            sys.exit(code)


def _database_error(exc: DatabaseError) -> str:
    text = str(exc).strip()
    message = f"Database error: {text.splitlines()[0] if text else type(exc).__name__}"
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        message += " (has `manage.py migrate` been run?)"
    return message


def _raw(wrapper):
    """The stream behind Django's OutputWrapper, which would add newlines and colours."""
    return getattr(wrapper, "_out", wrapper)


def _silence_stdout() -> None:
    # The reader went away (`| head`): stop Python complaining at exit when it
    # flushes stdout again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
