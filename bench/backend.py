"""One backend's benchmark, in a process of its own: `python -m bench.backend sqlite|postgres`.

Creates a fresh database (a SQLite file under var/bench/, or `bench_<pid>` on
the local PostgreSQL), migrates it, starts uvicorn and a worker against it,
measures every figure, writes bench/results/<backend>.json, and removes the
database and every process it started, also on error.
"""

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench import figures
from bench.system import VAR, Processes, child, free_port, kill_group, server_env

RESULTS = Path(__file__).resolve().parent / "results"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# (full, quick) sizes of each figure.
SIZES = {
    "start_trials": (20, 8),
    "log_ticks": (400, 150),  # 20 ms each: 8 s and 3 s
    "throughput_lines": (1_000_000, 100_000),
    "throughput_trials": (2, 1),
    "control_trials": (12, 5),
    "fanout_clients": (1000, 100),
    "fanout_lines": (250, 100),  # at 50 lines/s: 5 s and 2 s
    "memory_lines": (500_000, 50_000),  # x 2,000 bytes: 1 GB and 100 MB
    "run_page_seconds": (10, 4),
}
FIGURES = ["start", "log", "control", "fanout", "run_page", "throughput", "memory"]
QUICK_FIGURES = ["start", "log", "control", "fanout", "throughput"]


def size(name: str, quick: bool):
    return SIZES[name][1 if quick else 0]


# --- the database ---


