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

The hot path (`frame`) is a plain f-string: a web process must push hundreds
of thousands of log lines a second through it (the hub's `_encode`).
"""

import json
import re
from typing import Any

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
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


def frame(seq: int, kind: str, payload_json: str) -> str:
    """One stored event as stream text: its payload (one line of ASCII JSON) with its id.

    `kind` is one of the store's event kinds (never user text); the payload
    comes from `taskrunner.events.payloads`, the one place payloads are built.
    """
    return f"id: {seq}\nevent: {kind}\ndata: {payload_json}\n\n"


def end(status: str, exit_code: int | None) -> bytes:
    """The last event of a run's stream: no `id`, so a reconnect resumes after the last seq."""
    return event({"status": status, "exit_code": exit_code}, event="end")


def pruned(first_seq: int) -> bytes:
    """Events the client asked for were deleted (log cap, retention): the oldest still stored.

    No `id`: the stream goes on with the next real event, whose id is the cursor.
    """
    return event({"first_seq": first_seq}, event="pruned")
