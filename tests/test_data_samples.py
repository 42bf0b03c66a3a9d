"""Sample sheets: the prepare stage's contact sheet of a few images per class, highlighted classes marked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib.colors as mcolors
import numpy as np
from PIL import Image

from cnnbench.core.plotting import HIGHLIGHT
from cnnbench.data.samples import plot_samples, save_sample_sheet


def test_plot_samples_marks_highlighted_classes():
    rng = np.random.default_rng(0)
    classes = ["apollo", "BLUE SPOTTED CROW", "monarch"]
    labels = np.repeat(np.arange(3), 5)
    images = rng.integers(0, 256, (15, 12, 12, 3), dtype=np.uint8)
    fig = plot_samples(images, labels, classes, {"BLUE SPOTTED CROW"}, "marked in a test", per_class=4)
    titled = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(titled) == set(classes)
    marked = titled["BLUE SPOTTED CROW"]
    assert mcolors.to_hex(marked.title.get_color()) == HIGHLIGHT
    assert all(s.get_visible() and mcolors.to_hex(s.get_edgecolor()) == HIGHLIGHT for s in marked.spines.values())
    assert mcolors.to_hex(titled["apollo"].title.get_color()) == "#000000"
    assert not any(s.get_visible() for s in titled["apollo"].spines.values())
    legend_text = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert legend_text == ["red frame and name: marked in a test"]


def test_plot_samples_caps_classes_and_keeps_highlighted_ones():
    labels = np.repeat(np.arange(30), 2)
    images = np.zeros((60, 8, 8), dtype=np.uint8)  # grayscale is accepted too
    classes = [f"c{i}" for i in range(30)]
    fig = plot_samples(images, labels, classes, {"c29"}, "kept", per_class=2, max_classes=10)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 10 and "c29" in titles


def test_save_sample_sheet_writes_a_png(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    prepared = SimpleNamespace(classes=["a", "COPPER TAIL"], x={"train": images}, y={"train": np.repeat([0, 1], 4)})
    path = save_sample_sheet(prepared, tmp_path / "data" / "x_samples.png", {"COPPER TAIL"}, "highlighted class")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_sample_sheets_do_not_import_the_report():
    code = "import sys, cnnbench.data.samples; print(sorted(m for m in sys.modules if m.startswith('cnnbench')))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    loaded = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "cnnbench.data.samples" in loaded and "cnnbench.report" not in loaded
