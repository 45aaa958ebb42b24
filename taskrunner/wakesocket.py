"""A direct wake-up for the workers on this host: one Unix datagram socket each.

On SQLite nothing tells a worker that another process committed; it notices
through `PRAGMA data_version`, polled. That poll stays (it always works, and
is the only path between processes that cannot share a directory), but a
control request or a new run should not wait for it: the process that
records one sends, once its transaction has committed, a datagram to every
worker socket in the wake directory (`TASKRUNNER_WAKE_DIR`, default
var/wake/, mode 0700, so only the site's own user can wake a worker).

A datagram carries the same payload a PostgreSQL NOTIFY would
(`control:<run>:<action>:<kind>`, `run:<run>`, `schedule:<schedule>`), and
never anything else: the worker re-reads the database for what it acts on.
Sending never blocks: a worker whose queue is full has a wake-up pending
already, and a socket left by a dead worker (connection refused) is removed
by the first sender.
"""

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path

from taskrunner import conf

logger = logging.getLogger(__name__)

SUFFIX = ".sock"
MAX_PAYLOAD = 1024


def wake_dir() -> Path:
    """Where the workers of this site bind their sockets (TASKRUNNER_WAKE_DIR)."""
    return conf.wake_dir()


def send_wake(payload: str, directory: Path | None = None) -> int:
    """Send `payload` to every worker socket in the directory; returns how many got it."""
    directory = directory or wake_dir()
    try:
        names = [entry for entry in os.scandir(directory) if entry.name.endswith(SUFFIX)]
    except OSError:
        return 0  # no directory: no worker uses the direct path; data_version still works
    data = payload.encode()[:MAX_PAYLOAD]
    sent = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for entry in names:
            try:
                sock.sendto(data, entry.path)
                sent += 1
            except BlockingIOError:
                sent += 1  # its queue is full: it has wake-ups to read already
            except (ConnectionRefusedError, FileNotFoundError):
                # Nobody bound to it: a worker that died without cleaning up.
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except OSError as exc:
                logger.debug("wake-up not sent path=%s error=%s", entry.path, exc)
    return sent


class WakeSocket:
    """The worker's end: a bound datagram socket read by the asyncio loop."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory or wake_dir()
        self.path = self.directory / f"worker-{os.getpid()}{SUFFIX}"
        self.sock: socket.socket | None = None
        self.payloads: set[str] = set()
        self.arrived = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_worker(cls, vendor: str) -> "WakeSocket | None":
        """A bound socket on SQLite; None on PostgreSQL (NOTIFY) or if it cannot be bound."""
        if vendor != "sqlite":
            return None
        direct = cls()
        return direct if direct.open() else None

    def open(self) -> bool:
        """Bind the socket; False (and logged) when the directory cannot be used."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # a previous process with this pid
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind(str(self.path))
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            logger.warning(
                "no direct wake-up; polling the database only path=%s error=%s", self.path, exc
            )
            return False
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._read)
        return True

    def _read(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(MAX_PAYLOAD)
            except BlockingIOError:
                break
            except OSError:
                break
            self.payloads.add(data.decode(errors="replace"))
        if self.payloads:
            self.arrived.set()

    def take(self) -> set[str]:
        seen, self.payloads = self.payloads, set()
        self.arrived.clear()
        return seen

    def close(self) -> None:
        if self.sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)
