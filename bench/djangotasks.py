"""Django tasks through the SupervisedBackend: `python -m bench.djangotasks [sqlite|postgres]`.

Prints one JSON object:
- `first_line_ms`: `enqueue()` (in this process) -> the function's first line
  at an SSE client (GET /api/runs/ID/events/ on uvicorn), warm (forked from
  the worker's warm process) and cold (`python -m taskrunner.djangotask`),
  each a summary of TRIALS runs; target: warm median <= 100 ms.
- `burst`: 100 tasks enqueued at once, each returning at once: all must be
  SUCCESSFUL (read back with get_result); tasks/s from the first enqueue to
  the last final status.

A fresh database (SQLite file or PostgreSQL `bench_<pid>`), uvicorn and one
worker per phase are started and removed, as bench/backend.py does.
"""

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.backend import Database, setup_django
from bench.client import SSEClient
from bench.stats import summary
from bench.system import Processes, free_port, server_env

TRIALS = int(os.environ.get("BENCH_DJANGO_TRIALS", "20"))
BURST = 100
FINAL = {"succeeded", "failed", "aborted", "timed_out", "lost"}


def prepare() -> str:
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from taskrunner.models import ApiToken

    call_command("migrate", verbosity=0, interactive=False)
    user = User.objects.create_superuser("bench", "bench@example.com", "bench-password-1234")
    return ApiToken.create_for(user)[1]


def wait_final(run_id: int, timeout: float = 60) -> str:
    from taskrunner.models import Run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
        if status in FINAL:
            return status
        time.sleep(0.005)
    raise RuntimeError(f"run {run_id} did not finish within {timeout} s")


def started_warm(log: Path, run_id: int) -> bool:
    marker = f"run started run_id={run_id} "
    return any(marker in line and "start=warm" in line for line in log.read_text().splitlines())


async def first_line_trials(port: int, token: str, log: Path, want_warm: bool) -> dict:
    from bench.djangotask_functions import first_line

    measured, wrong_start = [], 0
    for trial in range(TRIALS + 1):  # the first, untimed: the worker may be starting up
        got: list[float] = []
        holder: list[SSEClient] = []

        def on_events(block: bytes, received: float, got=got, holder=holder) -> None:
            if not got and b"event: log\n" in block:
                got.append(time.perf_counter())
                holder[0].ended = True  # the first line is all this figure needs

        t0 = time.perf_counter()
        result = await asyncio.to_thread(first_line.enqueue)
        client = SSEClient(port, f"/api/runs/{result.id}/events/", token, on_events)
        holder.append(client)
        await client.run(asyncio.get_running_loop().time() + 30)
        if not got:
            raise RuntimeError(f"run {result.id}: no line arrived (status {client.status})")
        await asyncio.to_thread(wait_final, int(result.id))
        if trial == 0:
            continue
        if started_warm(log, int(result.id)) != want_warm:
            wrong_start += 1
        measured.append((got[0] - t0) * 1000)
    return {**summary(measured), "unit": "ms", "started_otherwise": wrong_start}


def burst(log: Path) -> dict:
    from django.tasks import default_task_backend

    from bench.djangotask_functions import instant

    t0 = time.perf_counter()
    results = [instant.enqueue(n) for n in range(BURST)]
    enqueued = time.perf_counter() - t0
    for result in results:
        wait_final(int(result.id), timeout=300)
    elapsed = time.perf_counter() - t0
    finals = [default_task_backend.get_result(r.id) for r in results]
    successful = sum(1 for r in finals if r.status == "SUCCESSFUL")
    values_ok = all(r.return_value == n for n, r in enumerate(finals) if r.status == "SUCCESSFUL")
    warm = sum(1 for r in results if started_warm(log, int(r.id)))
    return {
        "tasks": BURST,
        "successful": successful,
        "values_ok": values_ok,
        "started_warm": warm,
        "enqueue_seconds": round(enqueued, 3),
        "seconds": round(elapsed, 3),
        "tasks_per_second": round(BURST / elapsed, 1),
        "met": successful == BURST and values_ok,
    }


def phase(db_url: str, token: str, port: int, warm: bool, log_dir: Path) -> dict:
    env = server_env(db_url)
    env["TASKRUNNER_WARM_STARTS"] = "true" if warm else "false"
    env["LOG_LEVEL"] = "INFO"  # the worker says how it started each run
    procs = Processes(env, log_dir)
    try:
        procs.worker()
        log = log_dir / "worker.log"
        if warm:
            deadline = time.monotonic() + 60
            while "warm process ready" not in log.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError("the warm process was not ready within 60 s")
                time.sleep(0.05)
        figures = {"first_line_ms": asyncio.run(first_line_trials(port, token, log, warm))}
        if warm:
            figures["burst"] = burst(log)
        return figures
    finally:
        procs.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    backend = argv[0] if argv else "sqlite"
    db = Database(backend)
    db.create()
    try:
        setup_django(db.url)
        token = prepare()
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="bench-django-") as tmp:
            web = Processes(server_env(db.url), Path(tmp))
            try:
                web.uvicorn(port)
                warm_dir, cold_dir = Path(tmp, "warm"), Path(tmp, "cold")
                warm_dir.mkdir()
                cold_dir.mkdir()
                warm = phase(db.url, token, port, True, warm_dir)
                cold = phase(db.url, token, port, False, cold_dir)
            finally:
                web.close()
        from django.db import connections

        connections.close_all()
        report = {
            "backend": backend,
            "trials": TRIALS,
            "first_line_ms": {"warm": warm["first_line_ms"], "cold": cold["first_line_ms"]},
            "first_line_target": "warm median <= 100 ms",
            "first_line_met": warm["first_line_ms"]["median"] <= 100,
            "burst": warm["burst"],
        }
        print(json.dumps(report, indent=2))
        return 0 if report["first_line_met"] and report["burst"]["met"] else 1
    finally:
        db.drop()


if __name__ == "__main__":
    sys.exit(main())
