"""A stream's subscription to the hub, without a server or a database.

The hub's feed and the database are faked: what is checked is that a client
gets every event once, in order, whether it arrives through the feed, a gap
read from the database, or a catch-up after its buffer overflowed.
"""

import asyncio
import json

from api_helpers import parse_sse

from taskrunner import sse
from taskrunner.hub import Chunk, RunSubscription


def chunk(first: int, last: int, final: str | None = None) -> Chunk:
    events = [
        sse.frame(seq, "log", json.dumps({"seq": seq, "line": f"line {seq}"}))
        for seq in range(first, last + 1)
    ]
    if final:
        events[-1] = sse.frame(last, "status", json.dumps({"status": final, "exit_code": 0}))
    return Chunk(first, last, "".join(events).encode(), (last, final, 0) if final else None)


class FakeHub:
    """What a subscription needs of the hub; `stored` is the run's events in the DB."""

    def __init__(self, stored: int, buffer_bytes: int = 1 << 20):
        self.stored = stored
        self.frontier = {1: stored}
        self.buffer_bytes = buffer_bytes
        self.stats = {"overflows": 0, "dropped": 0}
        self.stall_seconds = 3600.0  # these clients read: never dropped
        self.reads: list[int] = []

    async def read_run(self, run_id: int, after: int) -> Chunk | None:
        self.reads.append(after)
        last = min(self.stored, after + 10)  # reads come in pages of 10
        return chunk(after + 1, last) if last > after else None

    def store(self, count: int) -> Chunk:
        """New events committed and fetched by the hub's reader."""
        new = chunk(self.stored + 1, self.stored + count)
        self.stored += count
        self.frontier[1] = self.stored
        return new


def seqs(data: bytes) -> list[int]:
    return [e.seq for e in parse_sse(data.decode().split("\n")) if e.id is not None]


async def drain(sub: RunSubscription) -> tuple[list[int], tuple | None]:
    got: list[int] = []
    while True:
        data, end = await sub.next(0.01)
        if data is None:
            return got, None
        got += seqs(data)
        if end:
            return got, end


def test_replay_then_feed_in_order_exactly_once():
    async def scenario():
        hub = FakeHub(stored=25)
        sub = RunSubscription(hub, 1, cursor=0)
        sub.feed(hub.store(3))  # 26..28 arrive while the client still replays
        got, _ = await drain(sub)
        assert got == list(range(1, 29))
        assert hub.reads == [0, 10, 20]  # the replay, read by the client itself
        sub.feed(hub.store(2))
        assert (await drain(sub))[0] == [29, 30]
        assert hub.reads == [0, 10, 20]  # live events come from the feed, no read

    asyncio.run(scenario())


def test_a_gap_in_the_feed_is_read_from_the_database():
    async def scenario():
        hub = FakeHub(stored=5)
        sub = RunSubscription(hub, 1, cursor=5)
        hub.store(4)  # 6..9 fetched before this client subscribed: never fed to it
        sub.feed(hub.store(2))  # 10..11
        assert (await drain(sub))[0] == [6, 7, 8, 9, 10, 11]
        assert hub.reads == [5]

    asyncio.run(scenario())


def test_overflow_drops_the_buffer_and_catches_up_from_the_database():
    async def scenario():
        hub = FakeHub(stored=1, buffer_bytes=600)
        sub = RunSubscription(hub, 1, cursor=1)
        for _ in range(20):
            sub.feed(hub.store(3))  # ~300 bytes each: the buffer overflows again and again
            assert sub.buffered <= 600
        assert sub.overflows >= 1 and hub.stats["overflows"] == sub.overflows
        assert (await drain(sub))[0] == list(range(2, 62))

    asyncio.run(scenario())


def test_a_client_that_takes_nothing_while_its_buffer_is_full_is_dropped():
    async def scenario():
        hub = FakeHub(stored=1, buffer_bytes=600)
        hub.stall_seconds = 0.0  # any time without asking counts as stuck
        unsubscribed = []
        hub.unsubscribe_run = unsubscribed.append
        sub = RunSubscription(hub, 1, cursor=1)
        while not sub.dropped:
            sub.feed(hub.store(3))
        assert unsubscribed == [sub] and hub.stats["dropped"] == 1
        assert sub.buffered == 0
        sub.feed(hub.store(3))  # nothing more is kept for it
        assert sub.buffered == 0
        assert await sub.next(0.01) == (b"", None)  # the stream ends; it resumes by id

    asyncio.run(scenario())


def test_the_end_comes_after_the_final_status_and_with_a_finished_run():
    async def scenario():
        hub = FakeHub(stored=3)
        sub = RunSubscription(hub, 1, cursor=3)
        hub.stored, hub.frontier[1] = 5, 5
        sub.feed(chunk(4, 5, final="failed"))
        got, end = await drain(sub)
        assert (got, end) == ([4, 5], ("failed", 0))

        finished = RunSubscription(FakeHub(stored=12), 1, cursor=0, final_at=(12, "aborted", None))
        got, end = await drain(finished)
        assert (got, end) == (list(range(1, 13)), ("aborted", None))

        idle = RunSubscription(FakeHub(stored=2), 1, cursor=2)
        assert await idle.next(0.01) == (None, None)  # nothing: the caller sends a keepalive

    asyncio.run(scenario())
