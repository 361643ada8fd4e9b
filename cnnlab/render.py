"""One way for every command to put its result on the screen or into a file.

- ``--format`` names table, csv, json or markdown; without it the extension of ``--out`` decides
  (.csv, .json, .md; anything else a table), and without ``--out`` a table.
- A table goes to the screen as a rich table, as wide as the terminal; in a pipe, a log or a
  file it is plain text ``PIPE_WIDTH`` columns wide, so nothing folds.
- A table too wide for the terminal leaves out its least important columns (``FittedTable``)
  and says which under it, rather than folding names or cutting numbers; ``--wide`` prints
  every column as a pipe would.
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
PROSE_WIDTH = 24  # the least a column of sentences is given before other columns are left out


def output_format(requested: str | None, out=None, allowed: tuple[str, ...] = FORMATS) -> str:
    """The format asked for; else the one ``out``'s extension names; else a table."""
    from cnnlab.errors import UsageError

    fmt = requested or (FORMAT_BY_SUFFIX.get(Path(out).suffix.lower(), "table") if out else "table")
    if fmt not in allowed:
        raise UsageError(f"this command writes {', '.join(allowed)}, not {fmt}"
                         + (f" (from the extension of {out})" if requested is None else ""))
    return fmt


def console(file=None, wide: bool = False):
    """The console every command prints with: the terminal's width, or PIPE_WIDTH elsewhere
    (and with ``wide``, where the terminal folds the lines it cannot hold)."""
    from rich.console import Console

    if file is not None:
        return Console(file=file, width=PIPE_WIDTH, color_system=None, highlight=False)
    screen = Console(highlight=False)
    return screen if screen.is_terminal and not wide else Console(width=PIPE_WIDTH, highlight=False)


def show(content, out: Path | None = None, wide: bool = False) -> None:
    """Print ``content`` (text, or a rich renderable) or write it to ``out`` as text."""
    if out is None:
        if isinstance(content, str):
            sys.stdout.write(content if content.endswith("\n") else content + "\n")
        else:
            console(wide=wide).print(content)
        return
    if not isinstance(content, str):
        buffer = io.StringIO()
        console(buffer).print(content)
        content = buffer.getvalue()
    Path(out).write_text(content, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)


def rows_as(rows: list[dict], fmt: str, *, title: str | None = None, right: tuple[str, ...] = (),
            drop_order: tuple[str, ...] = (), prose: tuple[str, ...] = ()):
    """Plain records (one dict per row, the same keys) as csv, json, markdown or a table that
    fits the screen (``FittedTable``, leaving out the columns ``drop_order`` names first);
    ``right``: the columns aligned right (numbers), shown with thousands separators; ``prose``:
    the columns of sentences, which wrap."""
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
    return FittedTable([dict(header=c, justify="right" if c in right else "left", no_wrap=c not in prose)
                        for c in columns], cells, drop_order=drop_order, title=title)


class FittedTable:
    """A rich table that fits the width it is printed at. While it is wider, it leaves out its
    columns in ``drop_order`` (headers, the least important first) and names them in a note
    under it; the columns it keeps show every cell whole, never folded or cut. ``columns`` are
    ``Table.add_column`` keyword arguments, ``rows`` lists of cells, ``table_options`` go to
    ``Table``; ``row_styles`` gives each row's style (or None). A column given ``no_wrap=False``
    holds prose: it wraps, and counts as PROSE_WIDTH wide when the table is measured."""

    def __init__(self, columns: list[dict], rows: list[list], *, drop_order=(), row_styles=None,
                 **table_options):
        self.columns, self.rows, self.table_options = columns, rows, table_options
        self.row_styles = row_styles or [None] * len(rows)
        headers = [column["header"] for column in columns]
        self.drop_order = [headers.index(header) for header in drop_order if header in headers]

    def table(self, kept: list[int], measuring: bool = False):
        from rich.table import Table

        table = Table(**self.table_options)
        for i in kept:
            column = {"no_wrap": True, **self.columns[i]}
            if measuring and not column["no_wrap"]:
                column["max_width"] = PROSE_WIDTH
            table.add_column(**column)
        for cells, style in zip(self.rows, self.row_styles):
            table.add_row(*(cells[i] for i in kept), style=style)
        return table

    def fitted(self, console, options) -> tuple[object, list[str]]:
        """The table at ``options.max_width`` and the headers of the columns it left out."""
        kept, dropped = list(range(len(self.columns))), []
        unbounded = options.update(max_width=1 << 16)  # a measure is clamped to the width it is given
        for column in self.drop_order:
            if console.measure(self.table(kept, measuring=True), options=unbounded).maximum <= options.max_width:
                break
            kept.remove(column)
            dropped.append(self.columns[column]["header"].replace("\n", " "))
        return self.table(kept), dropped

    def __rich_console__(self, console, options):
        from rich.text import Text

        table, dropped = self.fitted(console, options)
        yield table
        if dropped:
            yield Text(f"{', '.join(dropped)} left out at {options.max_width} columns; --wide shows every "
                       f"column", style="dim")

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement

        narrowest = self.table([i for i in range(len(self.columns)) if i not in self.drop_order])
        widest = self.table(list(range(len(self.columns))))
        return Measurement(console.measure(narrowest, options=options).minimum,
                           console.measure(widest, options=options).maximum)
