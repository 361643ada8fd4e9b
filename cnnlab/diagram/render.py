"""Write a Diagram: a layered drawing on matplotlib (.svg, .pdf, .png), Graphviz (.dot),
Mermaid (.mmd) or the data itself (.json). Nothing here measures.

The drawing is laid out from the diagram's own nesting, not by a general graph-layout library:
a network is a sequence of layers with forks whose paths meet again, so each fork's paths stand
side by side between the fork and its join (an identity shortcut gets a lane of its own), and
the top-level sequence is cut into columns, never inside a fork, so the page stays near 4:3.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

from cnnlab.diagram.build import Branches, Diagram, shape_text
from cnnlab.errors import UsageError

DIAGRAM_FORMATS = {".svg": "svg", ".pdf": "pdf", ".png": "png", ".dot": "dot", ".gv": "dot",
                   ".mmd": "mmd", ".json": "json"}
KIND_COLOURS = {  # kind -> (fill colour, legend entry); the legend lists the kinds drawn
    "input": ("#ffffff", "input"),
    "conv": ("#9ecae1", "convolution"),
    "pool": ("#fdd49e", "pooling"),
    "norm": ("#dadaeb", "normalization"),
    "activation": ("#c7e9c0", "activation"),
    "linear": ("#fcbba1", "fully connected"),
    "dropout": ("#e0e0e0", "dropout"),
    "add": ("#f7b6d2", "add (residual)"),
    "concat": ("#c9a0dc", "concatenation"),
    "gate": ("#fee391", "multiply (gate)"),
    "reshape": ("#f0f0f0", "reshape"),
    "identity": ("#ffffff", "identity (no-op)"),
    "block": ("#a1d99b", "folded block"),
    "other": ("#ffffff", "other"),
}
ONE_LINE_KINDS = ("input", "activation", "dropout", "reshape", "identity")  # their label says it all

BOX_WIDTH = 2.3          # inches
LINE = 0.16              # inches per line of text in a box
PADDING = 0.06           # above and below a box's text
GAP = 0.34               # between boxes one above the other
BRANCH_GAP = 0.22        # between paths side by side
LANE = 0.35              # the width an identity path takes
COLUMN_GAP = 0.8
MARGIN = 0.3
PAGE_ASPECT = 4 / 3      # width / height aimed at when cutting columns
FONT = 7.5               # points; a box's first line
SMALL_FONT = 6.5
TITLE_FONT = 10


def diagram_format(out, requested: str | None = None) -> str:
    """The format of ``out`` (its extension), or ``requested``; UsageError for any other."""
    if requested is not None:
        if requested not in DIAGRAM_FORMATS.values():
            raise UsageError(f"draw writes {', '.join(sorted(set(DIAGRAM_FORMATS.values())))}, not {requested}")
        return requested
    fmt = DIAGRAM_FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the diagram format of {str(out)!r}: end the file name with "
                         f"{', '.join(DIAGRAM_FORMATS)}")
    return fmt


def save_diagram(diagram: Diagram, out, fmt: str | None = None, dpi: int = 150) -> Path:
    """Write ``diagram`` to ``out`` in ``fmt`` (default: from the extension)."""
    out = Path(out)
    fmt = diagram_format(out, fmt)
    text = {"dot": to_dot, "mmd": to_mermaid, "json": to_json}.get(fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    if text is not None:
        out.write_text(text(diagram), encoding="utf-8")
    else:
        from matplotlib import rc_context

        with rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, editable, small
            figure(diagram, dpi).savefig(out, format=fmt, dpi=dpi)
    return out


# ---------------------------------------------------------------------------- text of a box


def box_lines(box) -> list[str]:
    """What a box says, line by line: its label, a fold's contents, output shape and params."""
    if box.kind in ONE_LINE_KINDS:
        return [box.label]
    lines = [box.label]
    if box.contents:
        lines.append(_contents(box.contents))
    numbers = shape_text(box.output_shape)
    if box.params:
        numbers += f" · {_count(box.params)} params"
    return [*lines, numbers]


