"""Figures for ``cnnlab show``: grids of images on matplotlib's Agg canvas (no pyplot).

Every function takes numbers measured in measure.py and returns a Figure; plots.save_figure
writes it. Images are drawn with ``imshow`` so a test can read back exactly what was drawn
(``axes.images[0].get_array()``), and boxes as Rectangle patches.
"""

from __future__ import annotations

import math
import textwrap

import torch

PANEL_INCHES = 3.2      # side of one square panel
CAPTION_FONT = "small"
DIVERGING = "RdBu_r"    # kernels of one channel: blue negative, white zero, red positive
HEAT = "inferno"        # gradient mass and class activation
TITLE_WIDTH_SHARE = 0.96  # of the figure's width a title may take
NOTE_COLUMNS = 22        # characters a line of a note across a 2.4-inch panel holds


def grid_figure(panels: int, columns: int | None = None, dpi: int = 150, inches: float = PANEL_INCHES):
    """A figure of ``panels`` square axes in a grid, without ticks; unused cells hidden."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = columns or min(panels, 4)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(inches * columns, inches * rows + 0.4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure, list(axes[:panels])


def fitted_title(figure, title: str):
    """The figure's title, its lines wrapped at spaces until it fits the figure's width: a
    one-panel figure is narrower than a run's description, and constrained layout makes room
    above the panels for the lines but not beside the figure for their length."""
    text = figure.suptitle(title, fontsize="medium")
    renderer = figure.canvas.get_renderer()
    room = TITLE_WIDTH_SHARE * figure.bbox.width
    lines = title.splitlines()
    columns = max(map(len, lines))
    while text.get_window_extent(renderer).width > room and columns > 10:
        columns -= 2
        text.set_text("\n".join(textwrap.fill(line, columns, break_long_words=False) for line in lines))
    return text


def show_image(ax, image: torch.Tensor, **kwargs):
    """An image as drawn: (h, w) with a colour map, or (h, w, 3) in [0, 1]."""
    array = image.detach().cpu().float().numpy()
    if array.ndim == 2:
        kwargs.setdefault("cmap", "gray")
    return ax.imshow(array, interpolation="nearest", **kwargs)


def as_picture(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, C, h, w) -> float (N, H, W) grey or (N, H, W, 3) colour in [0, 1], resized to
    the model's input ``size`` (H, W) so that maps computed there lie over the right pixels."""
    import torch.nn.functional as F

    pictures = images.detach().cpu().float() / 255
    if tuple(pictures.shape[2:]) != tuple(size):
        pictures = F.interpolate(pictures, size=tuple(size), mode="bilinear", align_corners=False,
                                 antialias=pictures.shape[2] > size[0]).clamp(0, 1)
    return pictures[:, 0] if pictures.shape[1] == 1 else pictures[:, :3].permute(0, 2, 3, 1)


def filters_figure(grid: torch.Tensor, title: str, dpi: int):
    """One mosaic of kernels (see measure.kernel_tiles): colour, or diverging for one channel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = grid.shape[:2]
    figure = Figure(figsize=(6, 6 * height / width + 0.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.set_xticks([])
    ax.set_yticks([])
    if grid.dim() == 3:
        show_image(ax, grid)
        ax.set_xlabel("each kernel scaled by its largest |weight|: grey is 0, a channel brighter\n"
                      "than grey a positive weight, darker a negative one", fontsize=CAPTION_FONT)
    else:
        image = show_image(ax, grid, cmap=DIVERGING, vmin=0, vmax=1)
        bar = figure.colorbar(image, ax=ax, shrink=0.8, ticks=[0, 0.5, 1])
        bar.ax.set_yticklabels(["-largest", "0", "+largest"], fontsize=CAPTION_FONT)
        ax.set_xlabel("red positive, blue negative weights, white 0;\n"
                      "each kernel scaled by its largest |weight|", fontsize=CAPTION_FONT)
    ax.set_facecolor("white")
    fitted_title(figure, title)
    return figure


def activations_figure(picture: torch.Tensor, grids: dict, title: str, dpi: int):
    """The input, then one mosaic of feature maps per layer."""
    figure, axes = grid_figure(1 + len(grids), columns=min(1 + len(grids), 4), dpi=dpi)
    show_image(axes[0], picture)
    axes[0].set_title("input", fontsize=CAPTION_FONT)
    for ax, (caption, grid) in zip(axes[1:], grids.items()):
        show_image(ax, grid, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(caption, fontsize=CAPTION_FONT)
    fitted_title(figure, title)
    return figure


def receptive_field_figure(panels: list[dict], title: str, dpi: int):
    """Per layer: the effective field (gradient mass) as a heat map, the theoretical field as
    a solid box, the square holding the stated share of the mass dashed."""
    from matplotlib.patches import Rectangle

    figure, axes = grid_figure(len(panels), dpi=dpi)
    for ax, panel in zip(axes, panels):
        mass = panel["mass"]
        show_image(ax, mass / mass.max().clamp_min(1e-30), cmap=HEAT, vmin=0, vmax=1)
        box = panel["box"]
        ax.add_patch(Rectangle((box.left - 0.5, box.top - 0.5), box.right - box.left + 1,
                               box.bottom - box.top + 1, fill=False, edgecolor="cyan", linewidth=1.5,
                               label="theoretical"))
        side = panel["effective_size"]
        if not math.isnan(side):
            row, col = box.centre
            ax.add_patch(Rectangle((col - side / 2, row - side / 2), side, side, fill=False,
                                   edgecolor="white", linestyle="--", linewidth=1.2, label="effective"))
        ax.set_xlim(-0.5, mass.shape[1] - 0.5)
        ax.set_ylim(mass.shape[0] - 0.5, -0.5)
        ax.set_title(panel["caption"], fontsize=CAPTION_FONT)
    axes[0].legend(loc="lower left", fontsize="x-small", framealpha=0.6)
    fitted_title(figure, title)
    return figure


def overlay_figure(pictures: torch.Tensor, heat: torch.Tensor | None, captions: list[str], title: str,
                   dpi: int, columns: int | None = None, notes: list[str | None] | None = None):
    """Images in a grid with their captions; a heat map over each when ``heat`` is given, except
    where ``notes`` has a note, written across the image instead (why its heat map is blank)."""
    figure, axes = grid_figure(len(pictures), columns=columns, dpi=dpi, inches=2.4)
    notes = notes or [None] * len(pictures)
    for i, (ax, picture, caption, note) in enumerate(zip(axes, pictures, captions, notes)):
        show_image(ax, picture)
        if note is not None:
            ax.text(0.5, 0.5, textwrap.fill(note, NOTE_COLUMNS), transform=ax.transAxes, ha="center", va="center", fontsize="x-small",
                    bbox=dict(boxstyle="round", facecolor="white", alpha=0.85))
        elif heat is not None:
            show_image(ax, heat[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(caption, fontsize="x-small")
    fitted_title(figure, title)
    return figure
