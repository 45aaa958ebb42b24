"""Load: many busy runs at once, watched by many SSE viewers on one web process.

    .venv/bin/python -m bench.load [sqlite|postgres] [--runs 100] [--rate 200]
        [--viewers 200] [--seconds 60] [--workers 2]

A fresh database (a SQLite file, or a PostgreSQL database made and dropped
here), WORKERS real workers, one real uvicorn; RUNS runs of
bench/children/rate.py, each printing RATE lines a second for SECONDS, with
VIEWERS SSE clients spread over the runs (all connected before the flood
starts). Prints one JSON object:

- `latency_ms`: p50/p99/max, across all viewers, from the moment a line was
  printed (the child stamps it) to the moment a viewer parsed it (target:
  p99 <= 100 ms);
- `missing`, `repeated`, `out_of_order`: lines a viewer or the store did not
  get exactly once, in order (target: 0);
- `web_rss_growth_mb`, `worker_rss_growth_mb` (each worker): RSS at the end
  against RSS once all viewers were connected (target: <= 100 MB each);
- `errors`: anything a viewer or the API answered that it should not.

`watch()` and `Tally` are also used by tests/api/test_load.py, the bounded
version in `make test`.
"""

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
RATE_CHILD = str(ROOT / "bench" / "children" / "rate.py")
LINE = re.compile(r"^line (\d+) at ([0-9.]+) ")


@dataclass
class Tally:
    """What one viewer saw of one run's log."""

    run_id: int
    numbers: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ended: bool = False

    def problems(self, expected: int) -> dict[str, int]:
        seen = set(self.numbers)
        return {
            "missing": len(set(range(1, expected + 1)) - seen),
            "repeated": len(self.numbers) - len(seen),
            "out_of_order": sum(
                1 for a, b in zip(self.numbers, self.numbers[1:], strict=False) if b <= a
            )
            + sum(1 for a, b in zip(self.seqs, self.seqs[1:], strict=False) if b <= a),
        }


# A log event of the rate child, as the server frames it (taskrunner.events.payloads).
LOG_EVENT = re.compile(
    rb'event: log\ndata: \{"seq": (\d+), "stream": "[a-z]+", "line": "line (\d+) at ([0-9.]+) '
)
ERROR_EVENT = re.compile(rb"event: error\ndata: ([^\n]*)")


async def watch(client: httpx.AsyncClient, run_id: int, tally: Tally, connected: asyncio.Event):
    """Read the run's SSE stream until its `end` event, tallying every log line.

    The stream is cut into blocks of whole events and read with one regular
    expression a block: 200 viewers of 20,000 lines a second must not make the
    measuring process the slowest part (httpx's line iterator and a JSON parse
    an event took more CPU than the server spent sending them).
    """
    try:
        async with client.stream("GET", f"/api/runs/{run_id}/events/") as response:
            if response.status_code != 200:
                tally.errors.append(f"status {response.status_code}")
                return
            connected.set()
            pending = b""
            async for data in response.aiter_bytes():
                pending += data
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    continue
                block, pending = pending[: cut + 2], pending[cut + 2 :]
                now = time.time()
                for seq, number, printed in LOG_EVENT.findall(block):
                    tally.latencies.append(now - float(printed))
                    tally.numbers.append(int(number))
                    tally.seqs.append(int(seq))
                if b"event: error\n" in block:
                    tally.errors += [
                        "error event: " + m.decode() for m in ERROR_EVENT.findall(block)
                    ]
                if b"event: end\n" in block:
                    tally.ended = True
                    return
    except httpx.HTTPError as exc:
        tally.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        connected.set()


async def watch_all(base_url: str, token: str, run_ids: list[int], viewers: int, start) -> list:
    """VIEWERS streams spread over the runs; `start()` is called once all are connected."""
    limits = httpx.Limits(max_connections=viewers + 10, max_keepalive_connections=viewers + 10)
    timeout = httpx.Timeout(60.0, connect=30.0)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=timeout
    ) as client:
        tallies = [Tally(run_ids[i % len(run_ids)]) for i in range(viewers)]
        connected = [asyncio.Event() for _ in tallies]
        tasks = [
            asyncio.create_task(watch(client, t.run_id, t, c))
            for t, c in zip(tallies, connected, strict=True)
        ]
        await asyncio.gather(*(c.wait() for c in connected))
        await asyncio.to_thread(start)
        await asyncio.gather(*tasks)
    return tallies


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def stored_problems(run_ids: list[int], expected: int) -> dict[str, int]:
    """Every line stored once: read back from the events table."""
    from taskrunner.events import store

    totals = {"missing": 0, "repeated": 0, "out_of_order": 0}
    for run_id in run_ids:
        tally = Tally(run_id)
        for batch in store.iter_after(run_id, 0, log_only=True):
            for event in batch:
                match = LINE.match(event.text)
                if match:
                    tally.numbers.append(int(match.group(1)))
                    tally.seqs.append(event.seq)
        for key, value in tally.problems(expected).items():
            totals[key] += value
    return totals


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


