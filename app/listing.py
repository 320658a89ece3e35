"""The table of ``vectoros insights list``: every column fits an 80-column terminal; the ids are
never cut (they are what an operator copies), the insight title is shortened instead."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

MIN_TITLE = 8
COMFORTABLE_TITLE = 14
_SHORT = {"critical": "crit", "medium": "med", "resolved": "res"}


def heading(shown: int, total: int, status: str) -> str:
    """``showing 50 of 108 open insights``."""
    what = "insights" if status == "all" else f"{status} insights"
    if shown == total:
        return f"{total} {what}"
    return f"showing {shown} of {total} {what}"


def short_money(value: float | None, currency: str | None) -> str:
    """``8.3k GBP``, ``30k EUR``, ``1.2M USD``."""
    if value is None:
        return ""
    size = abs(value)
    if size >= 1e9:
        text = f"{value / 1e9:.1f}B"
    elif size >= 1e6:
        text = f"{value / 1e6:.1f}M"
    elif size >= 1e4:
        text = f"{value / 1e3:.0f}k"
    elif size >= 1e3:
        text = f"{value / 1e3:.1f}k"
    else:
        text = f"{value:.0f}"
    return f"{text} {currency}" if currency else text


def age(then: str, now: dt.datetime) -> str:
    """How long ago: ``45m``, ``5h``, ``12d`` (``now`` if in the future)."""
    seconds = (now - dt.datetime.fromisoformat(then)).total_seconds()
    if seconds < 60:
        return "now"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86_400:.0f}d"


def _layout(
    rows: list[dict[str, Any]], status: str, now: dt.datetime, *, compact: bool
) -> list[tuple[str, list[str]]]:
    short = _SHORT if compact else {}
    columns: list[tuple[str, list[str]]] = [
        (
            "prio" if compact else "priority",
            [short.get(r["priority"], r["priority"]) for r in rows],
        ),
        ("rule", [r["rule"] for r in rows]),
        ("workspace", [r["workspace_id"] for r in rows]),
        ("deal", [r["deal_id"] for r in rows]),
        (
            "value",
            [short_money(r["data"].get("deal_value"), r["data"].get("currency")) for r in rows],
        ),
    ]
    if status != "open":
        columns.append(
            ("st" if compact else "status", [short.get(r["status"], r["status"]) for r in rows])
        )
    columns.append(("age", [age(r["detected_at"], now) for r in rows]))
    return columns


def insights_table(
    rows: list[dict[str, Any]], total: int, status: str, now: dt.datetime, width: int
) -> Table:
    """Every column at its full width but the title, which gets what is left of ``width``
    (narrow terminals also abbreviate priority and status; ids are never cut)."""
    for compact in (False, True):
        columns = _layout(rows, status, now, compact=compact)
        widths = {name: max([len(name), *map(len, values)]) for name, values in columns}
        room = width - sum(widths.values()) - len(columns) - 1  # a 1-space pad after each
        if room >= COMFORTABLE_TITLE:
            break
    longest = max((len(r["title"]) for r in rows), default=0)
    title_width = max(MIN_TITLE, min(room, max(longest, len("title"))))
    needed = sum(widths.values()) + title_width + len(columns) + 1
    table = Table(
        title=heading(len(rows), total, status),
        box=None,
        padding=(0, 1, 0, 0),
        min_width=needed,  # ids too long for the terminal: a wider line, never a cut id
    )
    for name, _ in columns[:-1]:
        justify: Literal["left", "right"] = "right" if name == "value" else "left"
        table.add_column(name, width=widths[name], no_wrap=True, justify=justify)
    table.add_column("title", width=title_width, no_wrap=True, overflow="ellipsis")
    table.add_column("age", width=widths["age"], no_wrap=True, justify="right")
    for n, row in enumerate(rows):
        cells = [values[n] for _, values in columns]
        table.add_row(*cells[:-1], row["title"], cells[-1])
    return table


def print_table(console: Console, table: Table) -> None:
    """Print ``table``; ids longer than the terminal is wide make a wider table (which the
    terminal wraps), never a cut id."""
    if (table.min_width or 0) > console.width:
        console = Console(file=console.file, width=table.min_width)
    console.print(table)
