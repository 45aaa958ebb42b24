"""Helpers of the API tests: an SSE parser over httpx lines, a small HTTP client."""

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

# Short keepalives so tests can see them without waiting 15 s.
# The stream tests open hundreds of streams as one user (the default cap is 100).
SERVER_ENV = {
    "TASKRUNNER_SSE_KEEPALIVE_SECONDS": "0.5",
    "TASKRUNNER_SSE_MAX_STREAMS_PER_USER": "1000",
}

CHILDREN = Path(__file__).resolve().parent.parent / "children"


def numbered(*args: str) -> list[str]:
    """argv of tests/children/numbered.py (`line N` every --interval seconds)."""
    return [sys.executable, str(CHILDREN / "numbered.py"), *args]


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


@dataclass
class Event:
    """One dispatched SSE event (or a comment, with `event` == ":")."""

    event: str
    data: Any = None
    id: str | None = None
    raw: list[str] = field(default_factory=list)

    @property
    def seq(self) -> int | None:
        return int(self.id) if self.id is not None else None


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the lines of a text/event-stream, as a browser would see them."""
    event, data, ident, raw = None, [], None, []
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value = json.loads(text)
                except ValueError:
                    value = text
                yield Event(event or "message", value, ident, raw)
            event, data, ident, raw = None, [], None, []
            continue
        raw.append(line)
        if line.startswith(":"):
            yield Event(":", line[1:].strip())
            raw = []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            ident = value
        elif name == "retry":
            yield Event("retry", int(value))
            raw = []


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client(base_url: str, token: str | None = None, **kwargs) -> httpx.Client:
    headers = bearer(token) if token else {}
    return httpx.Client(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(20.0),
        **kwargs,
    )


class Stream:
    """An open SSE response read lazily: `next_event()` blocks until one arrives."""

    def __init__(self, http: httpx.Client, url: str, headers: dict[str, str] | None = None):
        self._cm = http.stream("GET", url, headers=headers or {})
        self.response = self._cm.__enter__()
        self._events = parse_sse(self.response.iter_lines())
        self.seen: list[Event] = []

    @property
    def status_code(self) -> int:
        return self.response.status_code

    def next_event(self, *, comments: bool = False) -> Event:
        for ev in self._events:
            if ev.event in (":", "retry") and not comments:
                continue
            self.seen.append(ev)
            return ev
        raise EOFError("the stream ended")

    def until(self, predicate, limit: int = 1_000_000) -> list[Event]:
        """Events up to and including the first one matching `predicate`."""
        got = []
        for _ in range(limit):
            ev = self.next_event()
            got.append(ev)
            if predicate(ev):
                return got
        raise AssertionError("predicate never matched")

    def rest(self) -> list[Event]:
        got = []
        while True:
            try:
                got.append(self.next_event())
            except EOFError:
                return got

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_status(status: str):
    return lambda ev: ev.event == "status" and ev.data["status"] == status


def raw_stream_request(host: str, port: int, path: str, token: str, extra: str = "") -> bytes:
    """An HTTP/1.0 GET: the body then ends when the server closes (no chunking)."""
    return (
        f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n{extra}\r\n"
    ).encode()


class Fleet:
    """Many SSE clients on one asyncio loop in a thread, each recording the seqs it got.

    Raw HTTP/1.0 over asyncio streams, so 200 clients cost the test little.
    """

    def __init__(self, url: str, path: str, token: str):
        parts = urlsplit(url)
        self.host, self.port, self.path, self.token = parts.hostname, parts.port, path, token
        self.loop = asyncio.new_event_loop()
        self.seqs: list[list[int]] = []
        self.ended: list[bool] = []
        self.errors: list[str] = []
        self._tasks = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def add(self, count: int) -> None:
        def start():
            for _ in range(count):
                index = len(self.seqs)
                self.seqs.append([])
                self.ended.append(False)
                self._tasks.append(self.loop.create_task(self._client(index)))

        self.loop.call_soon_threadsafe(start)
        wait_for(lambda: len(self.seqs) >= count, 10)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(10)

    async def _client(self, index: int) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(raw_stream_request(self.host, self.port, self.path, self.token))
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    break
                text = line.decode().rstrip("\r\n")
                if text.startswith("id: "):
                    self.seqs[index].append(int(text[4:]))
                elif text == "event: end":
                    self.ended[index] = True
            writer.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded for the test to report
            self.errors.append(f"client {index}: {exc!r}")

    def count_at_least(self, seq: int) -> int:
        return sum(1 for seqs in self.seqs if seqs and seqs[-1] >= seq)

    def close(self) -> None:
        async def cancel():
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
