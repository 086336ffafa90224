"""PNG figures of evaluation results, drawn with matplotlib offline (the Agg canvas, no display, no pyplot state).

- ``recall_curves``: Recall@K against K, one line per model (solid text → image, dashed image → text);
- ``group_bars``: one metric per group (INQUIRE supercategory), a bar per model;
- ``ann_tradeoff``: recall@k against queries/s for each index (one query per call, and batched).

Names in a figure are user text (run names, INQUIRE supercategories, index
names); each goes through ``plain`` so that a ``$`` is drawn, never read as
the start of matplotlib's math text (where ``$\\frac$`` fails to draw).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: One colour per model, the same in every figure of a report.
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
LINES = ("-", "--", ":", "-.")


def plain(text: object) -> str:
    """``text`` as matplotlib draws it literally: a ``$`` escaped, so no math text is parsed."""
    return str(text).replace("$", r"\$")


def _figure(width: float = 7.0, height: float = 4.5, columns: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def _save(figure: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150, format="png")
    return path


def recall_curves(
    curves: Mapping[str, Mapping[str, Mapping[int, float]]],
    path: str | os.PathLike[str],
    title: str = "Recall@K",
) -> Path:
    """``curves``: model → direction (``"text → image"``) → {K: recall as a fraction}."""
    figure, (axes,) = _figure()
    ks: set[int] = set()
    for number, (model, directions) in enumerate(curves.items()):
        for line, (direction, points) in enumerate(directions.items()):
            xs = sorted(points)
            ks.update(xs)
            axes.plot(
                xs,
                [100 * points[k] for k in xs],
                marker="o",
                color=COLOURS[number % len(COLOURS)],
                linestyle=LINES[line % len(LINES)],
                label=plain(f"{model}: {direction}"),
            )
    axes.set_xscale("log")
    axes.set_xticks(sorted(ks), [str(k) for k in sorted(ks)])
    axes.minorticks_off()
    axes.set_xlabel("K")
    axes.set_ylabel("Recall@K (%)")
    axes.set_ylim(0, 100)
    axes.set_title(plain(title))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, path)


def group_bars(
    values: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike[str],
    ylabel: str,
    title: str,
) -> Path:
    """``values``: model → group → value; groups on the x axis, one bar per model in each."""
    groups = sorted({group for per_model in values.values() for group in per_model})
    models = list(values)
    figure, (axes,) = _figure(width=max(7.0, 1.2 * len(groups) * max(1, len(models)) / 2 + 2))
    width = 0.8 / max(1, len(models))
    for number, model in enumerate(models):
        xs = [i + (number - (len(models) - 1) / 2) * width for i in range(len(groups))]
        heights = [values[model].get(group, 0.0) for group in groups]
        axes.bar(xs, heights, width, label=plain(model), color=COLOURS[number % len(COLOURS)])
    axes.set_xticks(range(len(groups)), [plain(g) for g in groups], rotation=20, ha="right")
    axes.set_ylabel(plain(ylabel))
    axes.set_title(plain(title))
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, path)


def ann_tradeoff(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    title: str = "ANN: recall against speed",
) -> Path:
    """``results``: model → the ANN benchmark's rows (``name``, ``recall``, ``k``, ``single_qps``, ``batch_qps``)."""
    figure, axes_pair = _figure(width=11.0, columns=2)
    k = next((row["k"] for rows in results.values() for row in rows), 10)
    for axes, column, label in zip(
        axes_pair,
        ("single_qps", "batch_qps"),
        ("one query per call", "all queries in one call"),
        strict=True,
    ):
        for number, (model, rows) in enumerate(results.items()):
            colour = COLOURS[number % len(COLOURS)]
            xs = [float(row[column]) for row in rows]
            ys = [float(row["recall"]) for row in rows]
            axes.scatter(xs, ys, color=colour, label=plain(model), zorder=3)
            for row, x, y in zip(rows, xs, ys, strict=True):
                axes.annotate(
                    plain(row["name"]),
                    (x, y),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize="x-small",
                    color=colour,
                )
        axes.set_xscale("log")
        axes.set_xlabel(f"queries/s, {label}")
        axes.set_ylabel(f"recall@{k}")
        axes.set_ylim(-0.02, 1.05)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(plain(title))
    return _save(figure, path)
