"""Sample sheets: a contact sheet of a few images per class, drawn by the prepare stage.

The sheet is how a reader checks a prepared dataset by eye: orientation, colours, labels, and
which classes params.yaml's report.highlight_classes marks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.plotting import HIGHLIGHT, clip, new_figure, save_figure


def plot_samples(images: np.ndarray, labels: np.ndarray, classes: list[str], highlight: set[str],
                 highlight_label: str, per_class: int = 4, max_classes: int = 100,
                 title: str | None = None) -> Figure:
    """A contact sheet: `per_class` images of each class under its name; `highlight` classes in red, legend
    `highlight_label`."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    labels = np.asarray(labels)
    shown = [i for i in range(len(classes)) if np.any(labels == i)]
    if len(shown) > max_classes:
        marked = [i for i in shown if classes[i] in highlight][:max_classes]
        rest = [i for i in shown if i not in marked][: max_classes - len(marked)]
        shown = sorted(marked + rest)
    tile_h, tile_w = images.shape[1:3]
    gap = max(1, tile_w // 32)
    strip_w = per_class * (tile_w + gap) - gap
    # Laid out by hand, in inches: layout engines take seconds over a hundred axes.
    cols = max(1, min(len(shown), round(20 / max(per_class, 1))))
    rows = max(1, math.ceil(len(shown) / cols))
    cell_w = per_class * 0.85
    cell_h = cell_w * tile_h / strip_w
    pad_x, title_h, pad_y, top, bottom = 0.2, 0.22, 0.12, 0.55, 0.4
    width = cols * cell_w + (cols + 1) * pad_x
    height = top + rows * (cell_h + title_h + pad_y) + bottom
    fig = new_figure(width, height)
    marked_any = False
    for k, index in enumerate(shown):
        r, c = divmod(k, cols)
        left = pad_x + c * (cell_w + pad_x)
        base = height - top - (r + 1) * (cell_h + title_h + pad_y) + pad_y
        ax = fig.add_axes((left / width, base / height, cell_w / width, cell_h / height))
        picks = np.flatnonzero(labels == index)[:per_class]
        strip = np.full((tile_h, strip_w, 3), 255, dtype=np.uint8)
        for j, pick in enumerate(picks):
            strip[:, j * (tile_w + gap): j * (tile_w + gap) + tile_w] = images[pick]
        name = classes[index]
        marked = name in highlight
        marked_any |= marked
        ax.imshow(strip, interpolation="nearest" if tile_w < 64 else "antialiased", aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(clip(name, int(cell_w * 11)), fontsize=8, color=HIGHLIGHT if marked else "black",
                     fontweight="bold" if marked else "normal", pad=3)
        for spine in ax.spines.values():
            spine.set_visible(marked)
            spine.set_color(HIGHLIGHT)
            spine.set_linewidth(2.5)
    if marked_any:
        fig.legend(handles=[Patch(facecolor="none", edgecolor=HIGHLIGHT, linewidth=2,
                                  label=f"red frame and name: {highlight_label}")],
                   loc="lower center", bbox_to_anchor=(0.5, 0.0), frameon=False, fontsize=9)
    fig.suptitle(title or f"{len(shown)} classes, up to {per_class} images each", fontsize=11,
                 y=1 - 0.15 / height, va="top")
    return fig


def save_sample_sheet(prepared, path: str | Path, highlight: set[str], highlight_label: str, per_class: int = 4,
                      max_classes: int = 100) -> Path:
    """The contact sheet of a prepared dataset's training split (any split if train is empty), as a PNG."""
    split = next((s for s in ("train", "val", "test") if s in prepared.y and len(prepared.y[s])), None)
    if split is None:
        raise CnnbenchError("no images to draw a sample sheet from: every split is empty")
    fig = plot_samples(prepared.x[split], prepared.y[split], list(prepared.classes), set(highlight),
                       highlight_label, per_class=per_class, max_classes=max_classes,
                       title=f"{len(prepared.classes)} classes: {per_class} {split} images each")
    return save_figure(fig, path)
