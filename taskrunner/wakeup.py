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
  own log commits.
- PostgreSQL: `LISTEN taskrunner` on a dedicated psycopg connection (writers
  call `models.notify`). Notifications sent while disconnected are lost, so a
  reconnect reports "something changed" and readers re-query.

`wait()` returns the set of payloads seen (`"event:42"`, `"control:42"`), the
set `{"*"}` when it cannot tell what changed, or an empty set on timeout.
"""

import asyncio
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
    def __init__(
        self,
        alias: str = "default",
        *,
        poll_interval: float = 0.005,
        direct: WakeSocket | None = None,
    ):
        self.alias = alias
        self.poll_interval = poll_interval
        self.direct = direct  # bound by the caller (a worker), or None
        self.vendor = connections[alias].vendor
        self._sqlite: sqlite3.Connection | None = None
        self._sqlite_version: int | None = None
        self._pg = None
        self._pending: set[str] = set()

    # --- lifecycle --------------------------------------------------------

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            try:
                await self._pg.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                logger.debug("closing the LISTEN connection failed", exc_info=True)
            self._pg = None

    # --- waiting ------------------------------------------------------------

    async def wait(self, timeout: float) -> set[str]:
        """Wait up to `timeout` seconds for a commit by another connection."""
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

    def _sqlite_interval(self) -> float:
        if self.direct is not None and self.direct.sock is not None:
            return fallback_seconds()
        return self.poll_interval

    async def _wait_direct(self, seconds: float) -> set[str]:
        """Datagrams from the direct path, waiting up to `seconds` for one."""
        direct = self.direct
        if direct is None or direct.sock is None:
            if seconds > 0:
                await asyncio.sleep(seconds)
            return set()
        if not direct.arrived.is_set() and seconds > 0:
            try:
                await asyncio.wait_for(direct.arrived.wait(), timeout=seconds)
            except TimeoutError:
                return set()
        return direct.take()

    async def _wait_sqlite(self, timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        direct = await self._wait_direct(0)
        if direct:
            return direct
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
                    self._sqlite_version = version
                    return {ANYTHING}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return set()
            direct = await self._wait_direct(min(self._sqlite_interval(), remaining))
            if direct:
                return direct

    async def _connect_postgres(self):
        import psycopg

        params = connections[self.alias].get_connection_params()
        conninfo = {k: v for k, v in params.items() if k in PSYCOPG_KEYS}
        conn = await psycopg.AsyncConnection.connect(autocommit=True, **conninfo)
        await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

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
        seen: set[str] = set()
        try:
            async for note in self._pg.notifies(timeout=timeout, stop_after=1):
                seen.add(note.payload)
            # Take whatever else has already arrived, without waiting again
            # (timeout 0: psycopg reads the socket once).
            async for note in self._pg.notifies(timeout=0):
                seen.add(note.payload)
        except psycopg.Error as exc:
            # The server restarted or went away: reconnect (and LISTEN again)
            # on the next wait; readers re-query, since notifications were lost.
            logger.warning("LISTEN connection lost; reconnecting error=%s", exc)
            await self.close()
            return {ANYTHING}
        return seen
