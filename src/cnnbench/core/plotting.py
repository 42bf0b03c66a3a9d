"""What every cnnbench figure shares: canvas, style, colours, label clipping and an atomic PNG save.

Both the report's figures and the prepare stage's sample sheets draw through here, so they
look alike and neither has to import the other.
"""

from __future__ import annotations

from pathlib import Path

import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cnnbench.core.files import atomic_path

DPI = 120
HIGHLIGHT = "#d62728"   # red: the classes params.yaml's report.highlight_classes marks
BASE = "#4c72b0"


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches with its own Agg canvas (no pyplot, no global state)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)  # text extents need a renderer before saving
    return fig


def style():
    """Seaborn's whitegrid for one figure, without touching the global rcParams."""
    return sns.axes_style("whitegrid")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save a PNG atomically (temp file in the same directory, then rename)."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", pad_inches=0.15, facecolor="white")
    return Path(path)


def clip(text: str, width: int) -> str:
    """`text` cut to `width` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: width - 1] + "…"
