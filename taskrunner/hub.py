"""One hub per web process: every SSE client of the process shares its reads.

The hub owns ONE `DatabaseWaker` (PRAGMA data_version on SQLite, LISTEN on
PostgreSQL), ONE reader task and ONE database thread (with one connection).
Clients subscribe to a run from a cursor (the last `seq` they have); on each
wake the reader fetches the new events of every watched run in one query,
formats them once as SSE bytes and hands the same bytes to every subscriber.
The number of queries depends on how often the database changes, not on how
many clients watch.

Each subscriber has a buffer bounded in bytes. A client that does not keep
up (slow network) overflows it; its buffer is dropped and the client reads
what it missed from the database itself, in reads bounded in bytes, then
takes the hub's feed again: memory stays bounded and the other clients are
not slowed. The same path serves the first replay of a new client and any gap
(`seq` not contiguous). A client whose buffer overflows while it has taken
nothing for `TASKRUNNER_SSE_STALL_SECONDS` is not reading at all: it is
dropped (its stream ends; it resumes with Last-Event-ID).

The dashboard feed (`/api/events/`) is computed here too: on each wake one
small query lists the runs whose `updated_at` moved (with a margin for commits
that land late), diffed against what was last sent; only changed runs are
serialised (Run JSON), once, for every dashboard client.

With no subscriber left the reader task ends and the hub closes its
connections; the next subscriber starts it again. Database work runs in the
hub's own thread (never on the event loop, never on a request's thread, so a
waiting client holds neither a thread nor a connection: PITFALLS A-7, A-8).
"""

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync
from django.db import connections
from django.utils import timezone

from taskrunner import conf, sse
from taskrunner.events import payloads, store
from taskrunner.events.store import RowReader
from taskrunner.models import ACTIVE_STATUSES, FINAL_STATUSES, Run
from taskrunner.unavailable import is_database_unavailable
from taskrunner.wakeup import ANYTHING, DatabaseWaker

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Every read and buffer is bounded in bytes, never only in events: one long
# line can weigh what a million short ones do.
FETCH_BYTES = 8 * 1024 * 1024  # stored text per hub query (all watched runs together)
CATCHUP_BYTES = 1024 * 1024  # SSE text per catch-up read of one client
YIELD_BYTES = 1024 * 1024  # at most this much handed to one write
CHUNK_BYTES = 512 * 1024  # a shared chunk of SSE text: several fit in any buffer
POLL_SECONDS = 2.0  # safety-net re-query even if no wake-up came (lost NOTIFY)
DASHBOARD_POLL_SECONDS = 1.0  # cpu/memory samples may be written without a NOTIFY
DASHBOARD_MARGIN = timedelta(seconds=30)  # a commit may land this long after updated_at
DASHBOARD_BACKLOG = 5_000  # distinct runs pending for one dashboard client


@dataclass(frozen=True)
class Chunk:
    """Consecutive events of one run, formatted once, shared by every subscriber."""

    first: int
    last: int
    data: bytes
    # (seq, status, exit_code) of a final `status` event inside the chunk.
    final: tuple[int, str, int | None] | None = None

    def after(self, cursor: int) -> bytes:
        """The part of the chunk after `seq` cursor (first - 1 <= cursor < last)."""
        if cursor < self.first:
            return self.data
        # Events start with "id: SEQ\n" after the blank line ending the
        # previous one; JSON data never holds a raw line break.
        start = self.data.find(b"\n\nid: %d\n" % (cursor + 1))
        return self.data[start + 2 :] if start >= 0 else b""


