"""One way for every command to put its result on the screen or into a file.

- ``--format`` names table, csv, json or markdown; without it the extension of ``--out`` decides
  (.csv, .json, .md; anything else a table), and without ``--out`` a table.
- A table goes to the screen as a rich table, as wide as the terminal; in a pipe, a log or a
  file it is plain text ``PIPE_WIDTH`` columns wide, so nothing folds.
- Measuring is done elsewhere: these functions only turn finished results into text.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

FORMATS = ("table", "csv", "json", "markdown")
FORMAT_BY_SUFFIX = {".csv": "csv", ".json": "json", ".md": "markdown", ".markdown": "markdown"}
PIPE_WIDTH = 200


def output_format(requested: str | None, out=None, allowed: tuple[str, ...] = FORMATS) -> str:
    """The format asked for; else the one ``out``'s extension names; else a table."""
    from cnnlab.errors import UsageError

    fmt = requested or (FORMAT_BY_SUFFIX.get(Path(out).suffix.lower(), "table") if out else "table")
    if fmt not in allowed:
        raise UsageError(f"this command writes {', '.join(allowed)}, not {fmt}"
                         + (f" (from the extension of {out})" if requested is None else ""))
    return fmt


def console(file=None):
    """The console every command prints with: the terminal's width, or PIPE_WIDTH elsewhere."""
    from rich.console import Console

    if file is not None:
        return Console(file=file, width=PIPE_WIDTH, color_system=None, highlight=False)
    screen = Console(highlight=False)
    return screen if screen.is_terminal else Console(width=PIPE_WIDTH, highlight=False)


def show(content, out: Path | None = None) -> None:
    """Print ``content`` (text, or a rich renderable) or write it to ``out`` as text."""
    if out is None:
        if isinstance(content, str):
            sys.stdout.write(content if content.endswith("\n") else content + "\n")
        else:
            console().print(content)
        return
    if not isinstance(content, str):
        buffer = io.StringIO()
        console(buffer).print(content)
        content = buffer.getvalue()
    Path(out).write_text(content, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)


def rows_as(rows: list[dict], fmt: str, *, title: str | None = None, right: tuple[str, ...] = ()):
    """Plain records (one dict per row, the same keys) as csv, json, markdown or a rich table;
    ``right``: the columns aligned right (numbers), shown with thousands separators."""
    columns = list(rows[0]) if rows else []
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    cells = [[f"{row[c]:,}" if c in right and isinstance(row[c], int) else str(row[c]) for c in columns]
             for row in rows]
    if fmt == "markdown":
        align = ["---:" if c in right else "---" for c in columns]
        return "".join("| " + " | ".join(line) + " |\n" for line in [columns, align, *cells])
    from rich.table import Column, Table

    table = Table(*[Column(c, justify="right" if c in right else "left") for c in columns], title=title)
    for line in cells:
        table.add_row(*line)
    return table
