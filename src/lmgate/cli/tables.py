"""Tables for the command line that stay readable at any width and through a pipe.

Rich cuts a cell it cannot fit ("key_…"), which makes ids useless to copy. Here the columns
people copy from (ids, model keys) are never narrower than their longest value, other cells
wrap, and a table that still does not fit the terminal is printed as one block per row
(`column  value` lines) instead of being squeezed into slivers. Piped output has no terminal
width to fit, so it is not squeezed to 80 columns (unless COLUMNS says so). Values are written
as text or JSON, never Python reprs.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def text(value: Any) -> str:
    """A cell: `-` for nothing, JSON for lists and dicts, else the value as text."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value).decode()
    return str(value)


def pairs(config: dict[str, Any]) -> str:
    """`k=v, ...` in key order, nested values as JSON."""
    return ", ".join(f"{k}={text(v)}" for k, v in sorted(config.items())) or "-"


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    keep: Collection[str] = (),
    console: Console | None = None,
) -> None:
    """Print `rows`; the columns named in `keep` are never wrapped or cut."""
    table = Table(title=title)
    for index, name in enumerate(columns):
        if name in keep:
            longest = max([len(name), *(len(line) for r in rows for line in r[index].split("\n"))])
            table.add_column(name, no_wrap=True, min_width=longest)
        else:
            table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = console or _console()
    natural = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    console.print(title, markup=False, highlight=False, soft_wrap=True)
    width = max(len(name) for name in columns)
    for row in rows:
        console.print()
        for name, cell in zip(columns, row, strict=True):
            lines = cell.split("\n")
            pad = "\n" + " " * (width + 4)
            line = f"  {name.ljust(width)}  {pad.join(lines)}"
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def _console() -> Console:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        return Console(width=4096)
    return console
