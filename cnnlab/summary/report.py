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
    table = _layer_table(summary.rows(depth, headers=True), depth, ("Output", "Params", "MACs", "RF", "Jump", "Start"),
                         lambda row: [_shape(row.output_shape), f"{row.params:,}", f"{row.macs:,}", *_field_cells(row)],
                         NARROW_DROP_ORDER, f"{summary.model} · input {_shape(summary.input_size)}")
    parts = [table, Text(""), Text(_totals_text(summary))]
    parts += [Text(f"warning: {warning}", style="yellow") for warning in summary.warnings]
    if explain:
        parts += [Text(""), Text("Arithmetic", style="bold")]
        for row in summary.layers:
            if row.explain.lines() and not row.is_container:
                parts.append(Text(f"{row.name} ({row.type})", style="bold"))
                parts.append(_arithmetic_grid(row.explain.lines()))
    return Group(*parts)


def _layer_table(layer_rows, depth: int | None, headings: tuple[str, ...], cells, drop_order, title: str):
    """Rows of layers as a table that fits the screen (cnnlab.render.FittedTable): each layer's
    name indented by its depth and its type, then ``cells(row)`` under ``headings`` (aligned
    right); a container whose layers are listed below it is dim."""
    from cnnlab.render import FittedTable

    columns = [dict(header="Layer", justify="left"), dict(header="Type", justify="left")]
    columns += [dict(header=heading, justify="right") for heading in headings]
    rows, styles = [], []
    for row in layer_rows:
        rows.append([Text("  " * (row.depth - 1) + row.name), row.type, *cells(row)])
        styles.append("dim" if row.is_container and (depth is None or row.depth < depth) else None)
    return FittedTable(columns, rows, drop_order=drop_order, row_styles=styles, title=title, title_justify="left",
                       show_edge=False, pad_edge=False)


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


# ---------------------------------------------------------------------------- training cost

COST_CSV_COLUMNS = ("name", "type", "depth", "forward_flops", "backward_flops", "train_flops", "activations")
MEMORY_KEYS = ("weights", "gradients", "optimizer_state", "activations", "transient", "peak")


def cost_to_csv(cost, depth: int | None = None) -> str:
    """One row per layer (FLOPs of one image; activations at the batch size), then a row of
    totals for one image and one for the batch, which also holds the memory figures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    memory_columns = [key for key in MEMORY_KEYS if key != "activations"]
    writer.writerow([*COST_CSV_COLUMNS, "batch_size", *memory_columns])
    for row in cost.rows(depth):
        writer.writerow([row.name, row.type, row.depth, row.forward_flops, row.backward_flops,
                         row.forward_flops + row.backward_flops, row.saved_bytes, "", *[""] * len(memory_columns)])
    one, batch, memory = cost.per_image, cost.per_batch, asdict(cost.memory)
    writer.writerow(["total per image", "", 0, one.forward_flops, one.backward_flops, one.train_flops,
                     cost.saved_per_image, 1, *[""] * len(memory_columns)])
    writer.writerow(["total per batch", "", 0, batch.forward_flops, batch.backward_flops, batch.train_flops,
                     cost.memory.activations, cost.batch_size, *(memory[key] for key in memory_columns)])
    return buffer.getvalue()


def cost_to_json(cost, depth: int | None = None) -> str:
    document = {
        "model": cost.model,
        "input_size": list(cost.input_size),
        "batch_size": cost.batch_size,
        "optimizer": cost.optimizer,
        "momentum": cost.momentum,
        "amp": cost.amp,
        "convention": cost.convention,
        "per_image": asdict(cost.per_image),
        "per_batch": asdict(cost.per_batch),
        "memory": asdict(cost.memory),
        "warnings": cost.warnings,
        "layers": [asdict(row) for row in cost.rows(depth)],
    }
    return json.dumps(document, indent=2)


def render_cost_table(cost, depth: int | None = None):
    """The training cost: FLOPs of one image and bytes kept for backward at the batch size, per
    layer; the totals; the memory of one step; the convention."""
    title = (f"{cost.model} · {_shape(cost.input_size)} · batch {cost.batch_size} · {_optimizer_text(cost)} · "
             f"amp {cost.amp}")
    table = _layer_table(cost.rows(depth, headers=True), depth, ("Fwd FLOPs", "Bwd FLOPs", "Kept for bwd"),
                         lambda row: [flop_text(row.forward_flops), flop_text(row.backward_flops),
                                      byte_text(row.saved_bytes)], ("Type",), title)
    m, one, batch = cost.memory, cost.per_image, cost.per_batch
    lines = [
        f"FLOPs per image: fwd {flop_text(one.forward_flops)} + bwd {flop_text(one.backward_flops)} "
        f"= train {flop_text(one.train_flops)}; batch {cost.batch_size}: {flop_text(batch.train_flops)}",
        f"Memory at batch {cost.batch_size}: peak {byte_text(m.peak)} = weights {byte_text(m.weights)} "
        f"+ gradients {byte_text(m.gradients)}",
        f"  + optimizer state {byte_text(m.optimizer_state)} + activations {byte_text(m.activations)} "
        f"+ transient {byte_text(m.transient)}",
        cost.convention,
    ]
    parts = [table, Text(""), *(Text(line) for line in lines)]
    parts += [Text(f"warning: {warning}", style="yellow") for warning in cost.warnings]
    return Group(*parts)


def _optimizer_text(cost) -> str:
    if cost.optimizer == "sgd" and cost.momentum > 0:
        return f"sgd, momentum {cost.momentum:g}"
    return cost.optimizer


def flop_text(count: int) -> str:
    """1.81e9 -> '1.81 G'; 0 -> '0'."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:,}"


def byte_text(count: int) -> str:
    """Binary units: 1.50 GiB, 12.3 MiB, 640 KiB, 96 B."""
    for scale, unit in ((2 ** 40, "TiB"), (2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} B"


def render_fit(found) -> str:
    """The batch ``--fit`` found (a cnnlab.summary.fit.Fit), its margin and any measured step."""
    cost = found.cost
    limit = "the most asked for" if found.limited_by == "the limit" else "memory"
    lines = [f"{cost.model} at {_shape(cost.input_size)}, {_optimizer_text(cost)}, amp {cost.amp} on "
             f"{found.device}: batch {found.batch_size:,} fits ({limit})",
             f"  estimated peak {byte_text(cost.memory.peak)} of {byte_text(found.free)} free, "
             f"margin {byte_text(found.margin)}"]
    if found.measured_peak is not None:
        failed = f" (failed at {', '.join(map(str, found.failed_batches))})" if found.failed_batches else ""
        lines += [f"  one real step at batch {found.measured_batch:,}{failed}: measured peak "
                  f"{byte_text(found.measured_peak)},",
                  f"  estimate {byte_text(found.estimated_peak)} "
                  f"(measured / estimate {found.measured_peak / found.estimated_peak:.2f})"]
    return "\n".join(lines)
