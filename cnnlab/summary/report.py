"""Render a ModelSummary as a table, CSV or JSON. Nothing is measured here.

``depth`` picks the nesting level shown (None: every layer); a container at that level stands
for the layers inside it, so in CSV and JSON each row is one layer and the columns add up to
the totals.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

CSV_COLUMNS = ("name", "type", "depth", "output_shape", "params", "trainable_params", "macs")


def to_csv(summary, depth: int | None = None, explain: bool = False) -> str:
    """One row per layer; receptive field columns per spatial axis (rf_size_h, rf_size_w, ...)."""
    axes = summary.spatial_axes
    field_columns = [f"rf_{what}_{axis}" for what in ("size", "jump", "start") for axis in axes]
    columns = [*CSV_COLUMNS, *field_columns, "rf_status", *(["explain"] if explain else [])]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in summary.rows(depth):
        values = [row.name, row.type, row.depth, "x".join(map(str, row.output_shape)), row.params,
                  row.trainable_params, row.macs]
        for numbers in (row.rf_size, row.rf_jump, row.rf_start):
            values += ["" if n is None else n for n in numbers]
        values.append(row.rf_status)
        if explain:
            values.append("\n".join(row.explain.lines()))
        writer.writerow(values)
    return buffer.getvalue()


def to_json(summary, depth: int | None = None) -> str:
    document = {
        "model": summary.model,
        "input_size": list(summary.input_size),
        "spatial_axes": list(summary.spatial_axes),
        "totals": asdict(summary.totals),
        "warnings": summary.warnings,
        "layers": [asdict(row) for row in summary.rows(depth)],
    }
    return json.dumps(document, indent=2)


# the columns a narrow terminal leaves out first: the receptive field's jump and start, then the type
NARROW_DROP_ORDER = ("Start", "Jump", "Type", "RF", "MACs", "Output")


def render_table(summary, depth: int | None = None, explain: bool = False):
    """A rich renderable: the layer table (at a narrow width without the columns in
    NARROW_DROP_ORDER, named under it), the totals, any warnings and, with ``explain``, the
    arithmetic of every layer that has some."""
    from cnnlab.render import FittedTable

    columns = [dict(header=header, justify=justify) for header, justify in (
        ("Layer", "left"), ("Type", "left"), ("Output", "right"), ("Params", "right"), ("MACs", "right"),
        ("RF", "right"), ("Jump", "right"), ("Start", "right"))]
    rows, styles = [], []
    for row in summary.rows(depth, headers=True):
        heading = row.is_container and (depth is None or row.depth < depth)
        size, jump, start = _field_cells(row)
        rows.append([Text("  " * (row.depth - 1) + row.name), row.type, _shape(row.output_shape),
                     f"{row.params:,}", f"{row.macs:,}", size, jump, start])
        styles.append("dim" if heading else None)
    table = FittedTable(columns, rows, drop_order=NARROW_DROP_ORDER, row_styles=styles,
                        title=f"{summary.model} · input {_shape(summary.input_size)}", title_justify="left",
                        show_edge=False, pad_edge=False)
    parts = [table, Text(""), Text(_totals_text(summary))]
    parts += [Text(f"warning: {warning}", style="yellow") for warning in summary.warnings]
    if explain:
        parts += [Text(""), Text("Arithmetic", style="bold")]
        for row in summary.layers:
            if row.explain.lines() and not row.is_container:
                parts.append(Text(f"{row.name} ({row.type})", style="bold"))
                parts.append(_arithmetic_grid(row.explain.lines()))
    return Group(*parts)


def _arithmetic_grid(lines: list[str]):
    """Labelled lines ("field: size ...") as a grid whose formulas wrap under themselves, not
    under the label, when the screen is narrow."""
    from rich.padding import Padding

    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for line in lines:
        label, _, formula = line.partition(": ")
        grid.add_row(f"{label}:", formula)
    return Padding(grid, (0, 0, 0, 2))


def to_text(summary, depth: int | None = None, explain: bool = False, width: int = 160) -> str:
    """The table as plain text (for a file)."""
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(render_table(summary, depth, explain))
    return console.export_text()


def _totals_text(summary) -> str:
    t = summary.totals
    return "\n".join([
        f"Params: {t.params:,} (trainable {t.trainable_params:,}, non-trainable {t.non_trainable_params:,})",
        f"MACs: {t.macs:,} ({_scaled(t.macs)}) for one image",
        f"Parameter memory: {_megabytes(t.param_bytes)} (+ buffers {_megabytes(t.buffer_bytes)})",
        f"Activation memory: {_megabytes(t.activation_bytes)} (every layer's output, one image)",
    ])


def _scaled(count: int) -> str:
    """15,470,264,320 -> '15.470 G'; 416,520 -> '0.417 M'."""
    return f"{count / 1e9:.3f} G" if count >= 1e8 else f"{count / 1e6:.3f} M"


def _field_cells(row) -> tuple[str, str, str]:
    if row.rf_status == "global":
        return "global", "", ""
    if row.rf_status in ("unavailable", "partly global", "constant"):
        shown = {"unavailable": "?", "constant": "none"}.get(row.rf_status, row.rf_status)
        return shown, "", ""
    marker = " !" if row.rf_status == "misaligned" else ""
    return (_per_axis(row.rf_size) + marker, _per_axis(row.rf_jump), _per_axis(row.rf_start))


def _per_axis(numbers) -> str:
    """One number when every axis agrees, else h×w."""
    shown = ["?" if n is None else f"{n:g}" for n in numbers]
    return shown[0] if len(set(shown)) == 1 else "×".join(shown)


def _shape(shape) -> str:
    return "×".join(str(n) for n in shape)


def _megabytes(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"
