"""Server-Sent Events framing (WHATWG HTML, "Server-sent events").

Small pure functions that turn events into the bytes of a `text/event-stream`
response; no Django, no I/O, unit-tested in tests/api/test_sse.py.

- Data is always one line of JSON: `json.dumps` escapes CR and LF, so a log
  line holding `\\r` (progress bars) can never be cut by the browser's parser.
  Text given as a str is split on every line ending and sent as one `data:`
  line per piece, which the browser joins back with LF.
- JSON is ASCII-escaped, so a lone surrogate can never break the encoding of
  the stream (PITFALLS A-13).
- `id:` and `event:` values cannot hold a line ending or NUL (they would end
  the field or be ignored by the browser); they are refused.

The hot path (`encode_rows`) formats stored event rows directly, caching the
timestamp text of a batch: a web process must push hundreds of thousands of
log lines a second through it.
"""

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from taskrunner.serializers import iso

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
encode_string = json.encoder.encode_basestring_ascii  # the C accelerator when present
_dumps = json.JSONEncoder(ensure_ascii=True, separators=(", ", ": ")).encode

KEEPALIVE = b": keepalive\n\n"


def _check_field(name: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"an SSE {name} cannot contain a line break or NUL: {value!r}")
    return value


def retry(milliseconds: int) -> bytes:
    """How long the browser waits before reconnecting (ASCII digits only)."""
    return f"retry: {int(milliseconds)}\n\n".encode()


def comment(text: str = "") -> bytes:
    """A comment line, ignored by clients; keeps proxies from closing the connection."""
    lines = _LINE_BREAK.split(text) if text else [""]
    return "".join(f": {line}\n" if line else ":\n" for line in lines).encode() + b"\n"


def event(data: Any, *, event: str | None = None, id: int | str | None = None) -> bytes:  # noqa: A002
    """One event: `data` is JSON-encoded unless it is already a str."""
    text = data if isinstance(data, str) else _dumps(data)
    parts = []
    if id is not None:
        parts.append(f"id: {_check_field('id', str(id))}\n")
    if event is not None:
        parts.append(f"event: {_check_field('event', event)}\n")
    for line in _LINE_BREAK.split(text):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


class RowEncoder:
    """Formats stored events `(seq, kind, stream, text, data, ts)` as SSE text.

    The payload is exactly `serializers.event_payload(event)`. Rows may come
    from raw SQL: `data` as JSON text, `ts` as SQLite's text or a datetime.
    The timestamp's text is cached, since a batch of events shares one `ts`.
    `last_status` holds `(status, exit_code)` of the last `status` event.
    """

    def __init__(self) -> None:
        self._ts: object = None
        self._ts_text = ""
        self.last_status: tuple[str | None, int | None] = (None, None)

    def iso(self, ts: datetime | str) -> str:
        if ts != self._ts:
            value = ts
            if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS.ffffff", UTC
                value = datetime.fromisoformat(value)
                if value.tzinfo is None:
                    value = value.replace(tzinfo=UTC)
            self._ts, self._ts_text = ts, iso(value) or ""
        return self._ts_text

    def encode(self, row: tuple) -> str:
        seq, kind, stream, text, data, ts = row
        if isinstance(data, str | bytes):
            data = json.loads(data)
        if kind == "log":
            extra = ', "continued": true' if data and data.get("continued") else ""
            return (
                f'id: {seq}\nevent: log\ndata: {{"seq": {seq}, "stream": {encode_string(stream)}, '
                f'"line": {encode_string(text)}, "ts": "{self.iso(ts)}"{extra}}}\n\n'
            )
        payload = dict(data) if isinstance(data, Mapping) else {}
        if kind == "status":
            self.last_status = (payload.get("status"), payload.get("exit_code"))
        payload["seq"] = seq
        payload["ts"] = self.iso(ts)
        return f"id: {seq}\nevent: {_check_field('event', kind)}\ndata: {_dumps(payload)}\n\n"

    def encode_rows(self, rows: Iterable[tuple]) -> bytes:
        return "".join([self.encode(row) for row in rows]).encode("utf-8")


def encode_rows(rows: Iterable[tuple]) -> bytes:
    """Many stored events as one chunk of the stream (one write, not one per event)."""
    return RowEncoder().encode_rows(rows)


def end(status: str, exit_code: int | None) -> bytes:
    """The last event of a run's stream: no `id`, so a reconnect resumes after the last seq."""
    return event({"status": status, "exit_code": exit_code}, event="end")
