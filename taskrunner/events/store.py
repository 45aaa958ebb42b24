"""The events table: appending, reading ranges of seqs, reading backwards, pruning.

Every event of a run has its own `seq` (1, 2, 3, ...), allocated under the run
row's write lock. Rows of the table (`EventChunk`) each cover a range
`first_seq..last_seq` of one run:

- a **log chunk** holds many consecutive log lines (up to `CHUNK_LINES` lines
  or `CHUNK_CHARS` characters of text, a longer single line alone): its
  `body` is one JSON array `[streams, offsets, continued, texts]`:
  `streams` a string with one letter per line (`o` stdout, `e` stderr), or
  one letter for all when every line has the same stream,
  `offsets` the lines' times in ms after the chunk's `ts` as steps
  `[[index, ms], ...]`: from line `index` on, until the next step, lines are
  `ms` after `ts` (`[]` when all are 0; a flood's 4,096 lines share a few
  milliseconds, so a number per line would cost ~2 bytes of every line;
  chunks written before the steps hold one number per line, still read),
  `continued` the indexes of lines that go on in the next one, `texts` the
  lines. JSON because both databases take one text value fastest and
  Python's C codec reads and writes it faster than any hand-made framing;
  with `ensure_ascii=False` the stored size stays close to the log's bytes
  (about 3 bytes a line of overhead: the quotes and the comma).
- a **status, progress or message** event keeps a row of its own
  (`first_seq == last_seq`, `body` its JSON data). They are rare, their data
  is read on its own (the final status ends a stream, the CLI looks for it),
  and a row each keeps them out of the log's hot path.

Rows never overlap, so `(run, last_seq)` is unique and orders them: a range
read is `last_seq > N ORDER BY last_seq`, and a read landing inside a chunk
skips that chunk's first lines. Reads are bounded in rows (so in bytes: a
chunk is at most `CHUNK_CHARS`, or one line) and their callers stop at a byte
budget, continuing from the last seq they took.
"""

import json
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from taskrunner.events.payloads import EPOCH, MILLISECOND, iso_ms, to_ms

CHUNK_LINES = 4096
CHUNK_CHARS = 256 * 1024
LOG = "log"

# allow_nan=False: NaN and Infinity are not JSON; a stream must never send them.
_pack_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_pack_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads


@dataclass(slots=True)
class Event:
    """One event as the contract sees it, whatever row it is stored in."""

    seq: int
    kind: str
    stream: str = ""
    text: str = ""
    data: Any = None
    ts: datetime | None = None
    continued: bool = False


def _table() -> str:
    from taskrunner.models import EventChunk

    return connections["default"].ops.quote_name(EventChunk._meta.db_table)


# --- writing -----------------------------------------------------------------


def append_events(run_id: int, events: Sequence[tuple]) -> tuple[int, int]:
    """Store events `(kind, stream, text, data[, ts])` with the run's next sequence numbers.

    Returns the first and last `seq` used. The counter is bumped with an
    UPDATE first, so the row stays write-locked until commit: events of one
    run are committed in `seq` order, and a reader following `seq > N` never
    skips one. A log event's `data` is None or `{"continued": True}`.
    """
    from taskrunner.models import notify

    if not events:
        return (0, 0)
    now = timezone.now()
    # No savepoint when nested (the worker stores several runs in one
    # transaction): a failure rolls the whole batch back, which is retried.
    with transaction.atomic(savepoint=False):
        last = _bump_last_seq(run_id, len(events))
        first = last - len(events) + 1
        rows = pack_rows(run_id, first, events, now)
        _insert_rows(rows)
        notify("event", run_id)
    return (first, last)


def append_many(batches: dict[int, Sequence[tuple]]) -> None:
    """`append_events` for several runs at once: one UPDATE and one INSERT for all of them.

    The worker stores every run's output of a moment in one transaction; a
    statement per run made a hundred quiet runs cost a hundred round trips a
    batch. Raises `Run.DoesNotExist` (storing nothing) when a run is gone.
    """
    from taskrunner.models import notify_events

    counts = {run_id: len(events) for run_id, events in batches.items() if events}
    if not counts:
        return
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        lasts = _bump_many(counts)
        rows: list[tuple] = []
        for run_id, events in batches.items():
            if events:
                rows += pack_rows(run_id, lasts[run_id] - len(events) + 1, events, now)
        _insert_rows(rows)
        notify_events(list(counts))


