"""A PostgreSQL cluster of the tests' own, to stop and restart (issue 14).

The shared server on 127.0.0.1:5432 is never touched: `private_postgres`
runs `initdb` into a temporary directory (as the `postgres` OS user, which
PostgreSQL requires when we are root), listens on 127.0.0.1 on a free port
with its socket in that directory and trust authentication, and is stopped
and removed at the end of the module. Tests `restart()`, `stop()` and
`start()` it with pg_ctl, and point workers and uvicorn at it through
DATABASE_URL.

These tests need PostgreSQL's server binaries and root (to run them as
`postgres`); they run once, in the PostgreSQL test session: the SQLite
session skips them, since the same tests there would repeat exactly the same
thing (the cluster is PostgreSQL whatever the session's database is).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, ManagedProcess, free_port, subprocess_env, wait_for


def _pg_bin() -> Path:
    """The server binaries of the installed PostgreSQL (the newest, if several)."""
    if "PG_BIN" in os.environ:
        return Path(os.environ["PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def _session_is_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


def skip_unless_private_cluster_possible() -> None:
    if not _session_is_postgres():
        pytest.skip("private-cluster outage tests run once, in the PostgreSQL session")
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip(f"needs root, runuser and PostgreSQL's binaries in {PG_BIN}")


class PrivateCluster:
    """`listen` adds addresses to 127.0.0.1 and trusts `trusted` networks (tests/hosts/)."""

    def __init__(self, listen: tuple[str, ...] = (), trusted: tuple[str, ...] = ()) -> None:
        self.listen_addresses = ",".join(("127.0.0.1", *listen))
        self.root = Path(tempfile.mkdtemp(prefix="taskrunner-outage-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        with (self.data / "pg_hba.conf").open("a") as hba:
            for network in trusted:
                hba.write(f"host all all {network} trust\n")
        self.start()

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def _pg_ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={self.listen_addresses} "
            "-c fsync=off -c max_connections=50"
        )
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", "30", "-o", options, *args,
        )  # fmt: skip

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def connect(self, name: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=name, autocommit=True
        )

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivateCluster]:
    skip_unless_private_cluster_possible()
    cluster = PrivateCluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


class Site:
    """A migrated database on the private cluster, and processes pointed at it."""

    def __init__(self, cluster: PrivateCluster, name: str, tmp_path: Path):
        self.cluster = cluster
        self.name = name
        self.url = cluster.create_database(name)
        self.tmp_path = tmp_path
        self.processes: list[ManagedProcess] = []
        self.manage("migrate", "--no-input", "-v", "0")

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return subprocess_env(
            {
                "DATABASE_URL": self.url,
                # A request (or the worker) waits at most this long for a
                # connection while the database is away.
                "DATABASE_POOL_TIMEOUT": "1",
                "TASKRUNNER_HEARTBEAT_SECONDS": "0.5",
                "TASKRUNNER_WORKER_DEAD_AFTER": "2",
                **(extra or {}),
            }
        )

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start_worker(self, *args: str) -> ManagedProcess:
        log = self.tmp_path / f"worker-{len(self.processes)}.log"
        argv = [sys.executable, "manage.py", "taskrunner", "worker", *args]
        proc = ManagedProcess(argv, self.env(), log)
        self.processes.append(proc)
        return proc

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.cluster.connect(self.name) as conn:
            return conn.execute(sql, params).fetchall()

    def run_row(self, run_id: int) -> dict:
        rows = self.query(
            "SELECT status, last_seq, exit_code FROM taskrunner_run WHERE id = %s", (run_id,)
        )
        status, last_seq, exit_code = rows[0]
        return {"status": status, "last_seq": last_seq, "exit_code": exit_code}

    def stored_last_seq(self, run_id: int) -> int:
        """The last seq stored (0 while the database is away)."""
        try:
            return self.run_row(run_id)["last_seq"]
        except psycopg.OperationalError:
            return 0

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()


@pytest.fixture
def site(private_postgres, tmp_path, request) -> Iterator[Site]:
    name = "outage_" + request.node.name[:40].lower().replace("[", "_").replace("]", "")
    site = Site(private_postgres, name, tmp_path)
    try:
        yield site
    finally:
        site.stop()
        if not _running(private_postgres):
            private_postgres.start()


def _running(cluster: PrivateCluster) -> bool:
    try:
        with cluster.connect():
            return True
    except psycopg.OperationalError:
        return False


__all__ = ["PrivateCluster", "Site", "wait_for"]
