"""Knowing, from an asyncio loop, that another process committed something.

One `DatabaseWaker` per process (the SSE hub of a web process, the control
loop of a worker): its cost does not grow with the number of things waiting.

- SQLite: `PRAGMA data_version` on a connection of its own changes whenever
  another connection commits; checking it takes microseconds, so it is polled
  every few milliseconds without touching any table. A worker also binds a
  `wakesocket.WakeSocket`, to which the process recording a control request
  or a new run sends a datagram after its commit: with that direct path open,
  `data_version` is polled only every `TASKRUNNER_WAKE_FALLBACK_SECONDS` (the
  fallback that always works), so the worker no longer wakes on each of its
  own log commits. A worker with no run backs its polling off, doubling the
  pause after each poll that found nothing up to `TASKRUNNER_WAKE_IDLE_SECONDS`;
  a wake-up, a commit seen or a run started brings it back at once.
- PostgreSQL: `LISTEN taskrunner` on a dedicated psycopg connection (writers
  call `models.notify`). Notifications sent while disconnected are lost, so a
  reconnect reports "something changed" and readers re-query.

`wait()` returns the set of payloads seen (`"event:42"`, `"control:42"`), the
set `{"*"}` when it cannot tell what changed, or an empty set on timeout.
"""

import asyncio
import contextlib
import logging
import sqlite3
import time

from django.db import connections

from taskrunner import conf
from taskrunner.models import NOTIFY_CHANNEL
from taskrunner.wakesocket import WakeSocket

logger = logging.getLogger(__name__)

ANYTHING = "*"
PSYCOPG_KEYS = {"dbname", "user", "password", "host", "port", "sslmode", "options", "service"}


def fallback_seconds() -> float:
    """How often a worker with the direct wake-up still polls `data_version`."""
    return conf.wake_fallback_seconds()