# --- the standalone benchmark -------------------------------------------------------


def _database(kind: str, scratch: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{scratch / 'db.sqlite3'}", None
    name = f"bench_load_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)  # fmt: skip
    return f"postgres://postgres@127.0.0.1:5432/{name}", name


def _drop(name: str | None) -> None:
    if name:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {name}"],
            check=False,
            capture_output=True,
        )


def _wait(condition, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {condition}")
        time.sleep(interval)


def _answers(url: str) -> bool:
    try:
        httpx.get(url + "/api/", timeout=1)
        return True
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", nargs="?", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    (ROOT / "var").mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-load-", dir=ROOT / "var"))
    url, pg_name = _database(args.database, scratch)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": "bench-only-key",
        "HTTPS": "false",
        "PYTHONUNBUFFERED": "1",
        "TASKRUNNER_SSE_MAX_STREAMS_PER_USER": str(args.viewers + 100),
        "TASKRUNNER_SSE_MAX_STREAMS_PER_PROCESS": str(args.viewers + 100),
    }
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connections

    from taskrunner.models import ApiToken, Run, Task, Via

    processes: list[subprocess.Popen] = []
    try:
        call_command("migrate", verbosity=0)
        user = User.objects.create_user("bench", is_staff=True, is_superuser=True)
        _row, token = ApiToken.create_for(user)
        seconds = str(args.seconds)
        task = Task.objects.create(
            name="flood",
            argv=[sys.executable, RATE_CHILD, str(args.rate), seconds, "wait"],
            max_concurrent=args.runs,
        )
        per_worker = -(-args.runs // args.workers)
        for index in range(args.workers):
            log = open(scratch / f"worker-{index}.log", "wb")  # noqa: SIM115 - with the process
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "manage.py",
                        "taskrunner",
                        "worker",
                        "--concurrency",
                        str(per_worker),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            )
        port = 8700 + os.getpid() % 200
        server_log = open(scratch / "server.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "backoffice.asgi:application",
             "--port", str(port), "--no-access-log"],
            cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.append(server)
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: _answers(base), timeout=60)
        runs = [task.start({}, via=Via.CLI) for _ in range(args.runs)]
        run_ids = [run.pk for run in runs]

        def all_waiting() -> bool:
            return Run.objects.filter(pk__in=run_ids, status="running").count() == len(run_ids)

        _wait(all_waiting, timeout=120)
        connections.close_all()
        rss_before: dict[int, int] = {}

        def start() -> None:
            for proc in processes:
                rss_before[proc.pid] = rss(proc.pid)
            for run in Run.objects.filter(pk__in=run_ids):
                run.request("input", data="go")
            connections.close_all()

        started = time.monotonic()
        tallies = asyncio.run(watch_all(base, token, run_ids, args.viewers, start))
        took = time.monotonic() - started
        growth = {pid: round((rss(pid) - before) / 1e6, 1) for pid, before in rss_before.items()}
        expected = int(args.rate * args.seconds)
        viewer_problems = {"missing": 0, "repeated": 0, "out_of_order": 0}
        for tally in tallies:
            for key, value in tally.problems(expected).items():
                viewer_problems[key] += value
        _wait(
            lambda: Run.objects.filter(pk__in=run_ids, status="succeeded").count() == len(run_ids),
            timeout=60,
        )
        latencies = [value for tally in tallies for value in tally.latencies]
        result = {
            "database": args.database,
            "runs": args.runs,
            "lines_per_second_per_run": args.rate,
            "viewers": args.viewers,
            "workers": args.workers,
            "flood_seconds": args.seconds,
            "took_seconds": round(took, 1),
            "lines_delivered": len(latencies),
            "latency_ms": {
                "p50": round(percentile(latencies, 0.50) * 1000, 1),
                "p99": round(percentile(latencies, 0.99) * 1000, 1),
                "max": round(max(latencies, default=0) * 1000, 1),
                "target_p99": 100,
            },
            "viewers_missing_repeated": viewer_problems,
            "stored_missing_repeated": stored_problems(run_ids, expected),
            "web_rss_growth_mb": growth[server.pid],
            "worker_rss_growth_mb": [growth[p.pid] for p in processes if p is not server],
            "target_rss_growth_mb": 100,
            "errors": [e for tally in tallies for e in tally.errors][:20],
        }
        print(json.dumps(result))
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        connections.close_all()
        _drop(pg_name)


if __name__ == "__main__":
    main()
