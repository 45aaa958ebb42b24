"""The system under test, as real processes: uvicorn and the supervisor.

Every process is started in a session of its own and killed with its whole
group at the end (`Processes.close()`), even when a figure fails.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CHILDREN = Path(__file__).resolve().parent / "children"
VAR = ROOT / "var" / "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child(name: str, *args: object) -> list[str]:
    """argv running bench/children/NAME.py with this Python."""
    return [sys.executable, str(CHILDREN / f"{name}.py"), *(str(a) for a in args)]


def server_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=env.get("SECRET_KEY") or "insecure-bench-only-key",
        HTTPS="false",
        DEBUG="false",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
        # The fan-out figure opens 1,000 streams as one user: above the default
        # per-user cap (100), which would answer the rest 429.
        TASKRUNNER_SSE_MAX_STREAMS_PER_USER="5000",
        TASKRUNNER_SSE_MAX_STREAMS_PER_PROCESS="5000",
        # The memory figure prints 1 GB and reads every line of it: above the
        # default per-run cap (256 MiB), the oldest would be pruned meanwhile.
        TASKRUNNER_MAX_LOG_BYTES=str(4 * 2**30),
    )
    return env


def kill_group(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM the process's group (and its descendants), SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        family = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for member in family:
            try:
                member.send_signal(sig)
            except psutil.Error:
                pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        gone, alive = psutil.wait_procs(family, timeout=1 if sig == signal.SIGTERM else 3)
        if not alive:
            return


class Processes:
    """Subprocesses of one benchmark run, all ended by close()."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self._logs = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def uvicorn(self, port: int) -> subprocess.Popen:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "backoffice.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--timeout-graceful-shutdown",
            "2",
            "--no-access-log",
            "--log-level",
            "warning",
            "--backlog",
            "4096",
        ]
        proc = self.start("uvicorn", argv)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited early; see {self.log_dir / 'uvicorn.log'}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return proc
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("uvicorn did not listen within 30 s")

    def worker(self) -> subprocess.Popen:
        return self.start("worker", [sys.executable, "manage.py", "taskrunner", "worker"])

    def close(self) -> None:
        for proc in reversed(self.procs):
            kill_group(proc)
        for log in self._logs:
            log.close()


def rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0
