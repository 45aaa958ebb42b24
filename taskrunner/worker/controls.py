"""Pause, resume, abort and input, as recorded by the web, the API or the command line.

The web process records a `RunAction` and wakes the worker (NOTIFY on
PostgreSQL, a commit seen through `data_version` on SQLite); the worker that
owns the run applies it to the run's tree and records what it did. The
signal is sent before anything else is recorded: the action's outcome and
the run's new status follow it.
"""

import logging
from collections.abc import Mapping
from enum import StrEnum

from taskrunner.models import ActionKind, RunAction, Worker
from taskrunner.process.execution import StopReason
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


async def apply_pending(
    db: WorkerDatabase, worker: Worker, handles: Mapping[int, RunHandle]
) -> None:
    """Apply every control request not yet applied to a run of this worker, oldest first."""
    for action in await db.call(database.pending_actions, worker):
        handle = handles.get(action.run_id)
        if handle is None:
            await db.call(action.mark_applied, Applied.NOT_HERE)
            continue
        outcome = await apply(handle, action)
        logger.info(
            "control applied run_id=%s action=%s outcome=%s", handle.run_id, action.action, outcome
        )
        await db.call(database.record_applied, handle.run, action, outcome)


async def apply(handle: RunHandle, action: RunAction) -> Applied:
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
