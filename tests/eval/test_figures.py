"""The report's figures are legible: no two labels overlap, measured on the drawn figure (the
extents matplotlib's Agg renderer gives each text), with many, long and close names."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from img_search.eval import figures

INDEXES = ("exact", "faiss_hnsw", "faiss_ivf", "usearch", "milvus")


def ann_rows(scale: float, spread: float) -> list[dict]:
    """One model's ANN rows: recalls that tie, speeds ``spread`` apart around ``scale``."""
    return [
        {
            "name": name,
            "k": 10,
            "recall": 1.0 if i % 2 == 0 else 0.99,
            "single_qps": scale * spread**i,
            "batch_qps": scale * 1.1 * spread**i,
        }
        for i, name in enumerate(INDEXES)
    ]


CASES = {
    "recall, many K": lambda: figures.recall_figure(
        {
            f"model {m}": {
                "text → image": {k: min(1.0, 0.1 * m + k / 1000) for k in KS},
                "image → text": {k: min(1.0, 0.2 * m + k / 1000) for k in KS},
            }
            for m in range(3)
        },
        "Caption ↔ image Recall@K",
    ),
    "groups, long names": lambda: figures.group_figure(
        {
            f"a model with a long name {m}": {
                f"supercategory number {g} with a long name": g + m for g in range(14)
            }
            for m in range(3)
        },
        "AP@50",
        "INQUIRE-Fullrank AP@50 by supercategory",
    ),
    "ann, close points": lambda: figures.ann_figure(
        {"clip": ann_rows(12_000, 1.05), "siglip2": ann_rows(12_500, 1.04)},
        "ANN: recall against speed",
    ),
    "ann, wide range": lambda: figures.ann_figure(
        {"clip": ann_rows(900, 6.0), "siglip2": ann_rows(1_100, 5.0)}, "ANN"
    ),
}
KS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 50, 100, 200, 500, 1000]


def drawn_texts(figure) -> list[tuple[str, object]]:
    """(text, extent in pixels) of every tick label, axis label, title and note drawn, and the
    legends."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = []
    for axes in figure.axes:
        labels = [axes.xaxis.label, axes.yaxis.label, axes.title, *axes.texts]
        for axis in (axes.xaxis, axes.yaxis):  # the ticks in view: those drawn
            low, high = sorted(axis.get_view_interval())
            places = axis.get_majorticklocs()
            labels += [
                t
                for t, at in zip(axis.get_majorticklabels(), places, strict=True)
                if low <= at <= high
            ]
        texts += [t for t in labels if t.get_visible() and t.get_text()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    legends = [*figure.legends, *(a.get_legend() for a in figure.axes if a.get_legend())]
    boxes += [("legend", legend.get_window_extent(renderer)) for legend in legends]
    return boxes


@pytest.mark.parametrize("case", list(CASES))
def test_no_two_labels_overlap(case):
    boxes = drawn_texts(CASES[case]())
    assert len(boxes) > 8  # the labels are there to be measured
    touching = [(a, b) for (a, x), (b, y) in itertools.combinations(boxes, 2) if x.overlaps(y)]
    assert touching == []


def test_every_tick_of_a_log_axis_is_named_or_left_blank_by_its_spacing():
    assert figures.spaced_labels([1, 5, 10]) == ["1", "5", "10"]
    labels = [label for label in figures.spaced_labels(KS) if label]
    assert labels == ["1", "2", "5", "10", "20", "50", "100", "200", "500", "1000"]
    assert figures.spaced_labels([1, 3, 10]) == ["1", "3", "10"]
    assert figures.short_number(1500) == "1.5k" and figures.short_number(3e6) == "3M"
