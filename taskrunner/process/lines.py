"""Turning a child's output bytes into log lines and protocol events.

`LineSplitter` accepts any bytes: invalid UTF-8 is replaced, NUL is replaced
(PostgreSQL text cannot hold it), a line longer than the limit is cut into
pieces marked as continued, and a carriage return replaces the line so far,
so a progress bar keeps only its last state. Memory stays bounded by the
limit however the child writes.

`parse_protocol` recognises the `::progress`, `::result` and `::message`
lines of the contract; anything else is an ordinary log line. A protocol line
holding a number that is not finite (NaN, Infinity, or one so large that it
overflows to infinity) is an ordinary log line too: neither database can
store it in JSON, and a value the database refuses must never reach the
worker's write path.
"""

import json
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

REPLACEMENT = "\ufffd"


class Line(NamedTuple):
    # A NamedTuple, not a frozen dataclass: one is made per output line, and
    # a frozen dataclass's __init__ cost more than splitting the line.
    text: str
    continued: bool = False  # the line goes on in the next Line


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    return text


def _cut_point(raw: bytes | bytearray, limit: int) -> int:
    """Where to cut `raw` at most `limit` bytes in, not inside a UTF-8 character."""
    cut = limit
    # Back off over continuation bytes (0b10xxxxxx), at most 3 of them.
    for _ in range(3):
        if cut > 0 and (raw[cut] & 0xC0) == 0x80:
            cut -= 1
        else:
            break
    return cut if cut > 0 else limit


class LineSplitter:
    def __init__(self, max_line_bytes: int = 64 * 1024):
        self.max_line_bytes = max_line_bytes
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[Line]:
        """The complete lines in `data` (with what was pending before)."""
        lines: list[Line] = []
        if not data:
            return lines
        end = data.rfind(b"\n")
        if end >= 0:
            complete = bytes(self._pending) + data[:end] if self._pending else data[:end]
            self._pending = bytearray(data[end + 1 :])
            if b"\r" in complete:
                for raw in complete.split(b"\n"):
                    self._emit(raw, lines)
            else:
                # The common case, decoded in one go (a line never ends inside
                # a UTF-8 character); only a suspiciously long line is measured.
                short = self.max_line_bytes // 4
                for text in _decode(complete).split("\n"):
                    if len(text) <= short:
                        lines.append(Line(text))
                    else:
                        self._emit_text(text, lines)
        else:
            self._pending += data
        self._collapse_pending()
        self._cut_long_pending(lines)
        return lines

    def flush(self) -> list[Line]:
        """What is left at the end of the stream, as a last line."""
        lines: list[Line] = []
        if self._pending:
            raw, self._pending = bytes(self._pending), bytearray()
            self._emit(raw, lines)
        return lines

    def _emit(self, raw: bytes, lines: list[Line]) -> None:
        if b"\r" in raw:
            raw = raw.rstrip(b"\r")  # CRLF endings, or a bar finished by \r\n
            raw = raw.rsplit(b"\r", 1)[-1]  # the line keeps its last state
        while len(raw) > self.max_line_bytes:
            cut = _cut_point(raw, self.max_line_bytes)
            lines.append(Line(_decode(raw[:cut]), continued=True))
            raw = raw[cut:]
        lines.append(Line(_decode(raw)))

    def _emit_text(self, text: str, lines: list[Line]) -> None:
        raw = text.encode()
        if len(raw) <= self.max_line_bytes:
            lines.append(Line(text))
            return
        while len(raw) > self.max_line_bytes:
            cut = _cut_point(raw, self.max_line_bytes)
            lines.append(Line(raw[:cut].decode(), continued=True))
            raw = raw[cut:]
        lines.append(Line(raw.decode()))

    def _collapse_pending(self) -> None:
        # A progress bar redrawn with \r and no \n would otherwise grow the
        # pending line forever; only what follows the last \r can survive.
        index = self._pending.rfind(b"\r")
        if index >= 0 and index < len(self._pending) - 1:
            del self._pending[: index + 1]

    def _cut_long_pending(self, lines: list[Line]) -> None:
        while len(self._pending) > self.max_line_bytes:
            cut = _cut_point(self._pending, self.max_line_bytes)
            piece = bytes(self._pending[:cut])
            if b"\r" in piece:
                # Never emit half a redraw: the \r would replace it anyway.
                return
            lines.append(Line(_decode(piece), continued=True))
            del self._pending[:cut]


PROGRESS_RE = re.compile(
    r"^::progress\s+(?:(?P<current>[-+]?\d+(?:\.\d+)?)\s*/\s*(?P<total>[-+]?\d+(?:\.\d+)?)"
    r"|(?P<fraction>[-+]?\d*\.?\d+))(?:\s+(?P<message>.*))?$"
)
MESSAGE_RE = re.compile(r"^::message\s+(?P<name>\S+)(?:\s+(?P<data>.*))?$")


@dataclass(frozen=True, slots=True)
class ProtocolEvent:
    kind: str  # "progress", "result" or "message"
    data: Any


def _without_nul(value: Any) -> Any:
    """The JSON value with NUL replaced in every string (PostgreSQL jsonb refuses it)."""
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


class NotFinite(ValueError):
    """A number the protocol refuses: NaN or infinite."""


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise NotFinite(f"{value} is not a finite number")
    return value


def _number(text: str) -> int | float:
    value = _finite(float(text))
    return int(value) if value.is_integer() and "." not in text else value


def _refuse_constant(name: str) -> None:
    raise NotFinite(f"{name} is not a JSON number")


def _loads(raw: str) -> Any:
    """JSON with only finite numbers (Python's json accepts NaN and turns 1e999 into inf)."""
    return json.loads(raw, parse_constant=_refuse_constant, parse_float=lambda t: _finite(float(t)))


def parse_protocol(text: str) -> ProtocolEvent | None:
    """The structured event a `::` line stands for, or None for an ordinary line."""
    if not text.startswith("::"):
        return None
    if text.startswith("::progress"):
        match = PROGRESS_RE.match(text)
        if not match:
            return None
        message = (match["message"] or "").strip()
        try:
            fraction: float | None
            total: float | None
            if match["fraction"] is not None:
                fraction = _finite(float(match["fraction"]))
                current, total = fraction, None
            else:
                current, total = _number(match["current"]), _number(match["total"])
                fraction = _finite(current / total) if total else None
        except (NotFinite, OverflowError):
            return None
        if fraction is not None:
            fraction = min(1.0, max(0.0, fraction))
        return ProtocolEvent(
            "progress",
            {"current": current, "total": total, "fraction": fraction, "message": message},
        )
    if text.startswith("::result "):
        try:
            return ProtocolEvent("result", _without_nul(_loads(text[len("::result ") :])))
        except (ValueError, RecursionError):
            return None
    if text.startswith("::message"):
        match = MESSAGE_RE.match(text)
        if not match:
            return None
        raw = match["data"]
        try:
            data = _loads(raw) if raw else None
        except (ValueError, RecursionError):
            return None
        return ProtocolEvent("message", {"name": match["name"], "data": _without_nul(data)})
    return None