def _bump_many(counts: dict[int, int]) -> dict[int, int]:
    """Add each run's count to its counter in one statement; the new values by run."""
    if len(counts) == 1:
        ((run_id, count),) = counts.items()
        return {run_id: _bump_last_seq(run_id, count)}
    from taskrunner.models import Run

    connection = connections["default"]
    table = connection.ops.quote_name(Run._meta.db_table)
    cases = " ".join(["WHEN %s THEN %s"] * len(counts))
    marks = ", ".join(["%s"] * len(counts))
    params: list[int] = []
    for run_id, count in counts.items():
        params += [run_id, count]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + CASE id {cases} END "  # noqa: S608
            f"WHERE id IN ({marks}) RETURNING id, last_seq",
            [*params, *counts],
        )
        lasts = dict(cursor.fetchall())
    missing = sorted(set(counts) - set(lasts))
    if missing:
        raise Run.DoesNotExist(f"No run {missing[0]}.")
    return lasts


def _bump_last_seq(run_id: int, count: int) -> int:
    """Add `count` to the run's counter and return its new value, in one statement."""
    from taskrunner.models import Run

    connection = connections["default"]
    table = connection.ops.quote_name(Run._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + %s WHERE id = %s RETURNING last_seq",  # noqa: S608
            [count, run_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Run.DoesNotExist(f"No run {run_id}.")
    return row[0]


def _encode_body(value: Any) -> str:
    body = _pack_json(value)
    if not body.isascii():
        try:
            body.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: neither database takes it raw
            body = _pack_ascii(value)
    return body


def pack_log(events: Sequence[tuple], default_ts: datetime) -> tuple[datetime, str]:
    """Consecutive log events `(kind, stream, text, data[, ts])` as (chunk ts, body)."""
    stamps: dict[int, int] = {}

    def ms(ts: datetime) -> int:
        key = id(ts)
        value = stamps.get(key)
        if value is None:
            value = stamps[key] = to_ms(ts)
        return value

    times = [ms(e[4]) if len(e) > 4 else ms(default_ts) for e in events]
    base = times[0]
    base_ts = events[0][4] if len(events[0]) > 4 else default_ts
    offsets: list[list[int]] = []
    previous = base
    for i, t in enumerate(times):
        if t != previous:
            offsets.append([i, t - base])
            previous = t
    streams = "".join(["e" if e[1] == "stderr" else "o" for e in events])
    if streams.count(streams[0]) == len(streams):
        streams = streams[0]  # one stream for every line: a letter for them all
    continued = [i for i, e in enumerate(events) if e[3] and e[3].get("continued")]
    texts = [e[2] for e in events]
    return base_ts, _encode_body([streams, offsets, continued, texts])


def _log_pieces(events: Sequence[tuple]) -> Iterator[tuple[int, int]]:
    """(start, end) index ranges of at most CHUNK_LINES lines / CHUNK_CHARS characters."""
    total = list(accumulate(len(e[2]) for e in events))
    start, n = 0, len(events)
    while start < n:
        before = total[start - 1] if start else 0
        end = bisect_right(total, before + CHUNK_CHARS, start, n)
        end = max(end, start + 1)  # an over-long line goes alone
        end = min(end, start + CHUNK_LINES)
        yield start, end
        start = end


def pack_rows(run_id: int, first: int, events: Sequence[tuple], now: datetime) -> list[tuple]:
    """Rows `(run_id, first_seq, last_seq, kind, ts, body, size)` for events from seq `first`."""
    rows: list[tuple] = []
    i, n = 0, len(events)
    while i < n:
        event = events[i]
        if event[0] != LOG:
            body = _encode_body(event[3])
            ts = event[4] if len(event) > 4 else now
            rows.append((run_id, first + i, first + i, event[0], ts, body, len(body)))
            i += 1
            continue
        j = i + 1
        while j < n and events[j][0] == LOG:
            j += 1
        segment = events[i:j]
        for start, end in _log_pieces(segment):
            ts, body = pack_log(segment[start:end], now)
            rows.append((run_id, first + i + start, first + i + end - 1, LOG, ts, body, len(body)))
        i = j
    return rows


def _insert_rows(rows: list[tuple]) -> None:
    """A few rows per batch: executemany on both databases (psycopg pipelines it)."""
    connection = connections["default"]
    adapt = connection.ops.adapt_datetimefield_value
    table = _table()
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (run_id, first_seq, last_seq, kind, ts, body, size) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(r[0], r[1], r[2], r[3], adapt(r[4]), r[5], r[6]) for r in rows],
        )


# --- reading -------------------------------------------------------------------

# A row as read: (run_id, first_seq, last_seq, kind, ts_text, body).

MAX_ROWS = 512  # rows per read, whatever their size


