"""A run's output between its pipes and the database, without Django.

Lines become events here (the `::` protocol lines become progress, result and
message events; an `::artifact` line's path waits in `published`, a side
channel the worker empties to keep the file); the events wait in the
buffer until the writer takes them.
The buffer is bounded by water marks in events and in characters of log
text: past the high mark the supervisor stops reading the child's pipes, so
the child blocks in write() until the database has caught up, and memory
stays flat however fast or wide it prints. Nothing is ever dropped here: a
batch that could not be stored goes back in front, in order.
"""

from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from taskrunner.process.lines import Line, parse_protocol

# Defaults of the water marks: events, and characters of log text (a line may
# be up to 64 KiB, so 20,000 buffered events could otherwise weigh a gigabyte).
HIGH_WATER = 20_000
LOW_WATER = 5_000
HIGH_WATER_CHARS = 8 * 1024 * 1024
LOW_WATER_CHARS = 2 * 1024 * 1024


class EventKind(StrEnum):
    """What an event of a run is (its values are stored in the database)."""

    LOG = "log"
    PROGRESS = "progress"
    STATUS = "status"
    MESSAGE = "message"


class Event(NamedTuple):
    kind: EventKind
    stream: str  # "stdout" or "stderr" for log lines, "" otherwise
    text: str
    data: Any  # JSON, or None
    ts: datetime


class Taken(NamedTuple):
    """What the writer takes from a buffer in one go."""

    events: list[Event]
    progress: dict | None
    has_result: bool
    result: Any

    def is_empty(self) -> bool:
        return not self.events and self.progress is None and not self.has_result


class OutputBuffer:
    def __init__(
        self,
        *,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
        high_water_chars: int = HIGH_WATER_CHARS,
        low_water_chars: int = LOW_WATER_CHARS,
    ):
        self.high_water, self.low_water = high_water, low_water
        self.high_water_chars, self.low_water_chars = high_water_chars, low_water_chars
        self.events: list[Event] = []
        self.chars = 0  # log text held in `events`
        self.progress: dict | None = None
        self.has_result = False
        self.result: Any = None
        self.published: list[str] = []  # paths of `::artifact` lines, for the worker

    def add_lines(self, stream: str, lines: list[Line], now: datetime) -> None:
        """The child's new lines: protocol lines on stdout become their events."""
        events = self.events
        chars = 0
        for line in lines:
            chars += len(line.text)
            parsed = None
            if stream == "stdout" and not line.continued and line.text.startswith("::"):
                parsed = parse_protocol(line.text)
            if parsed is None:
                data = {"continued": True} if line.continued else None
                events.append(Event(EventKind.LOG, stream, line.text, data, now))
            elif parsed.kind == "progress":
                events.append(Event(EventKind.PROGRESS, "", "", parsed.data, now))
                self.progress = parsed.data
            elif parsed.kind == "result":
                self.result, self.has_result = parsed.data, True
            elif parsed.kind == "artifact":
                self.published.append(parsed.data)
            else:
                events.append(Event(EventKind.MESSAGE, "", "", parsed.data, now))
        self.chars += chars

    def add_note(self, text: str, now: datetime) -> None:
        """A line of the supervisor's own in the run's log (stderr, marked)."""
        self.events.append(Event(EventKind.LOG, "stderr", f"[taskrunner] {text}", None, now))
        self.chars += len(text) + 13

    def add_message(self, name: str, data: Any, now: datetime) -> None:
        """A `message` event of the supervisor's own (e.g. `artifact`: a file was kept)."""
        self.events.append(Event(EventKind.MESSAGE, "", "", {"name": name, "data": data}, now))

    def take_published(self) -> list[str]:
        published, self.published = self.published, []
        return published

    def is_empty(self) -> bool:
        return not self.events and self.progress is None and not self.has_result

    def above_high_water(self) -> bool:
        return len(self.events) > self.high_water or self.chars > self.high_water_chars

    def below_low_water(self) -> bool:
        return len(self.events) < self.low_water and self.chars < self.low_water_chars

    def take(self) -> Taken:
        """Everything waiting, leaving the buffer empty."""
        taken = Taken(self.events, self.progress, self.has_result, self.result)
        self.events, self.chars = [], 0
        self.progress, self.has_result, self.result = None, False, None
        return taken

    def put_back(self, taken: Taken) -> None:
        """A batch that could not be stored goes back in front, in its order."""
        self.events[:0] = taken.events
        self.chars += sum(len(event.text) for event in taken.events)
        if self.progress is None:
            self.progress = taken.progress
        if taken.has_result and not self.has_result:
            self.result, self.has_result = taken.result, True
