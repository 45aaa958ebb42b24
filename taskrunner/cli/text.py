"""Plain-text rendering for the command line: tables, times, durations, summaries."""

import json
from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from taskrunner.models import Run, Task

# Control characters a child may print (ESC starts terminal escape sequences
# that can retitle the window, move the cursor, rewrite what was printed or,
# on some terminals, answer with text typed back), shown as `\xNN` instead.
# Tab and newline stay as they are.
_CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]
TERMINAL_ESCAPES = {code: f"\\x{code:02x}" for code in _CONTROLS}


def terminal_safe(text: str) -> str:
    """`text` with every control character but tab and newline made visible."""
    return text.translate(TERMINAL_ESCAPES)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def when(value) -> str:
    """A time in the site's time zone, to the second; empty when unknown."""
    if value is None:
        return ""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def param_summary(declared: list[dict[str, Any]]) -> str:
    """`rows:int=1000 region=eu|us` (a parameter without `=` is required)."""
    parts = []
    for spec in declared:
        text = spec["name"] if spec["type"] == "str" else f"{spec['name']}:{spec['type']}"
        if spec["choices"]:
            text += "{" + "|".join(str(c) for c in spec["choices"]) + "}"
        if spec["default"] is not None:
            text += "=" + _value(spec["default"])
        parts.append(text)
    return " ".join(parts)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def progress(run: Run) -> str:
    if not run.progress:
        return ""
    fraction = run.progress.get("fraction")
    text = f"{fraction:.0%}" if isinstance(fraction, int | float) else ""
    message = run.progress.get("message") or ""
    return f"{text} {message}".strip()


def tasks_table(tasks: Sequence[Task], active: dict[int, int], last: dict[int, Run]) -> str:
    rows = []
    for task in tasks:
        last_run = last.get(task.pk)
        rows.append(
            [
                task.name,
                "enabled" if task.enabled else "disabled",
                active.get(task.pk, 0),
                f"{last_run.pk} {last_run.status}" if last_run else "",
                param_summary(task.params),
                task.title,
            ]
        )
    return table(["NAME", "STATE", "ACTIVE", "LAST RUN", "PARAMS", "TITLE"], rows)


def runs_table(runs: Sequence[Run]) -> str:
    rows = [
        [
            run.pk,
            run.task.name,
            run.status,
            when(run.created_at),
            duration(run.duration),
            "" if run.exit_code is None else run.exit_code,
            run.requested_by.get_username() if run.requested_by else "",
            progress(run),
        ]
        for run in runs
    ]
    return table(["ID", "TASK", "STATUS", "CREATED", "DURATION", "EXIT", "BY", "PROGRESS"], rows)


def run_details(run: Run) -> str:
    """One `field: value` line per known fact, then the audit trail."""
    fields = [
        ("run", run.pk),
        ("task", run.task.name),
        ("status", run.status),
        ("params", json.dumps(run.params)),
        ("progress", progress(run)),
        ("result", json.dumps(run.result) if run.result is not None else ""),
        ("error", run.error),
        ("exit code", run.exit_code),
        ("requested by", run.requested_by.get_username() if run.requested_by else ""),
        ("created", when(run.created_at)),
        ("started", when(run.started_at)),
        ("finished", when(run.finished_at)),
        ("duration", duration(run.duration)),
        ("pid", run.pid),
        ("host", run.hostname),
        ("events", run.last_seq),
        ("attempt", f"{run.attempt} of {run.task.retries + 1}"),
        ("not before", when(run.run_after) if run.run_after else ""),
        ("retry of", run.retry_of_id),
        ("retried by", run.retried_by_id),
        ("schedule", run.schedule_id),
        ("scheduled for", when(run.scheduled_for) if run.scheduled_for else ""),
        ("pruned lines", run.log_pruned_lines or ""),
    ]
    lines = [f"{name}: {value}" for name, value in fields if value not in (None, "")]
    lines.append("actions:")
    for act in run.actions.all():
        lines.append(f"  {when(act.at)}  {act.action:<6}  by {act.by or '-'} via {act.via}")
    return "\n".join(lines)


def ending(run: Run) -> str:
    """How a followed run ended, for one line on stderr."""
    text = f"run {run.pk} {run.status}"
    if run.exit_code is not None:
        text += f" (exit code {run.exit_code})"
    if run.error:
        text += f": {' '.join(run.error.split())}"
    return text