def _budgeted(where: str, order: str) -> str:
    """Rows matching `where` (ordered, limited) while the sizes before each stay under a budget.

    The running sum is computed by the database over the keys alone, read
    from the covering index `event_chunk_budget` (run, last_seq,
    first_seq, kind, size), and only the rows chosen are then read whole. Summing over whole
    rows made the database read every candidate's body first (on SQLite,
    its overflow pages, since `size` is stored after `body`): up to 512
    chunks of 256 KB for a read that keeps two of them.
    """
    table = _table()
    outer = ", ".join(f"e.{term.strip()}" for term in order.split(","))
    keys = (
        f"SELECT id, run_id, last_seq, size FROM {table} "  # noqa: S608
        f"WHERE {where} ORDER BY {order} LIMIT %s"
    )
    return (
        "SELECT e.run_id, e.first_seq, e.last_seq, e.kind, CAST(e.ts AS TEXT), e.body "  # noqa: S608
        f"FROM {table} AS e JOIN ("
        f"SELECT id FROM (SELECT k.id, k.size, SUM(k.size) OVER "
        f"(ORDER BY {order} ROWS UNBOUNDED PRECEDING) AS running FROM ({keys}) AS k) AS b "
        f"WHERE running - size < %s) AS chosen ON e.id = chosen.id ORDER BY {outer}"
    )


def fetch_after(
    cursors: dict[int, int], max_bytes: int, *, log_only: bool = False, max_rows: int = MAX_ROWS
) -> list[tuple]:
    """Rows holding events after each run's cursor, by run then seq; about `max_bytes` at most.

    Raw SQL on purpose: the ORM's per-row converters would cost more than
    everything else on the stream path; `ts` comes as text, parsed once a row.
    """
    if not cursors:
        return []
    connection = connections["default"]
    where = " OR ".join(["(run_id = %s AND last_seq > %s)"] * len(cursors))
    params: list[Any] = []
    for run_id, after in cursors.items():
        params += [run_id, after]
    kind = " AND kind = 'log'" if log_only else ""
    sql = _budgeted(f"({where}){kind}", "run_id, last_seq")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, max_rows, max_bytes])
        return cursor.fetchall()


def fetch_before(
    run_id: int, before: int, max_bytes: int, *, log_only: bool = False, max_rows: int = MAX_ROWS
) -> list[tuple]:
    """Rows holding events of one run before seq `before`, newest first; about `max_bytes`."""
    connection = connections["default"]
    kind = " AND kind = 'log'" if log_only else ""
    sql = _budgeted(f"run_id = %s AND first_seq < %s{kind}", "last_seq DESC")
    with connection.cursor() as cursor:
        cursor.execute(sql, [run_id, before, max_rows, max_bytes])
        return cursor.fetchall()


def first_seq(run_id: int) -> int | None:
    """The oldest seq still stored for the run (None: no events)."""
    connection = connections["default"]
    sql = f"SELECT first_seq FROM {_table()} WHERE run_id = %s ORDER BY last_seq LIMIT 1"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [run_id])
        row = cursor.fetchone()
    return row[0] if row else None


class RowReader:
    """Turns rows into their events' parts, caching the time texts of a read."""

    def __init__(self) -> None:
        self._base: dict[str, int] = {}
        self._iso: dict[int, str] = {}

    def base_ms(self, ts_text: str | datetime) -> int:
        base = self._base.get(ts_text)  # type: ignore[arg-type]
        if base is None:
            value = ts_text
            if isinstance(value, str):  # "YYYY-MM-DD HH:MM:SS.ffffff[+00]"
                value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            base = self._base[ts_text] = to_ms(value)  # type: ignore[index]
        return base

    def iso(self, ms: int) -> str:
        text = self._iso.get(ms)
        if text is None:
            if len(self._iso) > 4096:
                self._iso.clear()
            text = self._iso[ms] = iso_ms(ms)
        return text

    @staticmethod
    def log_parts(body: str) -> tuple[str, list[int], list[int], list[str]]:
        """(streams, offsets, continued, texts), `offsets` one per line or `[]` (all 0)."""
        streams, offsets, continued, texts = _loads(body)
        if len(streams) != len(texts):
            streams = streams * len(texts)
        if offsets and isinstance(offsets[0], list):
            offsets = _expand_steps(offsets, len(texts))
        return streams, offsets, continued, texts

    def events(self, row: tuple, after: int = 0, before: int | None = None) -> list[Event]:
        """The row's events with `after < seq` (and `seq < before`)."""
        _run_id, first, last, kind, ts_text, body = row
        base = self.base_ms(ts_text)
        if kind != LOG:
            if first <= after or (before is not None and first >= before):
                return []
            return [Event(first, kind, data=_loads(body), ts=_ms_datetime(base))]
        streams, offsets, continued, texts = self.log_parts(body)
        start = max(0, after - first + 1)
        stop = len(texts) if before is None else max(0, min(len(texts), before - first))
        marks = set(continued)
        out = []
        for i in range(start, stop):
            ms = base + offsets[i] if offsets else base
            out.append(
                Event(
                    first + i,
                    LOG,
                    "stderr" if streams[i] == "e" else "stdout",
                    texts[i],
                    {"continued": True} if i in marks else None,
                    _ms_datetime(ms),
                    i in marks,
                )
            )
        return out


