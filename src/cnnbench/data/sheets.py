"""Audit figures: near-duplicate pairs side by side, the most suspicious labels, the class ranking.

Drawn where the pixels are (prepare for the pairs, whose train copy it removes; audit for the labels),
so a reader checks by eye what the JSON lists.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from cnnbench.core.plotting import BASE, HIGHLIGHT, clip, new_figure, save_figure, style


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image


def plot_tiles(tiles: list[np.ndarray], captions: list[str], title: str, cols: int = 6):
    """A grid of images, each with a caption of up to three lines under it; a note when there is none."""
    cols = max(1, min(cols, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / cols))
    aspect = tiles[0].shape[1] / tiles[0].shape[0] if tiles else 1.0
    cell_w = 1.6 * min(aspect, 2.2)
    cell_h, text_h, top = cell_w / aspect, 0.5, 0.5
    width, height = cols * (cell_w + 0.2) + 0.2, top + rows * (cell_h + text_h)
    fig = new_figure(width, height)
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    if not tiles:
        fig.text(0.5, 0.4, "none found", ha="center", fontsize=10)
    for k, (tile, caption) in enumerate(zip(tiles, captions)):
        r, c = divmod(k, cols)
        left = 0.2 + c * (cell_w + 0.2)
        base = height - top - (r + 1) * (cell_h + text_h) + text_h
        ax = fig.add_axes((left / width, base / height, cell_w / width, cell_h / height))
        ax.imshow(_rgb(tile), interpolation="nearest" if tile.shape[0] < 64 else "antialiased", aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=6, labelpad=2)
    return fig


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two images of one size joined with a white gap."""
    left, right = _rgb(left), _rgb(right)
    gap = np.full((left.shape[0], max(1, left.shape[1] // 16), 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def save_near_duplicate_sheet(near_pairs: list, path: str | Path) -> Path:
    """Cross-split near-duplicate pairs, held-out copy left and the other (train) right, with the distance."""
    tiles = [side_by_side(held, other) for _, (held, other) in near_pairs]
    captions = [f"{clip(p['held_out_split'] + ': ' + p['held_out_label'], 28)}\n"
                f"{clip(p['other_split'] + ': ' + p['other_label'], 28)}\n"
                f"d={p['distance']}{' mirrored' if p['mirrored'] else ''}, {p['action']}" for p, _ in near_pairs]
    title = (f"{len(tiles)} cross-split near-duplicate pairs: held-out left, other split right"
             if tiles else "cross-split near-duplicates")
    return save_figure(plot_tiles(tiles, captions, title, cols=4), path)


def save_suspicious_sheet(images: list[np.ndarray], entries: list[dict], path: str | Path) -> Path:
    """The images most likely mislabelled, each with its given label, likely label and quality score."""
    captions = [f"given: {clip(e['given_label'], 24)}\nlikely: {clip(e['likely_label'], 24)}\n"
                f"quality {e['label_quality']:.3f}" for e in entries]
    return save_figure(plot_tiles(images, captions, f"{len(images)} most suspicious labels (lowest label quality)"),
                       path)


def save_class_ranking(ranking: list[dict], highlight: set[str], highlight_label: str, path: str | Path) -> Path:
    """Every class's label noise (1 - cleanlab's label quality) as a bar, noisiest first.

    `highlight` classes are drawn red, with `highlight_label` in the legend.
    """
    n = len(ranking)
    fig = new_figure(max(6.0, 0.12 * n + 2), 3.6)
    with style():
        ax = fig.add_subplot()
        colours = [HIGHLIGHT if row["class"] in highlight else BASE for row in ranking]
        # 1 - quality: clean datasets score 0.98-1.0, where bars of the quality itself look all alike.
        ax.bar(range(n), [1 - row["label_quality"] for row in ranking], color=colours, width=0.8)
        ax.set_xticks(range(n))
        ax.set_xticklabels([clip(row["class"], 18) for row in ranking], rotation=90,
                           fontsize=max(4, min(8, 600 // max(n, 1))))
        for tick, row in zip(ax.get_xticklabels(), ranking):
            tick.set_color(HIGHLIGHT if row["class"] in highlight else "black")
        ax.set_ylabel("1 - label quality (cleanlab)")
        ax.set_title(f"{n} classes by measured label quality, noisiest (#1) left", fontsize=10)
        if any(row["class"] in highlight for row in ranking):
            ax.legend(handles=[Patch(color=HIGHLIGHT, label=highlight_label)], fontsize=8, loc="lower right")
    return save_figure(fig, path)
