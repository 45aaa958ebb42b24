"""The `data:` of each event, built in one place (shared/API.md, "The SSE stream").

A log event's payload is written as JSON text directly (the hot path: hundreds
of thousands of lines a second); every other kind is its stored data plus
`seq` and `ts`. `payload()` gives the same thing as a dict, for JSON
endpoints and tests: both come from `payload_json`.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

encode_string = json.encoder.encode_basestring_ascii  # the C accelerator when present
dumps = json.JSONEncoder(ensure_ascii=True, separators=(", ", ": ")).encode

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def iso(value: datetime | None) -> str | None:
    """UTC with milliseconds and a Z, as in the contract's examples."""
    if value is None:
        return None
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def to_ms(value: datetime) -> int:
    """Whole milliseconds since the epoch (the precision of every `ts` sent)."""
    return (value - EPOCH) // MILLISECOND


def iso_ms(ms: int) -> str:
    return iso(EPOCH + ms * MILLISECOND) or ""


def log_payload_json(seq: int, stream: str, line: str, ts_text: str, continued: bool) -> str:
    extra = ', "continued": true' if continued else ""
    return (
        f'{{"seq": {seq}, "stream": {encode_string(stream)}, "line": {encode_string(line)}, '
        f'"ts": "{ts_text}"{extra}}}'
    )


def other_payload_json(seq: int, data: Any, ts_text: str) -> str:
    payload = dict(data) if isinstance(data, dict) else {}
    payload["seq"] = seq
    payload["ts"] = ts_text
    return dumps(payload)


def payload_json(event) -> str:
    """The payload of a store `Event` as JSON text (ASCII: never breaks an encoding)."""
    ts_text = iso(event.ts) or ""
    if event.kind == "log":
        return log_payload_json(event.seq, event.stream, event.text, ts_text, event.continued)
    return other_payload_json(event.seq, event.data, ts_text)


def payload(event) -> dict[str, Any]:
    """The payload of a store `Event` as a dict (exactly what the stream sends)."""
    return json.loads(payload_json(event))
