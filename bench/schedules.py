"""Figures of runs that start themselves (issue 9), standalone until wired into `make bench`.

    DATABASE_URL=... python -m bench.schedules [--only due,idle,prune] [--samples N]

Uses the database DATABASE_URL names (default: a fresh SQLite file in a
temporary directory), migrated first; it creates its own tasks and removes
nothing else. Prints one JSON object:

- `due`: a due time -> its run's child started (the child stamps its first
  line with `time.time()`; compared with the run's `scheduled_for`), median
  and p99 over N `every: 1` firings. Target p99 <= 1 s.
- `idle`: the CPU of one worker process keeping 1,000 enabled schedules with
  nothing due for a year, over 10 s, as % of one core (`idle_baseline`: the
  same with no schedule, measured first). Target < 1%.
- `prune`: 100,000 finished runs (3 events each) pruned with `taskrunner
  prune` while a live run prints a stamped line every 10 ms; the delay from
  a line's stamp to it being readable in the database, median and p99.
  Target p99 <= 25 ms.
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
IDLE_SECONDS = 30.0  # how long an idle worker is measured
SETTLE_SECONDS = 5.0  # after it registered: its warm process starts, it reads what is due
STAMP_FIRST = "import time; print('started', repr(time.time()), flush=True)"
STAMP_LINES = (
    "import time\n"
    "while True:\n"
    "    print('line', repr(time.time()), flush=True)\n"
    "    time.sleep(0.01)\n"
)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values) * 1000, 1),
        "p99_ms": round(p99(values) * 1000, 1),
    }


def start_worker(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "taskrunner", "worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(str(condition))


def due_figure(env: dict, samples: int) -> dict:
    from taskrunner.events import store
    from taskrunner.models import Run, Schedule, Task

    task = Task.objects.create(
        name="bench-due", argv=[sys.executable, "-c", STAMP_FIRST], max_concurrent=4
    )
    schedule = Schedule.objects.create(task=task, every=1, overlap="queue")
    worker = start_worker(env)
    try:
        wait_for(
            lambda: (
                Run.objects.filter(schedule=schedule, status="succeeded").count() >= samples + 2
            ),
            samples * 3 + 30,
        )
    finally:
        Schedule.objects.filter(pk=schedule.pk).update(enabled=False)
        stop(worker)
    delays = []
    runs = Run.objects.filter(schedule=schedule, status="succeeded").order_by("id")
    for run in list(runs)[2:]:  # the first two include the worker's start-up
        lines = [e.text for batch in store.iter_after(run.pk, 0) for e in batch if e.kind == "log"]
        stamp = float(lines[0].split()[1])
        delays.append(stamp - run.scheduled_for.timestamp())
    return summary(delays)


def worker_ready(worker: subprocess.Popen, timeout: float = 60) -> None:
    """The worker has registered, then a few seconds more (its warm process, first reads)."""
    from taskrunner.models import Worker

    wait_for(
        lambda: Worker.objects.filter(pid=worker.pid, stopped_at__isnull=True).exists(), timeout
    )
    time.sleep(SETTLE_SECONDS)


def transactions() -> Callable[[], int] | None:
    """Transactions committed in this database so far (PostgreSQL's statistics), or None."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None

    def count() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
            return int(cursor.fetchone()[0])

    return count


def idle_figure(env: dict, count: int, seconds: float) -> dict:
    from taskrunner.models import Schedule, Task
    from taskrunner.schedules import first_run_at

    task = Task.objects.create(name=f"bench-idle-{count}-{time.monotonic_ns()}", argv=["true"])
    Schedule.objects.bulk_create(
        [Schedule(task=task, cron="0 0 1 1 *", timezone="UTC") for _ in range(count)]
    )
    for schedule in Schedule.objects.filter(task=task):
        Schedule.objects.filter(pk=schedule.pk).update(next_run_at=first_run_at(schedule))
    counter = transactions()
    worker = start_worker(env)
    try:
        worker_ready(worker)
        proc = psutil.Process(worker.pid)
        family = [proc, *proc.children(recursive=True)]  # its warm process too
        before = [p.cpu_times() for p in family]
        committed = counter() if counter else 0
        time.sleep(seconds)
        committed = (counter() - committed - 2) if counter else 0  # minus this count's own
        after = [p.cpu_times() for p in family]
    finally:
        stop(worker)
        Schedule.objects.filter(task=task).delete()
    busy = [a.user - b.user + a.system - b.system for a, b in zip(after, before, strict=True)]
    worker_busy, family_busy = busy[0], sum(busy)
    figure = {
        "schedules": count,
        "seconds": seconds,
        "cpu_percent_of_one_core": round(worker_busy / seconds * 100, 2),
        "with_warm_process": round(family_busy / seconds * 100, 2),
        "load_average": round(os.getloadavg()[0], 2),
    }
    if counter:
        figure["transactions_per_second"] = round(committed / seconds, 2)
    return figure


def old_runs(runs: int):
    """`runs` finished runs, 3 events each, past their task's retention (a day)."""
    from django.utils import timezone

    from taskrunner.models import EventChunk, Run, Task

    old = Task.objects.create(name=f"bench-old-{time.monotonic_ns()}", argv=["true"], keep_days=1)
    finished = timezone.now() - timezone.timedelta(days=3)
    for start in range(0, runs, 5000):
        batch = Run.objects.bulk_create(
            [
                Run(task=old, status="succeeded", finished_at=finished, last_seq=3)
                for _ in range(min(5000, runs - start))
            ]
        )
        EventChunk.objects.bulk_create(
            [
                EventChunk(
                    run_id=r.pk,
                    first_seq=s,
                    last_seq=s,
                    kind="status",
                    ts=finished,
                    body="{}",
                    size=2,
                )  # fmt: skip
                for r in batch
                for s in (1, 2, 3)
            ]
        )
    from django.db import connection

    if connection.vendor == "postgresql":
        # As a database that grew over days would have (autovacuum's): without
        # statistics the planner scans all 300,000 event rows for each batch.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return old


class LiveLog:
    """A live run printing a stamped line every 10 ms, and each line's delay to the database.

    A thread reads the run's events every 2 ms; a line's delay is from its
    stamp (`time.time()` in the child) to the read that returned it.
    """

    def __init__(self) -> None:
        from taskrunner.models import Task

        task = Task.objects.create(
            name=f"bench-live-{time.monotonic_ns()}", argv=[sys.executable, "-c", STAMP_LINES]
        )
        self.run = task.start()
        self.lines: list[tuple[float, float]] = []  # (stamp, delay)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch)

    def start(self) -> None:
        from taskrunner.models import Run

        wait_for(lambda: Run.objects.get(pk=self.run.pk).pid, 30)
        self.thread.start()

    def _watch(self) -> None:
        from django.db import connection

        from taskrunner.events import store

        cursor = 0
        while not self.done.is_set():
            for batch in store.iter_after(self.run.pk, cursor):
                seen = time.time()
                for event in batch:
                    cursor = event.seq
                    if event.kind == "log" and event.text.startswith("line "):
                        stamp = float(event.text.split()[1])
                        self.lines.append((stamp, seen - stamp))
            time.sleep(0.002)
        connection.close()

    def between(self, start: float, end: float) -> list[float]:
        return [delay for stamp, delay in self.lines if start <= stamp <= end]

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()
        self.run.request("abort")


class LockWaits:
    """PostgreSQL: how often, sampled every 10 ms, a session of this database waited on a lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples = 0
        self.waiting = 0
        self.longest_ms = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                row = conn.execute(
                    "SELECT count(*), coalesce(max(extract(epoch FROM now() - state_change)), 0) "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()
                self.samples += 1
                if row and row[0]:
                    self.waiting += 1
                    self.longest_ms = max(self.longest_ms, float(row[1]) * 1000)
                time.sleep(0.01)

    def __enter__(self) -> "LockWaits":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def figure(self) -> dict:
        return {
            "samples": self.samples,
            "with_a_lock_wait": self.waiting,
            "longest_seen_ms": round(self.longest_ms, 1),
        }


def prune_figure(env: dict, runs: int, background: bool = False) -> dict:
    """Log latency of a live run while `taskrunner prune` (or the worker itself) prunes.

    The worker prunes in the background with TASKRUNNER_PRUNE_SECONDS=8: its
    first round starts once the live run prints; the prune is timed from its
    first run gone to its last.
    """
    from taskrunner.models import Run

    old = old_runs(runs)
    live = LiveLog()
    worker = start_worker({**env, "TASKRUNNER_PRUNE_SECONDS": "8" if background else "3600"})
    postgres = env["DATABASE_URL"].startswith("postgres")
    figure: dict = {"runs": runs}
    try:
        live.start()
        time.sleep(2)
        with LockWaits(env["DATABASE_URL"]) if postgres else contextlib.nullcontext() as waits:
            started = time.time()
            if background:
                left = Run.objects.filter(task=old).count
                wait_for(lambda: left() < runs, 60)
                started = time.time()
                wait_for(lambda: left() == 0, 600)
            else:
                pruned = subprocess.run(
                    [sys.executable, "manage.py", "taskrunner", "prune"],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figure["prune_output"] = pruned.stdout.strip()
            ended = time.time()
        time.sleep(0.5)  # the lines stamped before the end are read
        during = live.between(started, ended)
        before = live.between(0, started - 0.5)
    finally:
        live.stop()
        stop(worker)
    figure["prune_seconds"] = round(ended - started, 1)
    figure["log_latency_during_prune"] = summary(during) if during else None
    figure["log_latency_before_prune"] = summary(before) if before else None
    if waits is not None:
        figure["lock_waits_during_prune"] = waits.figure()
    figure["load_average"] = round(os.getloadavg()[0], 2)
    return figure


def fresh_database(url: str) -> tuple[str, Callable[[], None]]:
    """A database of this run's own on the server `url` names, and how to drop it.

    PostgreSQL: `bench_schedules_<pid>`, created through `url`'s database and
    dropped at the end (the database `url` names is left alone). SQLite: a
    file in a temporary directory, removed with it; "" means that too.
    """
    if not url.startswith(("postgres://", "postgresql://")):
        tmp = tempfile.mkdtemp(prefix="bench-schedules-")
        return url or f"sqlite:///{tmp}/bench.sqlite3", lambda: shutil.rmtree(tmp, True)
    import psycopg

    name = f"bench_schedules_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{urlsplit(url)._replace(path='/' + name).geturl()}", drop


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schedules", description=__doc__)
    parser.add_argument("--only", default="due,idle,prune,prune_background")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS)
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", "bench-only-key")
    env.setdefault("HTTPS", "false")
    env.setdefault("LOG_LEVEL", "WARNING")
    env["DATABASE_URL"], drop = fresh_database(env.get("DATABASE_URL", ""))
    try:
        return run_figures(env, args)
    finally:
        drop()


def run_figures(env: dict, args: argparse.Namespace) -> int:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    wanted = set(args.only.split(","))
    results: dict = {
        "database": env["DATABASE_URL"].split(":")[0],
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if "due" in wanted:
        results["due"] = due_figure(env, args.samples)
    if "idle" in wanted:
        # The same worker with no schedule at all first: what the schedules add is the difference.
        results["idle_baseline"] = idle_figure(env, 0, args.idle_seconds)
        results["idle"] = idle_figure(env, 1000, args.idle_seconds)
        if env["DATABASE_URL"].startswith("sqlite"):
            # The fallback alone (no wake socket: its directory unusable), polling data_version.
            results["idle_polling_only"] = idle_figure(
                {**env, "TASKRUNNER_WAKE_DIR": "/dev/null/wake"}, 1000, args.idle_seconds
            )
    if "prune" in wanted:
        results["prune"] = prune_figure(env, args.runs)
    if "prune_background" in wanted:
        results["prune_background"] = prune_figure(env, args.runs, background=True)
    results["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
