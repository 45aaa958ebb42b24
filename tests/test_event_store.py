"""The event store against the real database: ranges, budgets, tails and pruning."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def run():
    from taskrunner.models import Task

    return Task.objects.create(name="store", argv=["true"], params=[]).start({})


def _log(run_id: int, texts: list[str]) -> tuple[int, int]:
    from taskrunner.models import append_events

    return append_events(run_id, [("log", "stdout", text, None) for text in texts])


def test_ranges_inside_chunks_give_exactly_the_events_asked_for(run):
    from taskrunner.events import store
    from taskrunner.models import EventChunk, append_events

    _log(run.pk, [f"a{i}" for i in range(5000)])  # seqs 2..5001, two chunks
    append_events(run.pk, [("progress", "", "", {"current": 1, "total": 2})])  # 5002
    _log(run.pk, ["b0", "b1"])  # 5003, 5004
    assert EventChunk.objects.filter(run=run).count() == 5  # status, 2 log, progress, log

    got = store.read_after(run.pk, 4095, max_events=10, max_bytes=1 << 20)
    assert [e.seq for e in got] == list(range(4096, 4106))
    assert got[0].text == "a4094"
    tail = [e for b in store.iter_after(run.pk, 5000) for e in b]
    assert [(e.seq, e.kind) for e in tail] == [
        (5001, "log"),
        (5002, "progress"),
        (5003, "log"),
        (5004, "log"),
    ]
    assert store.read_after(run.pk, 5001, max_events=5, max_bytes=1, upto=5003)[0].seq == 5002
    before = store.read_before(run.pk, 4097, max_events=3, max_bytes=1 << 20)
    assert [e.seq for e in before] == [4094, 4095, 4096]
    assert store.tail_start(run.pk, 3, 5004) == 5000  # the last 3 log lines: 5001, 5003, 5004


def test_reads_stop_at_their_byte_budget_and_continue_where_they_stopped(run):
    from taskrunner.events import store

    _log(run.pk, ["x" * 10_000 for _ in range(500)])  # 5 MB
    seen = []
    after = 0
    while batch := store.read_after(run.pk, after, max_events=10_000, max_bytes=100_000):
        assert len(batch) <= 11
        seen += [e.seq for e in batch]
        after = batch[-1].seq
    assert seen == list(range(1, 502))


def test_pruning_deletes_the_oldest_log_chunks_and_keeps_seqs_and_statuses(run):
    from taskrunner.events import store
    from taskrunner.models import EventChunk

    for n in range(10):
        _log(run.pk, [f"{n}-{i}" for i in range(100)])  # one chunk of 100 lines per batch
    size = EventChunk.objects.filter(run=run, kind="log").first().size
    lines, removed = store.prune_log(run.pk, keep_bytes=3 * size)
    assert lines == 700 and removed >= 7 * size - 100
    assert store.first_seq(run.pk) == 1  # the start's status event stays
    left = [e for b in store.iter_after(run.pk, 0) for e in b]
    assert left[0].kind == "status"
    assert [e.seq for e in left[1:]] == list(range(702, 1002))
    assert left[1].text == "7-0"
    assert store.prune_log(run.pk, keep_bytes=10 * size) == (0, 0)


def test_each_line_keeps_its_own_time_and_older_per_line_chunks_still_read(run):
    """Times are stored as steps; a chunk holding one offset per line (written
    by the first chunked release) reads the same."""
    from datetime import timedelta

    from taskrunner.events import store
    from taskrunner.models import EventChunk, append_events

    base = run.created_at.replace(microsecond=0)
    offsets_ms = [0, 0, 3, 3, 3, 7, 2, 2]  # a step back too: stamps are the worker's reads
    events = [
        ("log", "stdout", f"t{i}", None, base + timedelta(milliseconds=ms))
        for i, ms in enumerate(offsets_ms)
    ]
    first, _ = append_events(run.pk, events)
    chunk = EventChunk.objects.get(run=run, first_seq=first)
    assert "[[2,3],[5,7],[6,2]]" in chunk.body
    got = store.read_after(run.pk, first - 1, max_events=100, max_bytes=1 << 20)
    assert [e.ts - base for e in got] == [timedelta(milliseconds=ms) for ms in offsets_ms]

    assert chunk.body.startswith('["o",')  # one stream letter for all lines

    # The older layout: a stream letter and an offset per line.
    per_line = chunk.body.replace("[[2,3],[5,7],[6,2]]", "[0,0,3,3,3,7,2,2]")
    per_line = per_line.replace('["o",', '["oooooooo",', 1)
    EventChunk.objects.filter(pk=chunk.pk).update(body=per_line, size=len(per_line))
    again = store.read_after(run.pk, first - 1, max_events=100, max_bytes=1 << 20)
    assert [(e.seq, e.text, e.ts) for e in again] == [(e.seq, e.text, e.ts) for e in got]