CONTENTS_CHARACTERS = 40  # what fits on a box's small line


def _contents(labels: list[str]) -> str:
    shown = " · ".join(label.replace("conv ", "").replace("pool ", "") for label in labels)
    return shown if len(shown) <= CONTENTS_CHARACTERS else shown[:CONTENTS_CHARACTERS - 2].rstrip(" ·") + " …"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1_000_000 else f"{n:,}"


def title_lines(diagram: Diagram) -> list[str]:
    field = "—"
    if diagram.receptive_field:
        sides = diagram.receptive_field
        field = f"{sides[0]}" if len(set(sides)) == 1 else "×".join(map(str, sides))
        field = f"{field} px (at {diagram.field_at})"
    return [diagram.model, f"input {shape_text(diagram.input_size)} · {diagram.params:,} params · "
            f"{diagram.macs / 1e9:.3g} G MACs · receptive field {field}"]


# ---------------------------------------------------------------------------- text formats


def to_json(diagram: Diagram) -> str:
    return json.dumps(diagram.to_dict(), indent=1, ensure_ascii=False) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(diagram: Diagram) -> str:
    """Graphviz: one node per box (filled by kind), edges labelled where the shape changes."""
    lines = [f'digraph "{_dot_text(diagram.model)}" {{',
             f'  label="{_dot_text(" — ".join(title_lines(diagram)))}"; labelloc=t;',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8];']
    for box in diagram.boxes:
        label = "\\n".join(_dot_text(line) for line in box_lines(box))
        lines.append(f'  {box.id} [label="{label}", fillcolor="{KIND_COLOURS[box.kind][0]}"];')
    for edge in diagram.edges:
        label = f' [label="{shape_text(edge.shape)}"]' if edge.changed else ""
        lines.append(f"  {edge.source} -> {edge.target}{label};")
    return "\n".join(lines) + "\n}\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(diagram: Diagram) -> str:
    """Mermaid (GitHub renders it in Markdown): one node line per box, one class per kind."""
    lines = ["---", f"title: {_mermaid_text(' — '.join(title_lines(diagram)))}", "---", "flowchart TD"]
    for box in diagram.boxes:
        lines.append(f'    {box.id}["{"<br/>".join(_mermaid_text(line) for line in box_lines(box))}"]')
    for edge in diagram.edges:
        label = f'|"{shape_text(edge.shape)}"|' if edge.changed else ""
        lines.append(f"    {edge.source} -->{label} {edge.target}")
    kinds = {}
    for box in diagram.boxes:
        kinds.setdefault(box.kind, []).append(box.id)
    for kind, ids in kinds.items():
        lines.append(f"    classDef {kind} fill:{KIND_COLOURS[kind][0]},stroke:#555")
        lines.append(f"    class {','.join(ids)} {kind}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- layout


@dataclass
class Placed:
    x: float      # centre
    y: float      # top
    height: float
    column: int


def box_height(box) -> float:
    return 2 * PADDING + LINE * len(box_lines(box))


class Layout:
    """Positions in inches, y downwards: every box, every identity lane, every column."""

    def __init__(self, diagram: Diagram):
        self.diagram = diagram
        self.boxes = {box.id: box for box in diagram.boxes}
        self.placed: dict[str, Placed] = {}
        self.lanes: dict[tuple[str, str], float] = {}  # (fork, join) of an identity path -> its x
        self.column_right: list[float] = []
        self.top = 0.0
        self._place_columns(self._ordered(diagram.sequence))

    def _ordered(self, items) -> list:
        """A residual block's main path first (left), its shortcut after."""
        ordered = []
        for item in items:
            if isinstance(item, Branches):
                paths = [self._ordered(path) for path in item.paths]
                if item.join in self.boxes and self.boxes[item.join].kind == "add":
                    paths.sort(key=lambda path: -self._size(path)[1])
                item = Branches(item.fork, item.join, paths)
            ordered.append(item)
        return ordered

    def _size(self, item) -> tuple[float, float]:
        if isinstance(item, list):
            if not item:
                return LANE, 0.0
            sizes = [self._size(i) for i in item]
            return max(w for w, _ in sizes), sum(h for _, h in sizes) + GAP * (len(item) - 1)
        if isinstance(item, Branches):
            sizes = [self._size(path) for path in item.paths]
            return sum(w for w, _ in sizes) + BRANCH_GAP * (len(sizes) - 1), max(h for _, h in sizes)
        return BOX_WIDTH, box_height(self.boxes[item])

    def _place(self, item, x: float, y: float, column: int) -> None:
        if isinstance(item, list):
            for part in item:
                self._place(part, x, y, column)
                y += self._size(part)[1] + GAP
        elif isinstance(item, Branches):
            left = x - self._size(item)[0] / 2
            for path in item.paths:
                width = self._size(path)[0]
                if not path:
                    self.lanes[(item.fork, item.join)] = left + width / 2
                self._place(path, left + width / 2, y, column)
                left += width + BRANCH_GAP
        else:
            self.placed[item] = Placed(x, y, box_height(self.boxes[item]), column)

    def _place_columns(self, sequence: list) -> None:
        columns = self._columns(sequence)
        left = MARGIN
        for index, column in enumerate(columns):
            width = self._size(column)[0]
            self._place(column, left + width / 2, self.top, index)
            left += width
            self.column_right.append(left)
            left += COLUMN_GAP
        self.width = left - COLUMN_GAP + MARGIN
        self.height = max(self._size(column)[1] for column in columns)

    def _columns(self, sequence: list) -> list[list]:
        """The sequence cut into the number of columns that brings the page nearest PAGE_ASPECT,
        the columns as even as the cuts allow; a cut falls only between two boxes, never at a
        fork's paths or its join."""
        cuttable = {i for i in range(1, len(sequence)) if not isinstance(sequence[i], Branches)
                    and not isinstance(sequence[i - 1], Branches)}
        heights = [self._size(item)[1] for item in sequence]
        widths = [self._size(item)[0] for item in sequence]
        best = None
        for count in range(1, 25):
            cuts = self._even_cuts(heights, cuttable, count)
            spans = list(zip([0, *cuts], [*cuts, len(sequence)]))
            width = sum(max(widths[a:b]) for a, b in spans) + COLUMN_GAP * (len(spans) - 1)
            height = max(sum(heights[a:b]) + GAP * (b - a - 1) for a, b in spans)
            score = abs(math.log(width / height / PAGE_ASPECT))
            if best is None or score < best[0]:
                best = (score, [sequence[a:b] for a, b in spans])
        return best[1]

    @staticmethod
    def _even_cuts(heights, cuttable, count) -> list[int]:
        """Where to cut so that at most ``count`` columns come out, each as short as can be:
        the lowest column height for which cutting greedily needs no more columns."""
        def greedy(limit):
            cuts, height = [], 0.0
            for i, item_height in enumerate(heights):
                if i in cuttable and height > 0 and height + item_height > limit:
                    cuts.append(i)
                    height = 0.0
                height += item_height + GAP
            return cuts

        low, high = max(heights), sum(heights) + GAP * len(heights)
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (low, middle) if len(greedy(middle)) < count else (middle, high)
        return greedy(high)

    def route(self, edge) -> list[tuple[float, float]]:
        """The polyline of an edge, from the bottom of its source to the top of its target."""
        source, target = self.placed[edge.source], self.placed[edge.target]
        sx, sy = source.x, source.y + source.height
        tx, ty = target.x, target.y
        half = GAP / 2
        if source.column != target.column:
            gutter = self.column_right[source.column] + COLUMN_GAP / 2
            above = self.top - half
            return [(sx, sy), (sx, sy + half), (gutter, sy + half), (gutter, above), (tx, above), (tx, ty)]
        lane = self.lanes.get((edge.source, edge.target))
        if lane is not None:
            return [(sx, sy), (sx, sy + half), (lane, sy + half), (lane, ty - half), (tx, ty - half), (tx, ty)]
        forks = sum(e.source == edge.source for e in self.diagram.edges) > 1
        bend = sy + half if forks else ty - half
        return [(sx, sy), (sx, bend), (tx, bend), (tx, ty)]


# ---------------------------------------------------------------------------- drawing


def figure(diagram: Diagram, dpi: int = 150):
    """The diagram on a matplotlib Figure (Agg canvas): title, legend, boxes and edges."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
    from matplotlib.path import Path as CurvePath

    layout = Layout(diagram)
    kinds = [kind for kind in KIND_COLOURS if any(box.kind == kind for box in diagram.boxes)]
    width = max(layout.width, 6.0)
    legend_per_row = max(1, int((width - 2 * MARGIN) // 1.45))
    legend_rows = math.ceil(len(kinds) / legend_per_row)
    wrap = max(40, int((width - 2 * MARGIN) / 0.075))
    title = [diagram.model, *textwrap.wrap(title_lines(diagram)[1], wrap)]
    header = MARGIN + 0.22 * len(title) + 0.24 * legend_rows + 0.35
    height = header + layout.height + MARGIN
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    shift = (width - layout.width) / 2  # a narrow diagram is centred under the title

    y = MARGIN
    for index, line in enumerate(title):
        ax.text(width / 2, y, line, ha="center", va="top", fontsize=TITLE_FONT + (2 if index == 0 else 0),
                weight="bold" if index == 0 else "normal")
        y += 0.22 + (0.05 if index == 0 else 0)
    y += 0.08
    for index, kind in enumerate(kinds):
        row, place = divmod(index, legend_per_row)
        in_row = min(legend_per_row, len(kinds) - row * legend_per_row)
        x = width / 2 - in_row * 1.45 / 2 + place * 1.45
        ax.add_patch(Rectangle((x, y + row * 0.24), 0.22, 0.15, facecolor=KIND_COLOURS[kind][0],
                               edgecolor="#555555", linewidth=0.6))
        ax.text(x + 0.28, y + row * 0.24 + 0.075, KIND_COLOURS[kind][1], va="center", fontsize=SMALL_FONT)

    def at(point):
        return point[0] + shift, point[1] + header

    labelled = set()
    for edge in diagram.edges:
        points = [at(p) for p in layout.route(edge)]
        points = [p for i, p in enumerate(points) if i == 0 or p != points[i - 1]]
        codes = [CurvePath.MOVETO] + [CurvePath.LINETO] * (len(points) - 1)
        ax.add_patch(FancyArrowPatch(path=CurvePath(points, codes), arrowstyle="-|>", mutation_scale=7,
                                     linewidth=0.7, color="#444444", shrinkA=0, shrinkB=0))
        if edge.changed and edge.source not in labelled:
            labelled.add(edge.source)
            x, y = points[0]
            ax.text(x + 0.05, y + 0.02, shape_text(edge.shape), va="top", ha="left", fontsize=SMALL_FONT - 0.5,
                    color="#333333", gid=f"shape-{edge.source}")
    for box in diagram.boxes:
        placed = layout.placed[box.id]
        x, y = at((placed.x - BOX_WIDTH / 2, placed.y))
        ax.add_patch(FancyBboxPatch((x, y), BOX_WIDTH, placed.height, boxstyle="round,pad=0,rounding_size=0.05",
                                    facecolor=KIND_COLOURS[box.kind][0], edgecolor="#333333",
                                    linewidth=1.2 if box.repeat > 1 else 0.6, gid=f"box-{box.id}"))
        for index, line in enumerate(box_lines(box)):
            ax.text(x + BOX_WIDTH / 2, y + PADDING + LINE * (index + 0.5), line, ha="center", va="center",
                    fontsize=FONT if index == 0 else SMALL_FONT, weight="bold" if index == 0 else "normal")
    return fig
