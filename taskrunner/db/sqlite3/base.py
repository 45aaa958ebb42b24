"""Django's SQLite backend, waiting for the write lock in steps of a fraction of a millisecond.

Every transaction here is `BEGIN IMMEDIATE` (settings: the write lock is
taken at the start, so a read never fails when it turns into a write). When
another connection holds the lock, SQLite's own busy handler retries after
1, 2, 5, 10, 15, 20 ... ms: a control request behind a worker's 4 ms record
waits 8 ms, behind a 9 ms one 18 ms. Those waits were most of the control
latency's p99 on SQLite. So `BEGIN` is tried with SQLite's wait off, then
again every 0.25 ms (doubling to 2 ms apart) until the same `timeout` the
database is configured with; every other statement keeps SQLite's handler.
"""

import sqlite3
import time

from django.db.backends.sqlite3 import base

FIRST_PAUSE = 0.00025
LONGEST_PAUSE = 0.002


class DatabaseWrapper(base.DatabaseWrapper):
    transaction_mode: str | None  # set by Django's __init__ (not in django-stubs)

    def _start_transaction_under_autocommit(self) -> None:
        if self.transaction_mode in (None, "DEFERRED"):
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
            return
        raw = self.connection
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5.0))
        deadline = time.monotonic() + timeout
        pause = FIRST_PAUSE
        with self.wrap_database_errors:
            raw.execute("PRAGMA busy_timeout = 0")
            try:
                while True:
                    try:
                        raw.execute(f"BEGIN {self.transaction_mode}")
                        return
                    except sqlite3.OperationalError as exc:
                        if not _is_busy(exc) or time.monotonic() + pause > deadline:
                            raise
                    time.sleep(pause)
                    pause = min(pause * 2, LONGEST_PAUSE)
            finally:
                raw.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc)