def _encode(
    rows: list[tuple], cursors: dict[int, int], max_bytes: int
) -> tuple[list[tuple[int, Chunk]], bool]:
    """Store rows (by run, then seq) → SSE chunks of the events after each run's cursor.

    Stops once `max_bytes` of SSE text are made (at least one event each
    call, so a reader always moves on): returns the chunks and whether it
    stopped early (the caller reads again from where the chunks end). The
    hot loop of the whole stream path.
    """
    reader = RowReader()
    frame = sse.frame
    log_json = payloads.log_payload_json
    chunks: list[tuple[int, Chunk]] = []
    parts: list[str] = []
    size = 0
    current: int | None = None
    first: int | None = None
    last: int | None = None
    final = None

    def flush() -> None:
        nonlocal first, final
        if parts:
            assert current is not None and first is not None and last is not None
            data = "".join(parts).encode("utf-8")
            chunks.append((current, Chunk(first, last, data, final)))
            parts.clear()
        first, final = None, None

    mark = 0  # size when the current chunk began
    for run_id, row_first, row_last, kind, ts_text, body in rows:
        after = cursors.get(run_id, 0)
        if row_last <= after:
            continue
        if run_id != current:
            flush()
            current, mark = run_id, size
        if parts and size >= max_bytes:
            flush()
            return chunks, True
        base = reader.base_ms(ts_text)
        if kind != "log":
            data = json.loads(body)
            text = frame(
                row_first, kind, payloads.other_payload_json(row_first, data, reader.iso(base))
            )
            if kind == "status" and isinstance(data, dict) and data.get("status") in FINAL_STATUSES:
                final = (row_first, data["status"], data.get("exit_code"))
            parts.append(text)
            size += len(text)
            first = row_first if first is None else first
            last = row_first
            continue
        streams, offsets, continued, texts = reader.log_parts(body)
        start = max(0, after - row_first + 1)
        marks = set(continued)
        iso = reader.iso
        ts = iso(base)
        for i in range(start, len(texts)):
            seq = row_first + i
            if offsets:
                ts = iso(base + offsets[i])
            text = frame(
                seq,
                "log",
                log_json(
                    seq, "stderr" if streams[i] == "e" else "stdout", texts[i], ts, i in marks
                ),
            )
            parts.append(text)
            size += len(text)
            if first is None:
                first = seq
            last = seq
            if size >= max_bytes and i + 1 < len(texts):
                flush()
                return chunks, True
            if size - mark >= CHUNK_BYTES:
                flush()
                mark = size
    flush()
    return chunks, False


class RunSubscription:
    """One client's view of one run: a cursor and a bounded buffer of chunks."""

    def __init__(self, hub: "Hub", run_id: int, cursor: int, final_at=None):
        self.hub = hub
        self.run_id = run_id
        self.cursor = cursor
        # (last_seq, status, exit_code) when the run was already final at connect.
        self.final_at: tuple[int, str, int | None] | None = final_at
        self.chunks: deque[Chunk] = deque()
        self.buffered = 0
        self.overflows = 0
        # A client whose buffer fills twice without it taking anything is not
        # reading at all (its write is stuck): it is dropped, not served from
        # the database again, so it costs at most one buffer and one write.
        self.dropped = False
        self._progress_at = time.monotonic()  # when it last asked for more
        self.wakeup = asyncio.Event()
        self._dead_end = -1  # a DB read up to this target found nothing

    def feed(self, chunk: Chunk) -> None:
        if chunk.last <= self.cursor:
            return
        if self.dropped:
            return
        if self.buffered + len(chunk.data) > self.hub.buffer_bytes:
            # Too slow: forget the backlog; next() reads the gap from the DB.
            self.chunks.clear()
            self.buffered = 0
            self.overflows += 1
            self.hub.stats["overflows"] += 1
            if time.monotonic() - self._progress_at > self.hub.stall_seconds:
                self.dropped = True
                self.hub.stats["dropped"] += 1
                self.hub.unsubscribe_run(self)
                return
        else:
            self.chunks.append(chunk)
            self.buffered += len(chunk.data)
        self.wakeup.set()

    def _take_buffered(self) -> tuple[list[bytes], tuple | None]:
        parts: list[bytes] = []
        size = 0
        end = None
        while self.chunks and size < YIELD_BYTES:
            chunk = self.chunks[0]
            if chunk.last <= self.cursor:
                self._pop()
                continue
            if chunk.first > self.cursor + 1:
                break  # a gap: read it from the database
            part = chunk.after(self.cursor)
            parts.append(part)
            size += len(part)
            self.cursor = chunk.last
            self._pop()
            end = self._end_after(chunk)
            if end:
                break
        return parts, end

    def _pop(self) -> None:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk.data)

    def _end_after(self, chunk: Chunk | None) -> tuple[str, int | None] | None:
        if chunk is not None and chunk.final is not None:
            return chunk.final[1], chunk.final[2]
        if self.final_at is not None and self.cursor >= self.final_at[0]:
            return self.final_at[1], self.final_at[2]
        return None

    def _read_target(self) -> int | None:
        """The seq this client must read up to from the database, if any."""
        if self.chunks:
            target = self.chunks[0].first - 1  # the gap before the buffer
        else:
            target = self.hub.frontier.get(self.run_id, 0)
            if self.final_at is not None:
                target = max(target, self.final_at[0])
        return target if self.cursor < target else None

    async def next(self, timeout: float) -> tuple[bytes | None, tuple | None]:
        """Everything available after the cursor, as one chunk of bytes.

        Returns `(data, end)`: `data` None when nothing came within `timeout`
        (send a keepalive); `end` is `(status, exit_code)` once the run's
        final status has been delivered.
        """
        end = self._end_after(None)
        if end:
            return b"", end
        while not self.dropped:
            self.wakeup.clear()
            parts, end = self._take_buffered()
            self._progress_at = time.monotonic()  # it asks: it is reading
            if parts or end:
                return b"".join(parts) if len(parts) != 1 else parts[0], end
            target = self._read_target()
            if target is not None and target != self._dead_end:
                chunk = await self.hub.read_run(self.run_id, self.cursor)
                if chunk is None:
                    # Nothing there (the run was deleted?): wait for news, no spinning.
                    self._dead_end = target
                    continue
                data = chunk.after(self.cursor)
                self.cursor = chunk.last
                return data, self._end_after(chunk)
            try:
                async with asyncio.timeout(timeout):
                    await self.wakeup.wait()
            except TimeoutError:
                return None, None
        return b"", None  # dropped: the stream ends; the client resumes with Last-Event-ID


