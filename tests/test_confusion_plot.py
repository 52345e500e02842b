"""The confusion matrix artefacts: every class in the CSV, a PNG of bounded size."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from tasks._classify import CONFUSION_SHOWN, most_confused, save_confusion_matrix


def test_many_classes_draw_the_most_confused_in_a_bounded_png(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    titles = []
    set_title = Axes.set_title
    monkeypatch.setattr(
        Axes, "set_title", lambda ax, t, *a, **k: titles.append(t) or set_title(ax, t, *a, **k)
    )
    n = 200
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(5, 10, n))
    confused = [3, 50, 51, 199]  # true 50 is taken for 51, 199 for 3
    matrix[50, 51] = matrix[199, 3] = 40
    names = [f"class_{i}" for i in range(n)]
    csv_path, png_path = save_confusion_matrix(matrix, names, tmp_path)
    table = pd.read_csv(csv_path, index_col=0)
    assert table.shape == (n, n) and list(table.columns) == names
    assert table.loc["class_50", "class_51"] == 40 and int(table.to_numpy().sum()) == matrix.sum()
    width, height = Image.open(png_path).size
    assert width <= 2200 and height <= 2200  # was 0.55 inch per class: 12,375 px a side
    shown = most_confused(matrix.tolist(), CONFUSION_SHOWN)
    assert len(shown) == CONFUSION_SHOWN and set(confused) <= set(shown)
    assert shown == sorted(shown)
    assert titles == [
        "Confusion matrix (test): the 30 most confused of 200 classes\n"
        "(all classes in confusion_matrix.csv)"
    ]


def test_few_classes_are_all_drawn():
    counts = [[5, 1, 0], [0, 4, 0], [2, 0, 3]]
    assert most_confused(counts, 2) == [0, 2]  # class 0: 3 errors, class 2: 2, class 1: 1
    assert most_confused(counts, 30) == [0, 1, 2]
