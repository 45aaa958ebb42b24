"""Printing a run's output from the database, and following it live.

The command line is a process of its own: it learns of new events the way a
web process does, by waking on commits (`DatabaseWaker`: PRAGMA data_version
on SQLite, LISTEN on PostgreSQL) and reading `seq > last`. Each log line is
printed once, in order; stderr lines go to stderr.

The ORM is used between `runner.run(...)` calls, when no event loop is
running, so Django's async-safety check is satisfied without threads.
"""

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from taskrunner.cli.text import terminal_safe
from taskrunner.events import store
from taskrunner.events.store import Event
from taskrunner.models import FINAL_STATUSES, EventKind, Run
from taskrunner.wakeup import DatabaseWaker

# An upper bound on a wait: a wake-up missed for any reason costs at most this.
MAX_WAIT = 1.0
INTERRUPT_CHECK = 0.1  # how soon Ctrl-C is noticed while waiting


class LogPrinter:
    """Writes log events to stdout or stderr; a `continued` piece gets no newline.

    On a terminal, control characters of the child's output (escape sequences)
    are printed visibly escaped unless `raw`: a child must not drive the
    terminal of whoever reads its log. Into a pipe or a file they go as stored.
    """

    def __init__(self, stdout: TextIO, stderr: TextIO, *, raw: bool = False):
        self.streams = {"stdout": stdout, "stderr": stderr}
        self.escape = {
            name: not raw and is_terminal(stream) for name, stream in self.streams.items()
        }

    def write(self, event: Event) -> None:
        name = event.stream if event.stream in self.streams else "stdout"
        out = self.streams[name]
        line = terminal_safe(event.text) if self.escape[name] else event.text
        out.write(line if event.continued else line + "\n")

    def flush(self) -> None:
        for out in self.streams.values():
            out.flush()


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def events_after(run_id: int, last: int, *, upto: int | None = None) -> Iterator[Event]:
    """Every event with seq > last (and <= upto), in order, read in bounded batches."""
    for batch in store.iter_after(run_id, last, upto=upto):
        yield from batch


def tail_start(run_id: int, lines: int, upto: int) -> int:
    """The seq after which the last `lines` log lines (up to `upto`) begin."""
    return store.tail_start(run_id, lines, upto)


def print_events(run_id: int, last: int, printer: LogPrinter, upto: int | None = None):
    """Print the log events after `last`; return (new last, final status seen or None)."""
    final = None
    for event in events_after(run_id, last, upto=upto):
        last = event.seq
        if event.kind == EventKind.LOG:
            printer.write(event)
        elif event.kind == EventKind.STATUS and (event.data or {}).get("status") in FINAL_STATUSES:
            final = event.data["status"]
    printer.flush()
    return last, final


def print_log(run: Run, printer: LogPrinter, tail: int | None = None) -> int:
    """Print the run's output so far; return the last seq read."""
    upto = Run.objects.filter(pk=run.pk).values_list("last_seq", flat=True).get()
    start = tail_start(run.pk, tail, upto) if tail else 0
    last, _ = print_events(run.pk, start, printer, upto=upto)
    return max(last, upto)


class Interrupts:
    """Ctrl-C recorded, not raised, while following (see `recording_interrupts`).

    A KeyboardInterrupt raised at an arbitrary point (say, inside asyncio's
    loop set-up or a psycopg connect) can leave half-built objects that print
    tracebacks at exit; a flag checked by the loop cannot.
    """

    def __init__(self):
        self.count = 0

    def record(self, signum, frame) -> None:
        self.count += 1

    def __bool__(self) -> bool:
        return self.count > 0


@contextmanager
def recording_interrupts() -> Iterator[Interrupts]:
    interrupts = Interrupts()
    previous = signal.signal(signal.SIGINT, interrupts.record)
    try:
        yield interrupts
    finally:
        signal.signal(signal.SIGINT, previous)


def follow(run: Run, printer: LogPrinter, interrupts: Interrupts, tail: int | None = None):
    """Print the run's output until it is final; the run as it ended, or None on Ctrl-C."""
    with asyncio.Runner() as runner:
        waker = DatabaseWaker()
        try:
            # Taken before the first read, so a commit made during it wakes us.
            runner.run(waker.wait(0))
            last = print_log(run, printer, tail)
            while not interrupts:
                last, final = print_events(run.pk, last, printer)
                if final is not None or _ended_with_nothing_after(run, last):
                    run.refresh_from_db()
                    return run
                runner.run(_wait(waker, interrupts))
            return None
        finally:
            runner.run(waker.close())


async def _wait(waker: DatabaseWaker, interrupts: Interrupts) -> None:
    """Until a commit, Ctrl-C or MAX_WAIT; in slices, so Ctrl-C is seen at once."""
    deadline = time.monotonic() + MAX_WAIT
    while not interrupts and time.monotonic() < deadline:
        if await waker.wait(min(INTERRUPT_CHECK, deadline - time.monotonic())):
            return


def _ended_with_nothing_after(run: Run, last: int) -> bool:
    """The run is final and every event it has was read (the final status one included)."""
    status, last_seq = Run.objects.filter(pk=run.pk).values_list("status", "last_seq").get()
    return status in FINAL_STATUSES and last_seq <= last
