"""The SSE framing, without a server or a database."""

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from api_helpers import parse_sse

from taskrunner import sse
from taskrunner.events.store import Event, RowReader, pack_rows
from taskrunner.hub import _encode
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
    return Event(seq, kind, stream, text, data, ts, bool(kind == "log" and data))


EXAMPLES = [
    stored(1, "status", data={"id": 1, "status": "queued"}),
    stored(2, "log", stream="stdout", text="crawled /products/12"),
    stored(3, "log", stream="stderr", text="half of a long line\r", data={"continued": True}),
    stored(4, "progress", data={"current": 4, "total": 10, "fraction": 0.4, "message": "é"}),
    stored(5, "message", data={"name": "hello", "data": {"n": [1, 2]}}),
    stored(6, "log", stream="stdout", text='quotes " and \\ and \x01 and <script>'),
]


def rows_of(run_id: int, events: list[Event]) -> list[tuple]:
    """Store rows as the database gives them back: timestamps as SQLite's text."""
    packed = pack_rows(
        run_id, events[0].seq, [(e.kind, e.stream, e.text, e.data, e.ts) for e in events], TS
    )
    return [
        (r[0], r[1], r[2], r[3], r[4].astimezone(UTC).replace(tzinfo=None).isoformat(" "), r[5])
        for r in packed
    ]


def test_stored_events_encode_exactly_as_the_event_payload():
    chunks, more = _encode(rows_of(1, EXAMPLES), {}, 1 << 20)
    assert not more
    out = b"".join(chunk.data for _, chunk in chunks)
    parsed = list(parse_sse(lines(out)))
    assert [(e.event, e.seq) for e in parsed] == [(ev.kind, ev.seq) for ev in EXAMPLES]
    for got, ev in zip(parsed, EXAMPLES, strict=True):
        assert got.data == event_payload(ev)


def test_store_rows_read_back_every_event_exactly():
    reader = RowReader()
    back = [e for row in rows_of(1, EXAMPLES) for e in reader.events(row)]
    # Times are kept to the millisecond, the precision every `ts` is sent with.
    assert back == [replace(e, ts=TS.replace(microsecond=234000)) for e in EXAMPLES]
    assert [e.seq for row in rows_of(1, EXAMPLES) for e in reader.events(row, 3)] == [4, 5, 6]


def test_hub_chunks_group_runs_find_the_final_status_and_slice_after_a_cursor():
    final = stored(3, "status", data={"id": 1, "status": "failed", "exit_code": 2})
    rows = rows_of(1, [*EXAMPLES[:2], final])
    rows += rows_of(2, [stored(7, "log", stream="stdout", text="other run")])
    chunks, _ = _encode(rows, {}, 1 << 20)
    (run1, chunk), (run2, other) = chunks
    assert (run1, chunk.first, chunk.last, chunk.final) == (1, 1, 3, (3, "failed", 2))
    assert (run2, other.first, other.last, other.final) == (2, 7, 7, None)
    assert chunk.after(0) == chunk.data
    assert [e.seq for e in parse_sse(lines(chunk.after(1)))] == [2, 3]
    assert [e.seq for e in parse_sse(lines(chunk.after(2)))] == [3]


def test_a_read_landing_inside_a_chunk_gives_exactly_the_events_after_it():
    many = [stored(s, "log", stream="stdout", text=f"l{s}") for s in range(99, 112)]
    rows = rows_of(5, many)
    assert len(rows) == 1  # one chunk holds them all
    chunks, _ = _encode(rows, {5: 104}, 1 << 20)
    assert [e.seq for e in parse_sse(lines(chunks[0][1].data))] == list(range(105, 112))


def test_a_read_stops_at_its_byte_budget_and_says_so():
    many = [stored(s, "log", stream="stdout", text="x" * 1000) for s in range(1, 101)]
    chunks, more = _encode(rows_of(5, many), {}, 10_000)
    assert more
    seqs = [e.seq for _, c in chunks for e in parse_sse(lines(c.data))]
    assert seqs == list(range(1, len(seqs) + 1)) and 5 <= len(seqs) < 20


def test_chunk_after_a_cursor_inside_handles_big_seqs():
    chunks, _ = _encode(
        rows_of(1, [stored(s, "log", stream="stdout", text=f"l{s}") for s in range(99, 112)]),
        {},
        1 << 20,
    )
    chunk = chunks[0][1]
    assert (chunk.first, chunk.last) == (99, 111)
    assert [e.seq for e in parse_sse(lines(chunk.after(109)))] == [110, 111]
    assert [e.seq for e in parse_sse(lines(chunk.after(100)))][0] == 101
