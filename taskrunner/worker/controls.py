"""Pause, resume, abort and input, as recorded by the web, the API or the command line.

The web process records a `RunAction` and wakes the worker (NOTIFY on
PostgreSQL, a datagram on SQLite, `data_version` as the fallback); the
worker that owns the run applies it to the run's tree and records what it
did. The signal is sent before anything else is recorded: the action's
outcome and the run's new status follow it.

The wake-up's payload (`control:<run>:<action>:<kind>:<via>:<by>`) says all
a pause, resume or abort needs, so the worker signals first and reads the
database after (`apply_notified`); anything a payload does not carry (input,
a lost wake-up) is found by `apply_pending`, oldest first. Each action is
applied once: the ids applied lately are remembered (`Applied.recent`).
"""

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from taskrunner.models import ActionKind, RunAction, Worker
from taskrunner.process.execution import StopReason
from taskrunner.wakeup import ANYTHING
from taskrunner.worker import database
from taskrunner.worker.database import WorkerDatabase
from taskrunner.worker.handle import RunHandle

logger = logging.getLogger(__name__)


class Applied(StrEnum):
    """What the worker did with a control request (kept on the action, shown in the admin)."""

    PAUSED = "paused"
    RESUMED = "resumed"
    ABORTING = "aborting"
    WRITTEN = "written"
    NOT_RUNNING = "ignored: not running"
    NOT_PAUSED = "ignored: not paused"
    ALREADY_ENDING = "ignored: already ending"
    STDIN_CLOSED = "ignored: stdin closed"
    NOT_HERE = "ignored: the run is not running here"
    UNKNOWN = "ignored: unknown action"


@dataclass(frozen=True, order=True)
class NotifiedAction:
    """A control request as its wake-up payload describes it (enough to signal)."""

    id: int
    run_id: int
    action: str
    via: str
    by: str
    data: str = ""

    @classmethod
    def parse(cls, payload: str) -> "NotifiedAction | None":
        parts = payload.split(":", 5)
        if len(parts) != 6 or parts[0] != "control":
            return None
        _, run_id, action_id, action, via, by = parts
        if not (run_id.isdigit() and action_id.isdigit()) or action not in FAST_KINDS:
            return None
        return cls(int(action_id), int(run_id), action, via, by)


FAST_KINDS = {ActionKind.PAUSE, ActionKind.RESUME, ActionKind.ABORT}


class RecentlyApplied:
    """Ids of the actions this worker applied lately: a wake-up and a query may both bring one."""

    def __init__(self, size: int = 4096):
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self.size = size

    def __contains__(self, action_id: object) -> bool:
        return action_id in self._ids

    def add(self, action_id: int) -> None:
        if action_id in self._ids:
            return
        self._ids.add(action_id)
        self._order.append(action_id)
        if len(self._order) > self.size:
            self._ids.discard(self._order.popleft())


async def on_wakeup(
    db: WorkerDatabase,
    worker: Worker,
    handles: Mapping[int, RunHandle],
    payloads: set[str],
    done: RecentlyApplied,
) -> None:
    """Act on a wake-up: described controls at once, then the database if it may hide one.

    The pending requests are read only after a timeout (empty `payloads`),
    "something changed" (`*`), or a control its payload does not describe
    (input); a new run's or another run's events need no read.
    """
    controls_seen = {p for p in payloads if p.startswith("control:")}
    if controls_seen:
        await apply_notified(db, handles, controls_seen, done)
    undescribed = not all(map(NotifiedAction.parse, controls_seen))
    if not payloads or ANYTHING in payloads or undescribed:
        await apply_pending(db, worker, handles, done)


async def apply_notified(
    db: WorkerDatabase,
    handles: Mapping[int, RunHandle],
    payloads: Iterable[str],
    done: RecentlyApplied,
) -> None:
    """Signal at once for the pause/resume/abort requests the payloads describe, oldest first."""
    notified = sorted(filter(None, map(NotifiedAction.parse, payloads)))
    for note in notified:
        handle = handles.get(note.run_id)
        if handle is None or note.id in done:
            continue  # another worker's run, or applied already
        done.add(note.id)
        outcome = await apply(handle, note)
        logger.info(
            "control applied run_id=%s action=%s outcome=%s", note.run_id, note.action, outcome
        )
        await db.call(database.record_applied_id, handle.run, note.id, outcome)


async def apply_pending(
    db: WorkerDatabase,
    worker: Worker,
    handles: Mapping[int, RunHandle],
    done: RecentlyApplied | None = None,
) -> None:
    """Apply every control request not yet applied to a run of this worker, oldest first."""
    done = done if done is not None else RecentlyApplied()
    for action in await db.call(database.pending_actions, worker):
        if action.pk in done:
            continue  # signalled from its wake-up; its record is on the way
        done.add(action.pk)
        handle = handles.get(action.run_id)
        if handle is None:
            await db.call(action.mark_applied, Applied.NOT_HERE)
            continue
        outcome = await apply(handle, action)
        logger.info(
            "control applied run_id=%s action=%s outcome=%s", handle.run_id, action.action, outcome
        )
        await db.call(database.record_applied, handle.run, action, outcome)


async def apply(handle: RunHandle, action: RunAction | NotifiedAction) -> Applied:
    execution = handle.execution
    kind = action.action
    if kind == ActionKind.PAUSE:
        return Applied.PAUSED if await handle.act(execution.pause) else Applied.NOT_RUNNING
    if kind == ActionKind.RESUME:
        return Applied.RESUMED if await handle.act(execution.resume) else Applied.NOT_PAUSED
    if kind == ActionKind.ABORT:
        by = f" by {action.by}" if action.by else ""
        detail = f"Aborted{by} via {action.via}."
        stopping = await handle.act(execution.stop, StopReason.ABORT, detail)
        return Applied.ABORTING if stopping else Applied.ALREADY_ENDING
    if kind == ActionKind.INPUT:
        return Applied.WRITTEN if handle.proc.write_line(action.data) else Applied.STDIN_CLOSED
    return Applied.UNKNOWN