class Database:
    def __init__(self, backend: str):
        self.backend = backend
        self.name = f"bench_{os.getpid()}"
        if backend == "sqlite":
            VAR.mkdir(parents=True, exist_ok=True)
            self.path = VAR / f"{self.name}.sqlite3"
            self.url = f"sqlite:///{self.path}"
        else:
            base = PG_ADMIN_URL.rsplit("/", 1)[0]
            self.url = f"{base}/{self.name}"

    def create(self) -> None:
        if self.backend == "postgres":
            import psycopg

            with psycopg.connect(_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return
        import psycopg

        try:
            with psycopg.connect(_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except psycopg.Error as exc:
            print(f"could not drop {self.name}: {exc}", file=sys.stderr)

    def size(self) -> int:
        """Bytes the database takes: the SQLite file and its WAL after a checkpoint, or
        PostgreSQL's events table with its indexes and TOAST (`pg_total_relation_size`)."""
        if self.backend == "sqlite":
            import sqlite3

            conn = sqlite3.connect(self.path, timeout=20)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            return sum(
                Path(f"{self.path}{suffix}").stat().st_size
                for suffix in ("", "-wal")
                if Path(f"{self.path}{suffix}").exists()
            )
        import psycopg
        from django.apps import apps

        table = apps.get_model("taskrunner", "EventChunk")._meta.db_table
        with psycopg.connect(_conninfo(self.url), autocommit=True) as conn:
            return int(conn.execute("SELECT pg_total_relation_size(%s)", [table]).fetchone()[0])

    def counter(self):
        """Transactions the database committed (PostgreSQL), for the fan-out figure."""
        if self.backend != "postgres":
            return None
        import psycopg

        conninfo = _conninfo(PG_ADMIN_URL)

        def count() -> int:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                    [self.name],
                ).fetchone()
                return int(row[0])

        return count


def _conninfo(url: str) -> str:
    from urllib.parse import urlparse

    parts = urlparse(url)
    fields = {
        "host": parts.hostname or "127.0.0.1",
        "port": str(parts.port or 5432),
        "user": parts.username or "postgres",
        "dbname": parts.path.lstrip("/") or "postgres",
    }
    if parts.password:
        fields["password"] = parts.password
    return " ".join(f"{k}={v}" for k, v in fields.items())


# --- Django set-up in this process ---


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("SECRET_KEY", "insecure-bench-only-key")
    os.environ["HTTPS"] = "false"
    os.environ["DEBUG"] = "false"
    os.environ["DJANGO_SETTINGS_MODULE"] = "backoffice.settings"
    import django

    django.setup()


def prepare(quick: bool) -> tuple[str, str]:
    """Migrate, collect static files, create a superuser, a token, a session and the tasks."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from taskrunner.models import ApiToken, Task

    call_command("migrate", verbosity=0, interactive=False)
    call_command("collectstatic", verbosity=0, interactive=False)
    user = User.objects.create_superuser("bench", "bench@example.com", "bench-password-1234")
    _, token = ApiToken.create_for(user)
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value

    def define(name: str, argv: list[str], params: list[str] = (), **extra) -> None:
        task = Task(
            name=name,
            argv=argv + [f"{{{p}}}" for p in params],
            params=[{"name": p, "type": "str", "default": ""} for p in params],
            grace=extra.pop("grace", 5.0),
            **extra,
        )
        task.full_clean()
        task.save()

    define("first-line", child("first_line"), max_concurrent=4)
    define("stamps", child("stamps"), ["count"])
    define("numbered", child("numbered"), ["count", "width"])
    define("tree", child("tree"), grace=5.0)
    define("rate", child("rate"), ["rate", "seconds", "wait"])
    return token, session


# --- machine ---


def machine(vendor_version: str) -> dict:
    import sqlite3

    import psutil

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "database": vendor_version,
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def database_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("select sqlite_version()")
            return f"SQLite {cursor.fetchone()[0]}"
        cursor.execute("show server_version")
        version = f"PostgreSQL {cursor.fetchone()[0]}"
    connection.close()
    return version


# --- running the figures ---


def start_profilers(system: figures.System, figure: str, directory: Path) -> list:
    """py-spy on the web process and the supervisor while one figure runs (collapsed stacks)."""
    directory.mkdir(parents=True, exist_ok=True)
    procs = []
    for role, pid in (("web", system.server_pid), ("worker", system.worker_pid)):
        out = directory / f"{system.vendor}-{figure}-{role}.txt"
        procs.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--output",
                    str(out),
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--format",
                    "raw",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    return procs


def stop_profilers(procs: list) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(proc)


async def measure(
    system: figures.System, only: list[str], quick: bool, budget: float, profile_dir=None
) -> dict:
    q = quick
    plan = {
        "start": lambda: figures.start_latency(system, size("start_trials", q)),
        "log": lambda: figures.log_latency(system, size("log_ticks", q)),
        "throughput": lambda: figures.throughput(
            system, size("throughput_lines", q), size("throughput_trials", q)
        ),
        "control": lambda: figures.control_latency(system, size("control_trials", q)),
        "fanout": lambda: figures.fan_out(
            system, size("fanout_clients", q), size("fanout_lines", q)
        ),
        "memory": lambda: figures.memory(system, size("memory_lines", q), 2000),
        "run_page": lambda: figures.run_page(system, 10_000, size("run_page_seconds", q)),
    }
    results = {}
    started = time.monotonic()
    for name in only:
        left = budget - (time.monotonic() - started)
        if left <= 5:
            results[name] = {"error": "skipped: out of time", "met": None}
            continue
        t0 = time.monotonic()
        print(f"  [{system.vendor}] {name} ...", flush=True)
        profilers = start_profilers(system, name, profile_dir) if profile_dir else []
        try:
            async with asyncio.timeout(left):
                results[name] = await plan[name]()
        except Exception as exc:  # noqa: BLE001 - one failed figure must not lose the others
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "met": False}
        finally:
            stop_profilers(profilers)
        results[name]["seconds_taken"] = round(time.monotonic() - t0, 1)
        print(f"  [{system.vendor}] {name} done in {time.monotonic() - t0:.1f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backend")
    parser.add_argument("backend", choices=["sqlite", "postgres"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated figures")
    parser.add_argument("--budget", type=float, default=280.0, help="seconds for all figures")
    parser.add_argument("--out", default="")
    parser.add_argument("--profile", default="", help="directory for py-spy flame graphs")
    opts = parser.parse_args(argv)
    only = [f for f in opts.only.split(",") if f] or (QUICK_FIGURES if opts.quick else FIGURES)
    database = Database(opts.backend)
    database.create()
    log_dir = VAR / f"logs-{opts.backend}-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = Processes(server_env(database.url), log_dir)
    started = time.time()
    try:
        setup_django(database.url)
        token, session = prepare(opts.quick)
        info = machine(database_version())
        from django.db import connections

        connections.close_all()
        port = free_port()
        server = processes.uvicorn(port)
        worker = processes.worker()
        system = figures.System(
            port=port,
            token=token,
            server_pid=server.pid,
            worker_pid=worker.pid,
            vendor=opts.backend,
            quick=opts.quick,
            db_counter=database.counter(),
            db_size=database.size,
            session_cookie=session,
            profile_dir=opts.profile,
        )
        profile_dir = Path(opts.profile) if opts.profile else None
        results = asyncio.run(measure(system, only, opts.quick, opts.budget, profile_dir))
        for name, proc in (("uvicorn", server), ("worker", worker)):
            if proc.poll() is not None:
                results.setdefault("problems", []).append(f"{name} exited: {proc.returncode}")
    finally:
        processes.close()
        database.drop()
    report = {
        "backend": opts.backend,
        "mode": "quick" if opts.quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": info,
        "sizes": {k: size(k, opts.quick) for k in SIZES},
        "figures": results,
    }
    out = Path(opts.out) if opts.out else RESULTS / f"{opts.backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
