"""Helpers for a task's own program: report progress, a result, or messages.

They print the protocol lines of the contract on standard output, flushed at
once; any language can print the same lines itself:

    ::progress 42/100 optional message
    ::progress 0.42 optional message
    ::result {"path": "/tmp/export.xml"}
    ::message NAME {"any": "json"}
    ::artifact RELATIVE/PATH

This module imports nothing from Django, so a child stays light.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO


def _emit(line: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    out.write(line + "\n")
    out.flush()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def progress(
    current: float, total: float | None = None, message: str = "", *, stream: TextIO | None = None
) -> None:
    """Report progress as `current` of `total`, or as a fraction when `total` is None."""
    amount = f"{current:g}/{total:g}" if total is not None else f"{current:g}"
    _emit(f"::progress {amount} {_one_line(message)}".rstrip(), stream)


def result(value: Any, *, stream: TextIO | None = None) -> None:
    """Report the run's result: any JSON value, shown in the dashboard and the API."""
    _emit("::result " + json.dumps(value, separators=(",", ":")), stream)


def message(name: str, data: Any = None, *, stream: TextIO | None = None) -> None:
    """Send a structured event `name` with JSON `data`, relayed as a `message` event."""
    if not name or any(c.isspace() for c in name):
        raise ValueError("a message name is one word")
    _emit(f"::message {name} " + json.dumps(data, separators=(",", ":")), stream)


def artifact(path: str, *, stream: TextIO | None = None) -> None:
    """Publish a complete file of the run's artifacts directory now (`path` relative to it).

    Every file left there is kept at the end of the run anyway; publishing
    makes it downloadable while the run goes on.
    """
    if not path or "\n" in path or "\r" in path:
        raise ValueError("an artifact's path is one non-empty line")
    _emit(f"::artifact {path}", stream)


def artifacts_dir() -> Path | None:
    """The run's own directory for files to keep (TASKRUNNER_ARTIFACTS_DIR), or None."""
    value = os.environ.get("TASKRUNNER_ARTIFACTS_DIR")
    return Path(value) if value else None


def params() -> dict[str, Any]:
    """The run's parameters (defaults filled in), from TASKRUNNER_PARAMS."""
    return json.loads(os.environ.get("TASKRUNNER_PARAMS", "{}"))


def run_id() -> int | None:
    """This run's id, from TASKRUNNER_RUN_ID, or None outside the task runner."""
    value = os.environ.get("TASKRUNNER_RUN_ID")
    return int(value) if value else None
