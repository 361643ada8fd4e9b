"""cnnlab plot (and compare --plot): the written files are opened and checked as figures.

The documented geometry: each panel is 4.5 x 4.0 inches, panels side by side, so at dpi 60
a PNG of 2 panels is 540 x 240 pixels, and an SVG or PDF of 2 panels is 648 x 288 points.
Run colours are matplotlib's C0, C1, ... (#1f77b4, #ff7f0e, ...); training is dashed.
"""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnlab.cli import app
from synthetic_runs import make_run

RUN_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c"]
FRONTIER_GREY = "#808080"
SVG = "{http://www.w3.org/2000/svg}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


def invoke(*args):
    return CliRunner().invoke(app, [*map(str, args)])


# -- reading figures back ---------------------------------------------------------------
def pixels_of(png, colour: str):
    """A mask of the pixels within a small tolerance of ``colour`` ('#rrggbb')."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=float) / 255
    target = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return np.abs(rgb - target).max(axis=2) < 0.08


def coloured_pixels_per_panel(png, colour: str, panels: int) -> list[int]:
    mask = pixels_of(png, colour)
    above_legend = mask[: int(mask.shape[0] * 0.75)]
    return [int(part.sum()) for part in np.array_split(above_legend, panels, axis=1)]


def svg_axes(path):
    root = ET.parse(path).getroot()
    axes = [g for g in root.iter(f"{SVG}g") if re.fullmatch(r"axes_\d+", g.get("id", ""))]
    return root, axes


def style_of(element) -> dict:
    return dict(part.split(": ", 1) for part in element.get("style", "").split("; ") if part)


def vertices(path_element) -> list[tuple[float, float]]:
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path_element.get("d"))]
    return list(zip(numbers[::2], numbers[1::2]))


def plotted(axes, tag: str):
    """Elements drawn in an axes group, leaving out its legend."""
    for child in axes:
        if child.get("id", "").startswith("legend"):
            continue
        if child.tag == f"{SVG}{tag}":
            yield child
        yield from plotted(child, tag)


def data_lines(axes, colour: str):
    """(dashed?, vertices) of every line drawn in ``colour`` in one axes group."""
    return [("stroke-dasharray" in style_of(path), vertices(path))
            for path in plotted(axes, "path") if style_of(path).get("stroke") == colour]


def markers(axes, colour: str) -> list[tuple[float, float]]:
    return [(float(use.get("x")), float(use.get("y"))) for use in plotted(axes, "use")
            if style_of(use).get("fill") == colour]


def best_epoch(run) -> int:
    rows = run.metrics.rows()
    return max(rows, key=lambda row: row["val_acc"])["epoch"]


# -- the tests --------------------------------------------------------------------------
def test_png_of_one_run_goes_into_the_run_with_a_panel_per_quantity(tmp_path):
    run = make_run(tmp_path, "lenet-a", epochs=8)  # cosine schedule: the lr panel appears
    result = invoke("plot", run.path, "--dpi", 60)
    assert result.exit_code == 0, result.output
    png = run.path / "plot.png"
    assert f"wrote {png}" in result.stderr
    assert Image.open(png).format == "PNG" and Image.open(png).size == (3 * 270, 240)
    per_panel = coloured_pixels_per_panel(png, RUN_COLOURS[0], 3)
    assert all(count > 60 for count in per_panel), per_panel  # loss, accuracy, lr drawn

    assert invoke("plot", run.path, "--dpi", 60, "--no-lr").exit_code == 0
    assert Image.open(png).size == (2 * 270, 240)  # replaced: now loss and accuracy only


def test_png_of_several_runs_shows_every_run_in_every_panel(tmp_path):
    runs = [make_run(tmp_path / "runs", "a", ceiling=0.9),
            make_run(tmp_path / "runs", "b", ceiling=0.95, pace=1.5)]
    result = invoke("plot", *[r.path for r in runs], "--no-lr", "--dpi", 60)
    assert result.exit_code == 0, result.output
    png = tmp_path / "runs" / "plot.png"  # several runs: beside them
    assert f"wrote {png}" in result.stderr and Image.open(png).size == (540, 240)
    for colour in RUN_COLOURS[:2]:
        assert all(count > 60 for count in coloured_pixels_per_panel(png, colour, 2)), colour
    assert coloured_pixels_per_panel(png, RUN_COLOURS[2], 2) == [0, 0]  # no third run


def test_svg_has_two_axes_train_dashed_val_solid_and_the_best_epoch_starred(tmp_path):
    runs = [make_run(tmp_path, "a", epochs=7, peak=4), make_run(tmp_path, "b", epochs=5, peak=2)]
    out = tmp_path / "figures" / "curves.svg"
    assert invoke("plot", *[r.path for r in runs], "--no-lr", "--out", out).exit_code == 0
    root, (loss_axes, accuracy_axes) = svg_axes(out)
    assert (root.get("width"), root.get("height")) == ("648pt", "288pt")
    for run, colour in zip(runs, RUN_COLOURS):
        epochs = len(run.metrics.rows())
        for axes in (loss_axes, accuracy_axes):
            lines = data_lines(axes, colour)
            assert sorted(dashed for dashed, _ in lines) == [False, True]  # val, train
            assert all(len(points) == epochs for _, points in lines)
        # the star sits on the validation accuracy line, at the best epoch
        (validation,) = [points for dashed, points in data_lines(accuracy_axes, colour)
                         if not dashed]
        assert markers(accuracy_axes, colour) == [pytest.approx(validation[best_epoch(run) - 1])]
    assert best_epoch(runs[0]) == 4 and best_epoch(runs[1]) == 2  # not simply the last epoch


def test_pdf_is_one_page_of_the_figure_size(tmp_path):
    run = make_run(tmp_path, "a")
    out = tmp_path / "curves.pdf"
    assert invoke("plot", run.path, "--lr", "--out", out).exit_code == 0
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type /Page\b", data)) == 1
    assert re.search(rb"/MediaBox \[ 0 0 972 288 \]", data)  # 3 panels of 4.5 x 4 inches


def test_a_run_in_progress_plots_its_finished_epochs(tmp_path):
    run = make_run(tmp_path, "running", epochs=20, finished=5)
    with open(run.metrics.path, "a") as f:
        f.write("6,0.31,0.9")  # epoch 6 is being written
    out = tmp_path / "progress.svg"
    assert invoke("plot", run.path, "--no-lr", "-o", out).exit_code == 0
    _, axes = svg_axes(out)
    for ax in axes:
        assert [len(points) for _, points in data_lines(ax, RUN_COLOURS[0])] == [5, 5]


def test_older_runs_without_some_columns_are_drawn_with_what_they_have(tmp_path):
    new = make_run(tmp_path, "new")
    old = make_run(tmp_path, "old", columns=["epoch", "train_loss", "train_acc", "val_acc"])
    out = tmp_path / "mixed.svg"
    result = invoke("plot", new.path, old.path, "--lr", "-o", out)
    assert result.exit_code == 0 and "old: metrics.csv has no val_loss, lr" in result.stderr
    _, (loss_axes, accuracy_axes, lr_axes) = svg_axes(out)
    assert [d for d, _ in data_lines(loss_axes, RUN_COLOURS[1])] == [True]  # train loss only
    assert sorted(d for d, _ in data_lines(accuracy_axes, RUN_COLOURS[1])) == [False, True]
    assert data_lines(lr_axes, RUN_COLOURS[1]) == []
    assert len(data_lines(lr_axes, RUN_COLOURS[0])) == 1
    # lr left to its default: only an old run without lr, so no lr panel
    assert invoke("plot", old.path, "-o", out).exit_code == 0 and len(svg_axes(out)[1]) == 2


def test_bad_input_is_reported_and_the_good_runs_still_plotted(tmp_path):
    good = make_run(tmp_path, "good")
    (tmp_path / "notes").mkdir()
    out = tmp_path / "p.png"
    result = invoke("plot", tmp_path / "notes", good.path, "-o", out, "--dpi", 40)
    assert result.exit_code == 0 and "skipped" in result.stderr and "notes" in result.stderr
    assert Image.open(out).size == (3 * 180, 160)

    nothing = invoke("plot", tmp_path / "notes", "-o", tmp_path / "none.png")
    assert nothing.exit_code == 1 and "error: nothing to plot" in nothing.stderr
    assert not (tmp_path / "none.png").exists()
    wrong = invoke("plot", good.path, "-o", tmp_path / "p.jpeg")
    assert wrong.exit_code == 2 and "cannot tell the image format" in wrong.stderr
    assert "Traceback" not in result.output + nothing.output + wrong.output


def test_compare_plot_writes_validation_curves_and_an_efficiency_figure(tmp_path):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "a-mlp", model="mlp", ceiling=0.90, params=50_000, macs=50_000)
    make_run(runs_dir, "b-lenet", model="lenet", ceiling=0.95, params=60_000, macs=400_000)
    make_run(runs_dir, "c-big", model="big_net", ceiling=0.93, params=900_000, macs=9_000_000)
    out = tmp_path / "cmp.svg"
    table = tmp_path / "cmp.csv"
    result = invoke("compare", "--runs-dir", runs_dir, "--plot", out, "-o", table)
    assert result.exit_code == 0, result.output
    efficiency = tmp_path / "cmp_efficiency.svg"
    assert result.stderr.splitlines() == [f"wrote {table}", f"wrote {out}", f"wrote {efficiency}"]  # every file
    assert table.read_text().startswith("name,model,data,")

    _, curve_axes = svg_axes(out)
    assert len(curve_axes) == 2
    for axes in curve_axes:  # validation only: one solid line per run, no dashed training
        for colour in RUN_COLOURS:
            assert [dashed for dashed, _ in data_lines(axes, colour)] == [False]

    root, (macs_axes, params_axes) = svg_axes(efficiency)
    assert (root.get("width"), root.get("height")) == ("648pt", "288pt")
    for axes in (macs_axes, params_axes):
        points = {colour: markers(axes, colour) for colour in RUN_COLOURS}
        assert all(len(found) == 1 for found in points.values()), points
        # big_net is costlier and less accurate than lenet: the frontier is mlp -> lenet
        (frontier,) = [p for _, p in data_lines(axes, FRONTIER_GREY)]
        assert frontier == [pytest.approx(points[RUN_COLOURS[0]][0]),
                            pytest.approx(points[RUN_COLOURS[1]][0])]
    text = efficiency.read_text()  # matplotlib writes each label's text as a comment
    assert all(text.count(f"<!-- {model} -->") == 2 for model in ("mlp", "lenet", "big_net"))


def test_plot_stays_headless_whatever_backend_the_environment_asks_for(tmp_path):
    run = make_run(tmp_path, "a")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "tkagg"  # an interactive backend, unusable without a display
    result = subprocess.run([sys.executable, "-m", "cnnlab", "plot", str(run.path)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Image.open(run.path / "plot.png").size == (3 * 675, 600)  # dpi 150 by default


# -- many runs ---------------------------------------------------------------------------------------

def axes_heights(figure) -> list[float]:
    figure.canvas.draw()
    return [ax.get_window_extent().height for ax in figure.axes]


@pytest.mark.slow
@pytest.mark.parametrize("count", [12, 49, 300])
def test_many_runs_keep_the_axes_whole_distinct_colours_and_the_legend_clear_of_the_axes(tmp_path, count):
    from matplotlib.colors import to_hex

    from cnnlab.plots import curves_figure
    from cnnlab.runs import load_runs

    runs = [make_run(tmp_path, f"run{i:03d}", epochs=3, peak=2, ceiling=0.5 + i / (3 * count)) for i in range(count)]
    few = curves_figure(load_runs([run.path for run in runs[:2]]), splits=("val",), lr=False)
    many = curves_figure(load_runs([run.path for run in runs]), splits=("val",), lr=False)
    assert min(axes_heights(many)) >= 0.95 * min(axes_heights(few))  # the legend adds room, never takes it
    legend = many.legends[0].get_window_extent()
    assert all(legend.y1 <= ax.get_window_extent().y0 for ax in many.axes)  # below the axes, not over them
    colours = {to_hex(line.get_color()) for line in many.axes[1].get_lines() if line.get_linestyle() == "-"}
    assert len(colours) == count  # no two runs share a colour


# -- the efficiency figure ---------------------------------------------------------------------------

def efficiency_of(runs_dir, dpi: int = 60):
    from cnnlab.compare import compare_runs
    from cnnlab.plots import efficiency_figure

    figure = efficiency_figure(compare_runs(runs_dir=runs_dir), dpi=dpi)
    figure.canvas.draw()
    return figure


def overlapping(boxes) -> list[tuple]:
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


@pytest.mark.parametrize("dpi", [60, 150])
def test_efficiency_tick_labels_and_point_labels_never_overlap(tmp_path, dpi):
    # six decades of MACs (where 200k, 500k, 1M ... collided), and three runs crowded at one point
    make_run(tmp_path, "tiny", model="mlp", ceiling=0.90, params=20_000, macs=20_000)
    for name, ceiling in (("lenet-a", 0.950), ("lenet-b", 0.951), ("lenet-c", 0.949)):
        make_run(tmp_path, name, model="lenet", ceiling=ceiling)
    make_run(tmp_path, "huge", model="vgg16", ceiling=0.93, params=138_000_000, macs=15_000_000_000)
    figure = efficiency_of(tmp_path, dpi)
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        frame = ax.get_window_extent(renderer)
        ticks = [label for label in ax.get_xticklabels()
                 if label.get_text() and frame.x0 <= label.get_window_extent(renderer).x0 <= frame.x1]
        assert len(ticks) >= 3 and all(re.fullmatch(r"\d+[kMG]?", t.get_text()) for t in ticks)
        assert not overlapping([t.get_window_extent(renderer) for t in ticks]), [t.get_text() for t in ticks]
        labels = [text.get_window_extent(renderer) for text in ax.texts]
        assert sorted(text.get_text() for text in ax.texts) == ["lenet-a", "lenet-b", "lenet-c", "mlp", "vgg16"]
        assert not overlapping(labels)
        assert all(frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                   for box in labels)


def test_efficiency_draws_unfinished_runs_hollow_and_says_so(tmp_path):
    from matplotlib.colors import to_hex

    make_run(tmp_path, "done", model="mlp", ceiling=0.90, params=50_000, macs=50_000)
    make_run(tmp_path, "halfway", model="lenet", epochs=10, finished=4)
    figure = efficiency_of(tmp_path)
    for ax in figure.axes:
        points = [line for line in ax.get_lines() if line.get_marker() == "o"]
        hollow = {to_hex(line.get_markeredgecolor()): line.get_markerfacecolor() == "none" for line in points}
        assert hollow == {RUN_COLOURS[0]: False, RUN_COLOURS[1]: True}  # done filled, halfway hollow
        legend = ax.get_legend()
        assert [text.get_text() for text in legend.get_texts()] == ["efficiency frontier",
                                                                     "unfinished: fewer epochs than planned"]
        assert legend.legend_handles[1].get_markerfacecolor() == "none"
