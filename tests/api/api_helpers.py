"""Helpers of the API tests: an SSE parser over httpx lines, a small HTTP client."""

import json
import sys
import time
from pathlib import Path
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

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