class DatabaseWaker:
    """Waits for another connection's commit; for a worker, polling ever less while idle.

    `poll_interval` is how often SQLite's `data_version` is polled without a
    direct wake-up (`fallback_seconds()` with one). With `idle_interval`
    set (a worker's waker), while the owner is not `busy` every poll that
    finds nothing doubles the pause before the next, up to `idle_interval`;
    a wake-up (datagram or NOTIFY), `busy` or `active()` brings it back to
    the first (a commit seen does not: it may be the worker's own heartbeat).
    The web's hub sets none: it polls at its pace while it has streams.
    """

    def __init__(
        self,
        alias: str = "default",
        *,
        poll_interval: float = 0.005,
        direct: WakeSocket | None = None,
        idle_interval: float | None = None,
    ):
        self.alias = alias
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self.busy = False  # the owner has work (a worker's runs): never back off
        self.direct = direct  # bound by the caller (a worker), or None
        self.vendor = connections[alias].vendor
        self._sqlite: sqlite3.Connection | None = None
        self._sqlite_version: int | None = None
        self._pg = None
        self._pg_fd: int | None = None
        self._pg_readable = asyncio.Event()  # the LISTEN connection's socket has data
        self._pending: set[str] = set()
        self._quiet = 0  # polls in a row that found nothing
        self._idle = False  # backed off as far as it goes (logged once per idle spell)
        self._nudged = asyncio.Event()  # active(): cut the current pause short

    # --- lifecycle --------------------------------------------------------

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            if self._pg_fd is not None:
                with contextlib.suppress(Exception):  # a loop already closed
                    asyncio.get_running_loop().remove_reader(self._pg_fd)
                self._pg_fd = None
            try:
                await self._pg.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                logger.debug("closing the LISTEN connection failed", exc_info=True)
            self._pg = None

    # --- backing off ----------------------------------------------------------

    def active(self) -> None:
        """Something started (a worker's run): poll at the first pace again, from now."""
        self._woke("active")
        self._nudged.set()
        if self._direct_open():
            assert self.direct is not None
            self.direct.arrived.set()  # what a pause waits on while the direct path is open

    def interval(self) -> float:
        """The pause before the next poll of `data_version` (SQLite)."""
        first = fallback_seconds() if self._direct_open() else self.poll_interval
        if self.idle_interval is None or self.busy:
            return first
        return min(max(first, self.idle_interval), first * 2 ** min(self._quiet, 32))

    def _woke(self, why: str = "woken") -> None:
        self._quiet = 0
        if self._idle:
            self._idle = False
            logger.debug("%s: polling every %s s", why, self.interval())

    def _quieter(self, waited: float) -> None:
        """A poll (or, on PostgreSQL, a whole wait) found nothing."""
        self._quiet += 1
        if self.idle_interval is None or self.busy or self._idle:
            return
        pace = self.interval() if self.vendor == "sqlite" else waited
        if pace >= self.idle_interval:
            self._idle = True
            logger.debug("idle: polling every %s s until woken", pace)

    def _direct_open(self) -> bool:
        return self.direct is not None and self.direct.sock is not None

    # --- waiting ------------------------------------------------------------

    async def wait(self, timeout: float) -> set[str]:
        """Wait up to `timeout` seconds for a commit by another connection.

        Returns early, with nothing, when `active()` is called meanwhile.
        """
        if self.vendor == "sqlite":
            return await self._wait_sqlite(timeout)
        if self.vendor == "postgresql":
            return await self._wait_postgres(timeout)
        await asyncio.sleep(min(timeout, 0.5))
        return {ANYTHING}

    def _sqlite_data_version(self) -> int:
        if self._sqlite is None:
            name = connections[self.alias].settings_dict["NAME"]
            self._sqlite = sqlite3.connect(
                f"file:{name}?mode=ro", uri=True, check_same_thread=False, timeout=1
            )
        return self._sqlite.execute("PRAGMA data_version").fetchone()[0]

    async def _pause(self, seconds: float) -> set[str] | None:
        """Wait up to `seconds` for a datagram or `active()`: the datagrams, or None for neither."""
        direct = self.direct
        event = direct.arrived if direct is not None and direct.sock is not None else self._nudged
        if event is self._nudged and self.idle_interval is None:
            await asyncio.sleep(seconds)  # the hub: nothing to wait for but time
            return None
        if not event.is_set() and seconds > 0:
            try:
                await asyncio.wait_for(event.wait(), timeout=seconds)
            except TimeoutError:
                return None
        if not event.is_set():
            return None
        self._nudged.clear()
        return direct.take() if event is not self._nudged and direct is not None else set()

    async def _wait_sqlite(self, timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        self._nudged.clear()
        seen = await self._pause(0)
        if seen:
            self._woke()
            return seen
        while True:
            try:
                version = self._sqlite_data_version()
            except sqlite3.Error:
                # The file may not exist yet, or be mid-checkpoint: try again.
                logger.debug("data_version check failed", exc_info=True)
                if self._sqlite is not None:
                    self._sqlite.close()
                    self._sqlite = None
                version = None
            if version is not None:
                if self._sqlite_version is None:
                    self._sqlite_version = version
                elif version != self._sqlite_version:
                    # Not a reason to poll faster: it may be this process's own
                    # heartbeat. A run it starts is (`active()`, `busy`).
                    self._sqlite_version = version
                    return {ANYTHING}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return set()
            pause = min(self.interval(), remaining)
            seen = await self._pause(pause)
            if seen is None:
                self._quieter(pause)
            elif seen:
                self._woke()
                return seen
            else:
                return set()  # active(): the caller looks again, with its new state

    async def _connect_postgres(self):
        import psycopg

        params = connections[self.alias].get_connection_params()
        conninfo = {k: v for k, v in params.items() if k in PSYCOPG_KEYS}
        conn = await psycopg.AsyncConnection.connect(autocommit=True, **conninfo)
        await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        # From now on the socket is read here, not through psycopg's notifies(),
        # which wakes the loop every 0.1 s while it waits: an idle process
        # wakes only when the server sends something, or at its own timeout.
        self._pg_fd = conn.pgconn.socket
        asyncio.get_running_loop().add_reader(self._pg_fd, self._pg_readable.set)
        return conn

    def _pg_take(self) -> set[str]:
        """The notifications received so far, without waiting; psycopg.Error if the link is gone."""
        assert self._pg is not None
        self._pg_readable.clear()
        pgconn = self._pg.pgconn
        pgconn.consume_input()  # what the socket holds; raises if the server went away
        seen: set[str] = set()
        while (note := pgconn.notifies()) is not None:
            seen.add(note.extra.decode(errors="replace"))
        return seen

    async def _wait_postgres(self, timeout: float) -> set[str]:
        import psycopg

        if self._pending:
            pending, self._pending = self._pending, set()
            return pending
        if self._pg is None:
            try:
                self._pg = await self._connect_postgres()
            except psycopg.Error as exc:
                logger.warning("cannot LISTEN on PostgreSQL; retrying error=%s", exc)
                await asyncio.sleep(min(timeout, 1.0))
                return {ANYTHING}
            return {ANYTHING}  # anything sent before LISTEN was missed: re-query
        deadline = time.monotonic() + timeout
        try:
            seen = self._pg_take()
            while not seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._pg_readable.wait(), timeout=remaining)
                except TimeoutError:
                    break
                seen = self._pg_take()  # a message that is not a notification leaves it empty
            if seen:
                self._woke()
            else:
                self._quieter(timeout)
        except psycopg.Error as exc:
            # The server restarted or went away: reconnect (and LISTEN again)
            # on the next wait; readers re-query, since notifications were lost.
            logger.warning("LISTEN connection lost; reconnecting error=%s", exc)
            await self.close()
            return {ANYTHING}
        return seen