class DashboardSubscription:
    """One dashboard client: the latest Run JSON of each changed run, coalesced."""

    def __init__(self, hub: "Hub"):
        self.hub = hub
        self.pending: dict[int, bytes] = {}
        self.resync = False
        self.wakeup = asyncio.Event()

    def feed(self, run_id: int, data: bytes) -> None:
        self.pending.pop(run_id, None)
        self.pending[run_id] = data
        if len(self.pending) > DASHBOARD_BACKLOG:
            self.pending.clear()
            self.resync = True
            self.hub.stats["overflows"] += 1
        self.wakeup.set()

    async def next(self, timeout: float) -> bytes | None:
        while True:
            self.wakeup.clear()
            if self.resync:
                self.resync = False
                return await self.hub.read_active_runs()
            if self.pending:
                data = b"".join(self.pending.values())
                self.pending.clear()
                return data
            try:
                async with asyncio.timeout(timeout):
                    await self.wakeup.wait()
            except TimeoutError:
                return None


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.buffer_bytes = conf.sse_client_buffer_bytes()
        self.stall_seconds = conf.sse_stall_seconds()
        self.runs: dict[int, set[RunSubscription]] = {}
        self.frontier: dict[int, int] = {}  # per watched run: highest seq fetched
        self.dashboards: set[DashboardSubscription] = set()
        self._dash_seen: dict[int, tuple] = {}  # run id -> (updated_at, status) last sent
        self._dash_since: datetime | None = None
        self._dash_primed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskrunner-hub")
        self._reader: asyncio.Task | None = None
        self._waker: DatabaseWaker | None = None
        self._more = False  # the last fetch hit its limit: fetch again at once
        self._reading = False  # the reader runs: the hub thread keeps its connection
        # Set while the reader cannot reach the database: streams then send
        # their `error` event and close (clients resume with Last-Event-ID).
        self.unavailable = asyncio.Event()
        self.stats: dict[str, int] = {
            "queries": 0,
            "wakes": 0,
            "fetches": 0,
            "catchup_reads": 0,
            "dashboard_queries": 0,
            "overflows": 0,
            "dropped": 0,
            "events_fetched": 0,
            "reader_starts": 0,
        }

    # --- the hub's database thread -------------------------------------------

    def _count(self, execute, sql, params, many, context):
        self.stats["queries"] += 1
        return execute(sql, params, many, context)

    def _in_thread(self, fn: Callable[[], T]) -> T:
        try:
            with connections["default"].execute_wrapper(self._count):
                return fn()
        except Exception:
            # A broken connection must not poison the next call.
            connections.close_all()
            raise
        finally:
            if not self._reading:
                # No reader to reuse it soon (a one-off lookup): give it back.
                connections.close_all()

    async def db(self, fn: Callable[[], T]) -> T:
        """Run ORM code in the hub's thread (its connection stays open while in use)."""
        return await self.loop.run_in_executor(self._executor, self._in_thread, fn)

    # --- subscriptions ----------------------------------------------------

    def subscribe_run(self, run_id: int, cursor: int, *, frontier: int, final_at=None):
        sub = RunSubscription(self, run_id, cursor, final_at)
        subs = self.runs.setdefault(run_id, set())
        if not subs:
            # Events up to `frontier` (read by the view) the client reads itself.
            self.frontier[run_id] = max(frontier, self.frontier.get(run_id, 0))
        subs.add(sub)
        self._ensure_reader()
        return sub

    def unsubscribe_run(self, sub: RunSubscription) -> None:
        subs = self.runs.get(sub.run_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self.runs[sub.run_id]
            self.frontier.pop(sub.run_id, None)
        self._stop_if_idle()

    async def subscribe_dashboard(self) -> DashboardSubscription:
        if not self.dashboards:
            await self.db(self._prime_dashboard)
        sub = DashboardSubscription(self)
        self.dashboards.add(sub)
        self._ensure_reader()
        return sub

    def unsubscribe_dashboard(self, sub: DashboardSubscription) -> None:
        self.dashboards.discard(sub)
        if not self.dashboards:
            self._dash_seen, self._dash_since, self._dash_primed = {}, None, False
        self._stop_if_idle()

    def _stop_if_idle(self) -> None:
        """No one left: stop the reader now rather than at its next wake-up."""
        reader = self._reader
        if not self.subscriber_count and reader and not reader.done() and not reader.cancelling():
            reader.cancel()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self.runs.values()) + len(self.dashboards)

    # --- reads on behalf of one client ---------------------------------------

    async def read_run(self, run_id: int, after: int) -> Chunk | None:
        self.stats["catchup_reads"] += 1
        cursors = {run_id: after}
        rows = await self.db(lambda: store.fetch_after(cursors, CATCHUP_BYTES))
        chunks, _ = _encode(rows, cursors, CATCHUP_BYTES)
        return chunks[0][1] if chunks else None

    async def read_active_runs(self) -> bytes:
        def query() -> bytes:
            runs = list(_runs_for_json().filter(status__in=ACTIVE_STATUSES).order_by("id"))
            return b"".join(_run_event(run) for run in runs)

        return await self.db(query)

    # --- the reader -------------------------------------------------------

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self.stats["reader_starts"] += 1
            self.unavailable.clear()
            self._reader = self.loop.create_task(self._read_loop(), name="taskrunner-hub")

    async def _read_loop(self) -> None:
        # 2 ms on SQLite (PRAGMA data_version costs microseconds): ~1 ms of
        # log latency on average instead of 2.5 ms at the default 5 ms.
        self._waker = waker = DatabaseWaker(poll_interval=0.002)
        self._reading = True
        try:
            await waker.wait(0)  # take the baseline before the first fetch
            changed: set[str] = {ANYTHING}
            while self.subscriber_count:
                try:
                    await self._fetch(changed)
                    self.unavailable.clear()
                except Exception as exc:  # noqa: BLE001 - the DB may come back; keep serving
                    if is_database_unavailable(exc):
                        self.unavailable.set()
                        logger.warning("hub fetch failed: database unavailable error=%s", exc)
                    else:
                        logger.exception("hub fetch failed; retrying")
                    await asyncio.sleep(0.5)
                    changed = {ANYTHING}
                    continue
                if self._more:
                    changed = {ANYTHING}
                    continue
                timeout = DASHBOARD_POLL_SECONDS if self.dashboards else POLL_SECONDS
                changed = await waker.wait(timeout)
                self.stats["wakes"] += 1
                if not changed:
                    changed = {ANYTHING}  # the safety-net poll
        finally:
            self._waker = None
            self._reading = False
            await waker.close()
            with contextlib.suppress(RuntimeError):  # interpreter shutting down
                await self.loop.run_in_executor(self._executor, connections.close_all)
            if self.subscriber_count and not self.loop.is_closed():
                # Someone subscribed while the reader was closing: go on.
                self._reader = None
                self._ensure_reader()

    async def _fetch(self, changed: set[str]) -> None:
        everything = ANYTHING in changed
        cursors = {
            run_id: self.frontier[run_id]
            for run_id in self.runs
            if everything or f"event:{run_id}" in changed
        }
        self._more = False
        if cursors:
            self.stats["fetches"] += 1
            rows = await self.db(lambda: store.fetch_after(cursors, FETCH_BYTES))
            chunks, stopped = _encode(rows, cursors, FETCH_BYTES)
            self._more = stopped or len(rows) >= store.MAX_ROWS or _cut_short(rows, FETCH_BYTES)
            self.stats["events_fetched"] += sum(c.last - c.first + 1 for _, c in chunks)
            for run_id, chunk in chunks:
                subs = self.runs.get(run_id)
                if not subs:
                    continue
                # Only move forward, and only contiguously from the hub's cursor.
                if chunk.last > self.frontier.get(run_id, 0):
                    self.frontier[run_id] = chunk.last
                for sub in subs:
                    sub.feed(chunk)
        if self.dashboards and not self._more:
            self.stats["dashboard_queries"] += 1
            for run_id, data in await self.db(self._dashboard_changes):
                for dashboard in self.dashboards:
                    dashboard.feed(run_id, data)

    # --- dashboard diffing (in the hub's thread) ------------------------------

    def _prime_dashboard(self) -> None:
        self._dashboard_changes()
        self._dash_primed = True

    def _dashboard_changes(self) -> list[tuple[int, bytes]]:
        now = timezone.now()
        since = self._dash_since or now - DASHBOARD_MARGIN
        rows = Run.objects.filter(updated_at__gte=since).values_list(
            "id", "updated_at", "status", "last_seq"
        )
        changed = []
        seen = {}
        for run_id, updated_at, status, _last_seq in rows:
            key = (updated_at, status)
            seen[run_id] = key
            if self._dash_seen.get(run_id) != key:
                changed.append(run_id)
        self._dash_seen = seen
        self._dash_since = now - DASHBOARD_MARGIN
        if not changed or not self._dash_primed:
            return []
        runs = _runs_for_json().filter(pk__in=changed).order_by("id")
        return [(run.pk, _run_event(run)) for run in runs]

    # --- introspection -----------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "subscribers": self.subscriber_count,
            "run_subscribers": sum(len(s) for s in self.runs.values()),
            "dashboard_subscribers": len(self.dashboards),
            "watched_runs": sorted(self.runs),
            "reader_running": self._reader is not None and not self._reader.done(),
            "tasks": len(asyncio.all_tasks(self.loop)),
            "threads": threading.active_count(),
            "db_queue": self._executor._work_queue.qsize(),
            "buffered_bytes": sum(sub.buffered for s in self.runs.values() for sub in s),
            **self.stats,
        }


