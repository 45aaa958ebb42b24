"""`python -m backoffice.serve`: the web server and one supervisor together (`make run`).

    python -m backoffice.serve [--host 127.0.0.1] [--port 8000] [--concurrency 8]

Starts uvicorn (backoffice.asgi:application) and `manage.py taskrunner worker`
as child processes and waits. Ctrl-C or SIGTERM stops both gracefully (the
worker aborts its runs, uvicorn closes its streams within 3 s) and exits 0;
a second Ctrl-C asks again (the worker then stops at once), and whatever is
still alive after STOP_TIMEOUT seconds is killed. If either child dies on its
own, the other is stopped and this exits 1. No shell, no orphan: each child
gets SIGTERM if this process is killed outright (PR_SET_PDEATHSIG, through
`setpriv` when it is installed).

HOST and PORT in the environment change the defaults of --host and --port.
"""

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 60.0  # the worker waits each run's grace period (demo tasks: 5 s)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    pidfd: int

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def describe_exit(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


def with_parent_death_signal(argv: list[str]) -> list[str]:
    """argv that gets SIGTERM when this process dies, if setpriv can arrange it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return argv
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]


def start(name: str, argv: list[str]) -> Child:
    # A process group of its own: Ctrl-C in the terminal reaches only us, and we
    # send each child one SIGTERM (two signals would make the worker hurry).
    proc = subprocess.Popen(with_parent_death_signal(argv), cwd=ROOT, process_group=0)
    return Child(name, proc, os.pidfd_open(proc.pid))


def web_argv(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "backoffice.asgi:application",
        "--host", host, "--port", str(port),
        "--timeout-graceful-shutdown", "3",
        "--lifespan", "off",  # Django speaks no ASGI lifespan
    ]  # fmt: skip


def worker_argv(concurrency: int) -> list[str]:
    return [
        sys.executable, str(ROOT / "manage.py"), "taskrunner", "worker",
        "--concurrency", str(concurrency),
    ]  # fmt: skip


class Signals:
    """Signal handlers that only record; the loop wakes on the pipe and acts."""

    def __init__(self):
        self.received: list[int] = []
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._record)

    def _record(self, signum, frame) -> None:
        self.received.append(signum)

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 512):
                pass
        except BlockingIOError:
            pass


def wait_for_event(children: list[Child], signals: Signals, timeout: float | None) -> None:
    """Block until a child exits, a signal arrives, or `timeout` passes."""
    fds = [signals.read_fd, *(c.pidfd for c in children if c.alive())]
    ready, _, _ = select.select(fds, [], [], timeout)
    if signals.read_fd in ready:
        signals.drain()


def supervise(children: list[Child], signals: Signals) -> int:
    """Wait for a stop signal or a child's death, then stop the rest; the exit code."""
    while not signals.received and all(c.alive() for c in children):
        wait_for_event(children, signals, None)
    dead = [c for c in children if not c.alive()]
    if signals.received:
        print(f"\nStopping ({signal.Signals(signals.received[0]).name})...", flush=True)
        code = 0
    else:
        print(f"\n{dead[0].name} stopped ({dead[0].describe_exit()}); stopping.", flush=True)
        code = 1
    stop(children, signals)
    return code


def stop(children: list[Child], signals: Signals) -> None:
    """SIGTERM each live child once, again on each further Ctrl-C, SIGKILL at the deadline."""
    for child in children:
        child.signal(signal.SIGTERM)
    seen = len(signals.received)
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(c.alive() for c in children):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            for child in children:
                if child.alive():
                    print(f"{child.name} did not stop in {STOP_TIMEOUT:g} s: killing it.")
                    child.signal(signal.SIGKILL)
            break
        wait_for_event(children, signals, remaining)
        if len(signals.received) > seen:
            seen = len(signals.received)
            for child in children:
                child.signal(signal.SIGTERM)
    for child in children:
        child.proc.wait()
        os.close(child.pidfd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backoffice.serve", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=os.environ.get("PORT", "8000"))
    parser.add_argument("--concurrency", type=int, default=8, help="runs at once (default 8)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, not {args.port}")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    signals = Signals()
    children = [
        start("web server", web_argv(args.host, args.port)),
        start("worker", worker_argv(args.concurrency)),
    ]
    print(
        f"Back office: http://{args.host}:{args.port}/  (admin: /admin/)\n"
        "Ctrl-C stops the web server and the worker.",
        flush=True,
    )
    return supervise(children, signals)


if __name__ == "__main__":
    sys.exit(main())
