"""Markdown tables printed by the commands."""

from __future__ import annotations

import json

__all__ = ["print_table"]


def print_table(rows: list[dict[str, object]]) -> str:
    """A markdown table of ``rows`` (all rows share the first row's keys); returned and printed."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
