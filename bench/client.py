"""A small HTTP/1.1 client reading Server-Sent Events from a raw asyncio socket.

Cheap enough that a thousand of them in one process do not measure the
client instead of the server: chunked framing is undone, the stream is cut at
event boundaries (a blank line) and handed on as complete events, in blocks.
"""

import asyncio
import re
import time
from collections.abc import Callable

ID_RE = re.compile(rb"\nid: (\d+)\n")


class StreamError(Exception):
    pass


class SSEClient:
    """One GET of an event stream; `on_events(block, received_at)` gets complete events."""

    def __init__(self, port: int, path: str, token: str, on_events: Callable[[bytes, float], None]):
        self.port = port
        self.path = path
        self.token = token
        self.on_events = on_events
        self.status = 0
        self.connected_at: float | None = None  # time.time() when the headers arrived
        self.ended = False
        self.events = 0  # events with an id
        self.last_id = 0
        self.gaps = 0  # ids not following the previous one
        self._tail = b"\n"  # so the first "id:" is preceded by a line end too
        self._writer: asyncio.StreamWriter | None = None

    async def run(self, deadline: float) -> None:
        """Read until the stream ends (`end` event or close) or `deadline` (loop time)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22)
            self._writer = writer
            try:
                writer.write(
                    (
                        f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                        f"Authorization: Bearer {self.token}\r\n"
                        "Accept: text/event-stream\r\n\r\n"
                    ).encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                self.connected_at = time.time()
                status_line, *header_lines = head.decode("latin-1").split("\r\n")
                self.status = int(status_line.split()[1])
                headers = {}
                for line in header_lines:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip().lower()
                if self.status != 200:
                    return
                chunked = headers.get("transfer-encoding") == "chunked"
                while not self.ended and loop.time() < deadline:
                    if chunked:
                        size_line = await reader.readuntil(b"\r\n")
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            return
                        data = (await reader.readexactly(size + 2))[:-2]
                    else:
                        data = await reader.read(1 << 20)
                        if not data:
                            return
                    self._feed(data)
            finally:
                writer.close()

    def _feed(self, data: bytes) -> None:
        buf = self._tail + data
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self._tail = buf
            return
        block, self._tail = buf[: cut + 2], buf[cut + 1 :]
        now = time.time()
        ids = ID_RE.findall(block)
        if ids:
            first, last = int(ids[0]), int(ids[-1])
            if first != self.last_id + 1 or last - first + 1 != len(ids):
                self.gaps += 1
            self.events += len(ids)
            self.last_id = last
        if b"\nevent: end\n" in block:
            self.ended = True
        self.on_events(block, now)
