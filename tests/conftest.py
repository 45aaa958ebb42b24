"""Shared fixtures: named personas, a real worker process, a real uvicorn server.

Everything here starts real processes against the test database (SQLite file
or PostgreSQL, whichever DATABASE_URL names), so tests that use them need
`transactional_db`: the other processes must see committed rows.

Personas (as healthchecks' hc/test.py does):
- `alice`: superuser.
- `bob`: staff with start_run and control_run.
- `carol`: staff with no permission (may only look).
- `dave`: active but not staff.
All have the password `PASSWORD`.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery-staple"
CHILDREN = ROOT / "tests" / "children"
SESSION_ARTIFACTS = ROOT / "var" / f"test-artifacts-{os.getpid()}"


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def stored_events(run_id: int, kind: str | None = None) -> list:
    """A run's stored events, in order, read through the event store (one per line)."""
    from taskrunner.events import store

    events = [e for batch in store.iter_after(run_id, 0) for e in batch]
    return [e for e in events if kind is None or e.kind == kind]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_script(name: str) -> list[str]:
    """argv running tests/children/NAME.py with this Python."""
    return [sys.executable, str(CHILDREN / f"{name}.py")]


def database_url(settings_dict: dict) -> str:
    """The URL of the test database, whole: user, password, host, port and name.

    Every part is percent-encoded, so a password holding `@`, `:` or `/` reaches
    the other process as it is (a server that checks passwords needs it).
    """
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    name = quote(settings_dict["NAME"], safe="")
    return f"postgres://{credentials}{host}{port}/{name}"


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a manage.py/uvicorn process using the test database."""
    from django.db import connection

    env = dict(os.environ)
    env["DATABASE_URL"] = database_url(connection.settings_dict)
    env.setdefault("SECRET_KEY", "insecure-test-only-key")
    env["HTTPS"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    # Short intervals so tests never wait long (the worker reads these).
    env.setdefault("TASKRUNNER_HEARTBEAT_SECONDS", "0.5")
    env.setdefault("TASKRUNNER_WORKER_DEAD_AFTER", "3")
    # Artifacts of this test session apart from any other's (run ids repeat across sessions).
    env.setdefault("TASKRUNNER_ARTIFACTS_ROOT", str(SESSION_ARTIFACTS / "store"))
    env.setdefault("TASKRUNNER_ARTIFACTS_WORK_DIR", str(SESSION_ARTIFACTS / "work"))
    if extra:
        env.update(extra)
    return env


STOPPED = {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP}
PROCESS_KEY = "TASKRUNNER_PROCESS_KEY"


def processes_with_key(key: str) -> list[psutil.Process]:
    """Every live (non-zombie) process whose environment carries a run's key.

    This is how the worker finds a run's processes (tree.py), read here
    independently: an orphaned grandchild or a setsid() escapee is found too,
    whatever its parent or group.
    """
    assert key, "the run has no process key"
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(PROCESS_KEY) == key and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def needs(what: str, present: bool) -> None:
    """Skip a test whose outside dependency is missing; in CI (`CI` set), fail instead."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI must run every test")
    pytest.skip(f"{what} is missing")


def gone(procs: list[psutil.Process]) -> bool:
    """No process left: each exited (a zombie awaiting its reaper counts as exited)."""
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def all_stopped(procs: list[psutil.Process]) -> bool:
    try:
        return all(p.status() in STOPPED for p in procs)
    except psutil.NoSuchProcess:
        return False


def none_stopped(procs: list[psutil.Process]) -> bool:
    try:
        return not any(p.status() in STOPPED for p in procs)
    except psutil.NoSuchProcess:
        return False


def kill_tree(proc: psutil.Process | subprocess.Popen, sig=signal.SIGKILL) -> None:
    """Kill a process and every descendant; used in teardown only."""
    try:
        root = psutil.Process(proc.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        try:
            member.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=5)


class ManagedProcess:
    """A manage.py (or other) process started by a test, killed at teardown."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            kill_tree(self.proc)
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="session", autouse=True)
def _session_artifacts():
    """The artifacts this session's workers kept (see subprocess_env) go with it."""
    yield
    shutil.rmtree(SESSION_ARTIFACTS, ignore_errors=True)


@pytest.fixture
def personas(transactional_db):
    from django.contrib.auth.models import Permission, User

    alice = User.objects.create_superuser("alice", "alice@example.com", PASSWORD)
    bob = User.objects.create_user("bob", "bob@example.com", PASSWORD, is_staff=True)
    bob.user_permissions.add(*Permission.objects.filter(codename__in=["start_run", "control_run"]))
    carol = User.objects.create_user("carol", "carol@example.com", PASSWORD, is_staff=True)
    dave = User.objects.create_user("dave", "dave@example.com", PASSWORD)
    return {"alice": alice, "bob": bob, "carol": carol, "dave": dave}


@pytest.fixture
def start_worker(transactional_db, tmp_path) -> Iterator[Callable[..., ManagedProcess]]:
    """Start `manage.py taskrunner worker` processes; all are killed at teardown."""
    started: list[ManagedProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ManagedProcess:
        argv = [sys.executable, "manage.py", "taskrunner", "worker", *args]
        log = tmp_path / f"worker-{len(started)}.log"
        proc = ManagedProcess(argv, subprocess_env(env), log)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def worker(start_worker) -> ManagedProcess:
    """One running worker with default options."""
    return start_worker()


@pytest.fixture
def start_server(transactional_db, tmp_path) -> Iterator[Callable[..., "Server"]]:
    """Start uvicorn serving backoffice.asgi:application on a free port."""
    started: list[Server] = []

    def start(*extra_args: str, env: dict[str, str] | None = None, port: int | None = None):
        server = Server(tmp_path / f"server-{len(started)}.log", extra_args, env, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class Server(ManagedProcess):
    def __init__(self, log_path: Path, extra_args, env, port: int | None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "backoffice.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--timeout-graceful-shutdown",
            "2",
            "--no-access-log",
            *extra_args,
        ]
        super().__init__(argv, subprocess_env(env), log_path)
        wait_for(self._ready, timeout=30, interval=0.05)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"uvicorn exited early:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


@pytest.fixture
def server(start_server):
    return start_server()