def _expand_steps(steps: list[list[int]], count: int) -> list[int]:
    """Per-line offsets from steps `[[index, ms], ...]` (lines before the first are 0)."""
    offsets = [0] * count
    for k, (index, ms) in enumerate(steps):
        end = steps[k + 1][0] if k + 1 < len(steps) else count
        offsets[index:end] = [ms] * (end - index)
    return offsets


def _ms_datetime(ms: int) -> datetime:
    return EPOCH + ms * MILLISECOND


def event_size(event: Event) -> int:
    """A cheap measure of an event's weight in a response (its text or data)."""
    if event.kind == LOG:
        return len(event.text) + 64
    return 256


def read_after(
    run_id: int,
    after: int,
    *,
    max_events: int,
    max_bytes: int,
    upto: int | None = None,
    log_only: bool = False,
) -> list[Event]:
    """Events with `after < seq (<= upto)`, in order; stops at `max_events` or `max_bytes`.

    At least one event when there is one, so a caller always moves on;
    callers continue from the last seq returned.
    """
    reader = RowReader()
    out: list[Event] = []
    size = 0
    rows = fetch_after({run_id: after}, max_bytes, log_only=log_only)
    for row in rows:
        for event in reader.events(row, after):
            if upto is not None and event.seq > upto:
                return out
            if out and (len(out) >= max_events or size >= max_bytes):
                return out
            out.append(event)
            size += event_size(event)
    return out


def read_before(
    run_id: int, before: int | None, *, max_events: int, max_bytes: int, log_only: bool = False
) -> list[Event]:
    """The newest events with `seq < before`, oldest first; at most `max_events` / `max_bytes`."""
    reader = RowReader()
    newest_first: list[Event] = []
    size = 0
    limit = before if before is not None else 2**63 - 1
    for row in fetch_before(run_id, limit, max_bytes, log_only=log_only):
        for event in reversed(reader.events(row, 0, limit)):
            if newest_first and (len(newest_first) >= max_events or size >= max_bytes):
                newest_first.reverse()
                return newest_first
            newest_first.append(event)
            size += event_size(event)
    newest_first.reverse()
    return newest_first


def iter_after(
    run_id: int,
    after: int,
    *,
    upto: int | None = None,
    log_only: bool = False,
    batch_bytes: int = 4 * 1024 * 1024,
) -> Iterator[list[Event]]:
    """Every event after `after` (up to `upto`), in bounded batches."""
    while True:
        batch = read_after(
            run_id, after, max_events=50_000, max_bytes=batch_bytes, upto=upto, log_only=log_only
        )
        if not batch:
            return
        yield batch
        after = batch[-1].seq


def tail_start(run_id: int, lines: int, upto: int) -> int:
    """The seq after which the last `lines` log lines (up to `upto`) begin."""
    counted = 0
    before = upto + 1
    while counted < lines:
        batch = read_before(
            run_id, before, max_events=lines - counted, max_bytes=4 * 1024 * 1024, log_only=True
        )
        if not batch:
            break
        counted += len(batch)
        before = batch[0].seq
    return before - 1 if counted else upto


# --- pruning ---------------------------------------------------------------------


def prune_log(run_id: int, keep_bytes: int) -> tuple[int, int]:
    """Delete the run's oldest log chunks so that at most `keep_bytes` of log stay stored.

    Whole chunks go, oldest first; status, progress and message events stay,
    and no seq changes. Returns (lines deleted, bytes deleted). The retention
    work (TASKRUNNER_MAX_LOG_BYTES) calls this.
    """
    from taskrunner.models import EventChunk

    chunks = EventChunk.objects.filter(run_id=run_id, kind=LOG)
    kept = 0
    cut = None
    for last_seq, size in chunks.order_by("-last_seq").values_list("last_seq", "size").iterator():
        kept += size
        if kept > keep_bytes:
            cut = last_seq
            break
    if cut is None:
        return (0, 0)
    doomed = chunks.filter(last_seq__lte=cut)
    totals = list(doomed.values_list("first_seq", "last_seq", "size"))
    doomed.delete()
    return (sum(b - a + 1 for a, b, _ in totals), sum(s for _, _, s in totals))
