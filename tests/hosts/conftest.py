"""The test bed of several hosts on one machine (issue 12).

- A private PostgreSQL cluster (tests/outage/conftest.py's `PrivateCluster`),
  listening on 127.0.0.1 and on the outer address of each host's veth pair,
  trusting only those /30s. The shared server on 127.0.0.1:5432 is never used.
- Three worker hosts (tests/hosts/namespaces.py): each its own network, PID,
  mount and UTS namespaces, its own hostname and TASKRUNNER_HOST, reaching
  the database over its veth pair; its worker started with the ExecStart of
  deploy/taskrunner-worker.service.
- Two web processes started with the ExecStart of deploy/taskrunner-web@.service,
  behind a real nginx running deploy/nginx-taskrunner.conf (ports and paths
  replaced, and one header added that names the upstream that answered).

Traffic goes to 127.0.0.1 and to the namespaces' addresses only; every wait
is bounded; everything is torn down at the end (processes killed, veths
deleted; a namespace goes with its last process). The bed runs once, in the
PostgreSQL session, as root; without root or a tool it skips locally and
fails in CI (`CI` set).
"""

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ROOT, ManagedProcess, free_port, needs, wait_for
from tests.hosts.namespaces import NamespaceHost, free_subnet, missing_tools
from tests.outage.conftest import PG_BIN, PrivateCluster, Site

DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HOST_NAMES = ("host-1", "host-2", "host-3")
WORKER_CONCURRENCY = 2  # six runs fill the three hosts: each gets two
BED_ENV = {
    "TASKRUNNER_HEARTBEAT_SECONDS": "0.5",
    "TASKRUNNER_WORKER_DEAD_AFTER": "3",
    "DATABASE_POOL_MAX_SIZE": "4",
    "DATABASE_POOL_TIMEOUT": "1",
}