def _cut_short(rows: list[tuple], budget: int) -> bool:
    """The byte budget (not the end of the data) may have ended this read."""
    return sum(len(row[5]) for row in rows) >= budget


def _runs_for_json():
    return Run.objects.select_related("task", "requested_by").prefetch_related("actions")


def _run_event(run: Run) -> bytes:
    from taskrunner.serializers import run_json

    return sse.event(run_json(run), event="run")


# --- one hub per process (per event loop) -----------------------------------

_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def get_hub() -> Hub:
    """The hub of the running loop, created on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for old in [old for old in _hubs if old.is_closed()]:
            _hubs.pop(old)._executor.shutdown(wait=False)
        hub = _hubs[loop] = Hub(loop)
    return hub


async def release_request_thread() -> None:
    """Let a long-lived stream hold no thread and no DB connection of its own.

    Django runs each ASGI request in a ThreadSensitiveContext with its own
    one-thread executor, kept until the response ends (PITFALLS A-7). A stream
    that waits for hours needs neither: close the thread's connections, then
    shut its executor down (the idle thread exits). A later sync call of this
    request (Django's response.close()) creates a fresh one, briefly.
    """
    from asgiref.sync import sync_to_async

    await sync_to_async(connections.close_all)()
    try:
        context = SyncToAsync.thread_sensitive_context.get(None)
        executor = SyncToAsync.context_to_thread_executor.pop(context, None) if context else None
    except (AttributeError, TypeError):  # asgiref internals moved: keep the thread
        return
    if executor is not None:
        executor.shutdown(wait=False)
