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
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
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


def idle_figure(env: dict, count: int = 1000) -> dict:
    from taskrunner.models import Schedule, Task

    task = Task.objects.create(name=f"bench-idle-{count}", argv=["true"])
    Schedule.objects.bulk_create(
        [Schedule(task=task, cron="0 0 1 1 *", timezone="UTC") for _ in range(count)]
    )
    from taskrunner.schedules import first_run_at

    for schedule in Schedule.objects.filter(task=task):
        Schedule.objects.filter(pk=schedule.pk).update(next_run_at=first_run_at(schedule))
    worker = start_worker(env)
    try:
        proc = psutil.Process(worker.pid)
        time.sleep(5)  # start-up (imports, migrations check) is not idling
        before = proc.cpu_times()
        time.sleep(10)
        after = proc.cpu_times()
    finally:
        stop(worker)
    busy = (after.user - before.user) + (after.system - before.system)
    return {"schedules": count, "cpu_percent_of_one_core": round(busy / 10 * 100, 2)}


def prune_figure(env: dict, runs: int) -> dict:
    from django.db import connection
    from django.utils import timezone

    from taskrunner.events import store
    from taskrunner.models import EventChunk, Run, Task

    old = Task.objects.create(name="bench-old", argv=["true"], keep_days=1)
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
    live_task = Task.objects.create(name="bench-live", argv=[sys.executable, "-c", STAMP_LINES])
    live = live_task.start()
    worker = start_worker({**env, "TASKRUNNER_PRUNE_SECONDS": "3600"})
    delays: list[float] = []
    done = threading.Event()

    def watch() -> None:
        cursor = 0
        while not done.is_set():
            for batch in store.iter_after(live.pk, cursor):
                seen = time.time()
                for event in batch:
                    cursor = event.seq
                    if event.kind == "log" and event.text.startswith("line "):
                        delays.append(seen - float(event.text.split()[1]))
            time.sleep(0.002)
        connection.close()

    try:
        wait_for(lambda: Run.objects.get(pk=live.pk).pid, 30)
        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(2)
        before = len(delays)
        started = time.monotonic()
        pruned = subprocess.run(
            [sys.executable, "manage.py", "taskrunner", "prune"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = time.monotonic() - started
        during = delays[before:]
        done.set()
        watcher.join()
    finally:
        done.set()
        live.request("abort")
        stop(worker)
    return {
        "runs": runs,
        "prune_seconds": round(seconds, 1),
        "prune_output": pruned.stdout.strip(),
        "log_latency_during_prune": summary(during) if during else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schedules", description=__doc__)
    parser.add_argument("--only", default="due,idle,prune")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--runs", type=int, default=100_000)
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", "bench-only-key")
    env.setdefault("HTTPS", "false")
    env.setdefault("LOG_LEVEL", "WARNING")
    tmp = tempfile.mkdtemp(prefix="bench-schedules-")
    env.setdefault("DATABASE_URL", f"sqlite:///{tmp}/bench.sqlite3")
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    wanted = set(args.only.split(","))
    results: dict = {"database": env["DATABASE_URL"].split(":")[0]}
    if "due" in wanted:
        results["due"] = due_figure(env, args.samples)
    if "idle" in wanted:
        # The same worker with no schedule at all first: what the schedules add is the difference.
        results["idle_baseline"] = idle_figure(env, 0)
        results["idle"] = idle_figure(env)
    if "prune" in wanted:
        results["prune"] = prune_figure(env, args.runs)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