def exec_start(unit: str, replacements: dict[str, str]) -> list[str]:
    """The unit's ExecStart as an argv, with deployment paths replaced by the test's."""
    for line in (DEPLOY / unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            command = line.removeprefix("ExecStart=")
            for old, new in replacements.items():
                assert old in command, f"{unit}'s ExecStart no longer has {old!r}"
                command = command.replace(old, new)
            return shlex.split(command)
    raise AssertionError(f"{unit} has no ExecStart")


def unit_value(unit: str, key: str) -> str:
    for line in (DEPLOY / unit).read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{unit} has no {key}")


def skip_unless_bed_possible() -> None:
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        pytest.skip("the several-hosts bed runs once, in the PostgreSQL session")
    needs("root (the several-hosts bed makes namespaces and veth pairs)", os.geteuid() == 0)
    for tool in missing_tools():
        needs(f"{tool} (util-linux / iproute2)", False)
    needs(f"nginx at {NGINX}", Path(NGINX).exists())
    needs(f"PostgreSQL's server binaries in {PG_BIN}", (PG_BIN / "initdb").exists())
    needs("runuser", shutil.which("runuser") is not None)


class WorkerHost:
    """A namespace host and its worker (started again after a restart of the host)."""

    def __init__(self, bed: "Bed", name: str, index: int):
        self.bed = bed
        self.name = name
        self.ns = NamespaceHost(name, index, bed.subnet, bed.tag)
        self.worker: subprocess.Popen | None = None

    def start_worker(self) -> None:
        if self.worker is not None:  # its nsenter ends with the worker it started
            self.worker.wait(timeout=30)
        argv = exec_start(
            "taskrunner-worker.service",
            {
                "/srv/backoffice/.venv/bin/python": str(ROOT / ".venv" / "bin" / "python"),
                "--concurrency 8": f"--concurrency {WORKER_CONCURRENCY}",
            },
        )
        url = f"postgres://postgres@{self.ns.outer_address}:{self.bed.cluster.port}/{self.bed.site.name}"
        env = self.bed.site.env({**BED_ENV, "DATABASE_URL": url, "TASKRUNNER_HOST": self.name})
        log = self.bed.tmp / f"worker-{self.name}.log"
        with log.open("ab") as out:
            self.worker = subprocess.Popen(
                self.ns.enter_argv(*argv, cwd=str(ROOT)),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def worker_process(self) -> psutil.Process | None:
        """The worker itself, inside the namespace (nsenter is its parent, outside)."""
        for proc in self.ns.processes():
            try:
                if "worker" in proc.cmdline() and "taskrunner" in proc.cmdline():
                    return proc
            except psutil.Error:
                continue
        return None

    def log(self) -> str:
        path = self.bed.tmp / f"worker-{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class WebProcess(ManagedProcess):
    def __init__(self, bed: "Bed", port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.bed = bed
        self.start()

    def start(self) -> None:
        argv = exec_start(
            "taskrunner-web@.service",
            {
                "/srv/backoffice/.venv/bin/uvicorn": str(ROOT / ".venv" / "bin" / "uvicorn"),
                "%i": str(self.port),
                # The unit gives streams 10 s to end; the bed does not wait that long.
                "--timeout-graceful-shutdown 10": "--timeout-graceful-shutdown 1",
            },
        )
        super().__init__(argv, self.bed.site.env(BED_ENV), self.bed.tmp / f"web-{self.port}.log")
        wait_for(lambda: self._ready(), timeout=30, interval=0.05)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"uvicorn exited early:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def restart(self) -> None:
        """As systemd restarts it: SIGTERM, wait, start again on the same port."""
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()
        self.start()


class Nginx(ManagedProcess):
    def __init__(self, bed: "Bed", upstreams: list[int], static_root: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = bed.tmp / "nginx"
        conf.mkdir()
        site = (DEPLOY / "nginx-taskrunner.conf").read_text()
        for old, new in {
            "listen 80;": f"listen 127.0.0.1:{self.port};",
            "127.0.0.1:8001": f"127.0.0.1:{upstreams[0]}",
            "127.0.0.1:8002": f"127.0.0.1:{upstreams[1]}",
            "/srv/backoffice/var/static/": f"{static_root}/",
            # Test only: which web process answered (a stream's, to restart it).
            "    location / {\n": (
                "    location / {\n        add_header X-Upstream $upstream_addr always;\n"
            ),
        }.items():
            assert site.count(old) == 1, f"deploy/nginx-taskrunner.conf no longer has {old!r}"
            site = site.replace(old, new)
        (conf / "site.conf").write_text(site)
        temp = " ".join(
            f"{kind}_temp_path {conf / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (conf / "nginx.conf").write_text(
            "daemon off;\nworker_processes 1;\nuser root;\n"
            f"pid {conf / 'nginx.pid'};\nerror_log {conf / 'error.log'} info;\n"
            "events { worker_connections 512; }\n"
            f"http {{ include /etc/nginx/mime.types; access_log {conf / 'access.log'}; {temp}\n"
            f"  include {conf / 'site.conf'};\n}}\n"
        )
        check = subprocess.run(
            [NGINX, "-t", *self.options(conf)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stderr
        super().__init__(
            [NGINX, *self.options(conf)],
            dict(os.environ),
            conf / "stdout.log",
        )
        wait_for(self._ready, timeout=30, interval=0.05)

    @staticmethod
    def options(conf: Path) -> list[str]:
        return ["-p", str(conf), "-e", str(conf / "error.log"), "-c", str(conf / "nginx.conf")]

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited early:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


class Bed:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.tag = f"{os.getpid() % 1000:03d}"
        self.subnet = free_subnet()
        self.hosts: list[WorkerHost] = []
        self.webs: list[WebProcess] = []
        self.nginx: Nginx | None = None
        self.cluster: PrivateCluster | None = None
        self.clients: list[httpx.Client] = []

    def build(self) -> None:
        self.hosts = [WorkerHost(self, name, i) for i, name in enumerate(HOST_NAMES)]
        for host in self.hosts:
            host.ns.create()  # the veth's outer address exists before PostgreSQL binds it
        self.cluster = PrivateCluster(
            listen=tuple(host.ns.outer_address for host in self.hosts),
            trusted=tuple(str(host.ns.network) for host in self.hosts),
        )
        self.site = Site(self.cluster, "several_hosts", self.tmp)
        self.site.manage(
            "shell", "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.create_superuser('admin', 'admin@example.com', 'unused-password-1')",
        )  # fmt: skip
        self.token = self.site.manage("taskrunner", "token", "create", "admin").splitlines()[-1]
        for host in self.hosts:
            host.start_worker()
        self.webs = [WebProcess(self, free_port()), WebProcess(self, free_port())]
        self.static_root = self.tmp / "static"
        self.static_root.mkdir()
        self.nginx = Nginx(self, [web.port for web in self.webs], self.static_root)
        wait_for(
            lambda: (
                self.site.query(
                    "SELECT count(DISTINCT hostname) FROM taskrunner_worker "
                    "WHERE stopped_at IS NULL"
                )
                == [(3,)]
            ),
            timeout=60,
        )

    def api(self, base: str) -> httpx.Client:
        """A Bearer client; closed when the test ends (`close_clients`)."""
        client = httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {self.token}"}
        )
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        while self.clients:
            self.clients.pop().close()

    def host(self, name: str) -> WorkerHost:
        return next(host for host in self.hosts if host.name == name)

    def destroy(self) -> None:
        for proc in [*self.webs, *([self.nginx] if self.nginx else [])]:
            with contextlib.suppress(Exception):  # tear down the rest whatever happens
                proc.stop()
        for host in self.hosts:
            host.ns.destroy()
            if host.worker is not None and host.worker.poll() is None:
                host.worker.kill()
                host.worker.wait(timeout=10)
        if self.cluster is not None:
            self.cluster.destroy()


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[Bed]:
    skip_unless_bed_possible()
    bed = Bed(tmp_path_factory.mktemp("hosts"))
    try:
        bed.build()
        yield bed
    finally:
        bed.destroy()


@pytest.fixture(autouse=True)
def _close_clients(request) -> Iterator[None]:
    yield
    if "bed" in request.fixturenames:
        request.getfixturevalue("bed").close_clients()
