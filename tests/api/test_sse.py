"""The SSE framing, without a server or a database."""

import json
from datetime import UTC, datetime

import pytest
from api_helpers import parse_sse

from taskrunner import sse
from taskrunner.hub import Chunk, _encode
from taskrunner.models import RunEvent
from taskrunner.serializers import event_payload

TS = datetime(2026, 11, 23, 10, 0, 1, 234567, tzinfo=UTC)


def lines(data: bytes) -> list[str]:
    return data.decode().split("\n")


def test_event_is_one_json_data_line_with_id_and_type():
    out = sse.event({"a": "x\r\ny\rz\n"}, event="log", id=17)
    assert out == b'id: 17\nevent: log\ndata: {"a": "x\\r\\ny\\rz\\n"}\n\n'


def test_text_data_is_split_on_every_line_ending():
    out = sse.event("one\r\ntwo\rthree\nfour")
    assert lines(out) == ["data: one", "data: two", "data: three", "data: four", "", ""]
    assert next(parse_sse(lines(out))).data == "one\ntwo\nthree\nfour"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_id_and_event_cannot_hold_line_breaks(bad):
    with pytest.raises(ValueError, match="line break"):
        sse.event({}, id=bad)
    with pytest.raises(ValueError, match="line break"):
        sse.event({}, event=bad)


def test_comment_retry_keepalive_and_end():
    assert sse.comment("keepalive") == b": keepalive\n\n"
    assert sse.comment("a\nb") == b": a\n: b\n\n"
    assert sse.retry(1500) == b"retry: 1500\n\n"
    assert sse.KEEPALIVE == b": keepalive\n\n"
    end = sse.end("succeeded", 0)
    assert b"id:" not in end
    assert next(parse_sse(lines(end))).data == {"status": "succeeded", "exit_code": 0}


def test_non_ascii_and_lone_surrogates_are_escaped_so_encoding_never_fails():
    out = sse.event({"line": "é \ud800"})
    assert out.isascii()
    assert json.loads(lines(out)[0].removeprefix("data: "))["line"] == "é \ud800"


def stored(seq, kind, *, stream="", text="", data=None, ts=TS):
    return RunEvent(run_id=1, seq=seq, kind=kind, stream=stream, text=text, data=data, ts=ts)


EXAMPLES = [
    stored(1, "status", data={"id": 1, "status": "queued"}),
    stored(2, "log", stream="stdout", text="crawled /products/12"),
    stored(3, "log", stream="stderr", text="half of a long line\r", data={"continued": True}),
    stored(4, "progress", data={"current": 4, "total": 10, "fraction": 0.4, "message": "é"}),
    stored(5, "message", data={"name": "hello", "data": {"n": [1, 2]}}),
    stored(6, "log", stream="stdout", text='quotes " and \\ and \x01 and <script>'),
]


def row(ev: RunEvent, *, raw: bool) -> tuple:
    if raw:  # as raw SQL returns them from SQLite: JSON text, timestamp text
        data = json.dumps(ev.data) if ev.data is not None else None
        ts = ev.ts.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
        return (ev.seq, ev.kind, ev.stream, ev.text, data, ts)
    return (ev.seq, ev.kind, ev.stream, ev.text, ev.data, ev.ts)


@pytest.mark.parametrize("raw", [False, True])
def test_stored_events_encode_exactly_as_the_event_payload(raw):
    out = sse.encode_rows([row(ev, raw=raw) for ev in EXAMPLES])
    parsed = list(parse_sse(lines(out)))
    assert [(e.event, e.seq) for e in parsed] == [(ev.kind, ev.seq) for ev in EXAMPLES]
    for got, ev in zip(parsed, EXAMPLES, strict=True):
        assert got.data == event_payload(ev)


def test_hub_chunks_group_runs_find_the_final_status_and_slice_after_a_cursor():
    final = stored(3, "status", data={"id": 1, "status": "failed", "exit_code": 2})
    rows = [(1, *row(ev, raw=True)) for ev in [*EXAMPLES[:2], final]]
    rows.append((2, *row(stored(7, "log", stream="stdout", text="other run"), raw=True)))
    (run1, chunk), (run2, other) = _encode(rows)
    assert (run1, chunk.first, chunk.last, chunk.final) == (1, 1, 3, (3, "failed", 2))
    assert (run2, other.first, other.last, other.final) == (2, 7, 7, None)
    assert chunk.after(0) == chunk.data
    assert [e.seq for e in parse_sse(lines(chunk.after(1)))] == [2, 3]
    assert [e.seq for e in parse_sse(lines(chunk.after(2)))] == [3]


def test_chunk_after_a_cursor_inside_handles_big_seqs():
    data = sse.encode_rows([(s, "log", "stdout", f"l{s}", None, TS) for s in range(99, 112)])
    chunk = Chunk(99, 111, data)
    assert [e.seq for e in parse_sse(lines(chunk.after(109)))] == [110, 111]
    assert [e.seq for e in parse_sse(lines(chunk.after(100)))][0] == 101
