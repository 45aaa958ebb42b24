"""Filters for the back-office pages: times, sizes, progress, JSON."""

import json
from datetime import datetime
from typing import Any

from django import template

from taskrunner import serializers
from taskrunner.views import format_seconds

register = template.Library()


@register.filter
def iso(value) -> str:
    """A datetime as the API writes it (for data-* attributes read by the JS)."""
    if not isinstance(value, datetime):
        return ""
    return serializers.iso(value) or ""


@register.filter
def seconds(value) -> str:
    return format_seconds(value) if _number(value) else "–"


@register.filter
def fraction(progress: Any) -> str:
    """The `value` of a <progress> element, or "" when the amount is unknown."""
    if not isinstance(progress, dict):
        return ""
    value = progress.get("fraction")
    if value is None:
        current, total = progress.get("current"), progress.get("total")
        if isinstance(current, int | float) and isinstance(total, int | float) and total > 0:
            value = current / total
    if not isinstance(value, int | float):
        return ""
    return f"{min(1.0, max(0.0, float(value))):.4f}"


@register.filter
def progress_text(progress: Any) -> str:
    """`42 / 100 · message` or `42% · message`, as the JS writes it."""
    if not isinstance(progress, dict):
        return ""
    parts = []
    current, total = progress.get("current"), progress.get("total")
    if current is not None and total is not None:
        parts.append(f"{current:g} / {total:g}" if _number(current, total) else "")
    elif isinstance(progress.get("fraction"), int | float):
        parts.append(f"{progress['fraction'] * 100:.0f}%")
    if progress.get("message"):
        parts.append(str(progress["message"]))
    return " · ".join(p for p in parts if p)


def _number(*values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


@register.filter
def cpu(value) -> str:
    if not _number(value):
        return "–"
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


@register.filter
def memory(value) -> str:
    if not _number(value):
        return "–"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


@register.filter
def pretty_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@register.filter
def inline_json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


@register.filter
def status_label(value) -> str:
    """`timed_out` reads `timed out`; no status reads `never run`."""
    return str(value).replace("_", " ") if value else "never run"
