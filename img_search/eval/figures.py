"""PNG figures of evaluation results, drawn with matplotlib offline (the Agg canvas, no display, no pyplot state).

- ``recall_curves``: Recall@K against K, one line per model (solid text → image, dashed image → text);
- ``group_bars``: one metric per group (INQUIRE supercategory), a bar per model;
- ``ann_tradeoff``: recall@k against queries/s for each index (one query per call, and batched).

Every text of a figure keeps clear of the others (tick labels, the legend),
whatever the number and length of names: groups are rows with their names
on the left, the ANN points carry markers named in a legend, and log axes
are labelled at 1, 2 and 5 of each decade in short numbers (``tests/eval``
checks the drawn extents).

Names in a figure are user text (run names, INQUIRE supercategories, index
names); each goes through ``plain`` so that a ``$`` is drawn, never read as
the start of matplotlib's math text (where ``$\\frac$`` fails to draw).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: One colour per model, the same in every figure of a report.
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
LINES = ("-", "--", ":", "-.")
#: One marker per index in the ANN figure.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


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
    return _save(recall_figure(curves, title), path)


def recall_figure(curves: Mapping[str, Mapping[str, Mapping[int, float]]], title: str) -> Any:
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
    axes.set_xticks(sorted(ks), spaced_labels(sorted(ks)))
    axes.minorticks_off()
    axes.set_xlabel("K")
    axes.set_ylabel("Recall@K (%)")
    axes.set_ylim(0, 100)
    axes.set_title(plain(title))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def spaced_labels(ks: Sequence[int], slots: int = 12) -> list[str]:
    """A label for each K on a log axis, left empty where it would come closer to another than
    1/``slots`` of the axis; round Ks (1, 2, 5, 10, 20 …) are named first
    (``ks=[1, 2, …, 10, 20, 50, 100]``: 3, 4, 6 … 9 are left blank)."""
    if not ks or min(ks) <= 0:
        return [str(k) for k in ks]
    span = math.log10(max(ks) / min(ks))
    places = {k: math.log10(k) for k in ks}
    named: list[int] = []
    for k in sorted(ks, key=lambda k: (not _round(k), ks.index(k))):
        if all(abs(places[k] - places[n]) >= span / slots for n in named):
            named.append(k)
    return [str(k) if k in named else "" for k in ks]


def _round(k: int) -> bool:
    digits = str(k).rstrip("0")
    return digits in ("1", "2", "5")


def group_bars(
    values: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike[str],
    ylabel: str,
    title: str,
) -> Path:
    """``values``: model → group → value; one row per group (its name on the left, where any
    length fits), a horizontal bar per model in each, the first group on top."""
    return _save(group_figure(values, ylabel, title), path)


def group_figure(values: Mapping[str, Mapping[str, float]], ylabel: str, title: str) -> Any:
    groups = sorted({group for per_model in values.values() for group in per_model})
    models = list(values)
    row = max(0.35, 0.22 * len(models))  # inches per group: a line of text, or a bar per model
    figure, (axes,) = _figure(height=max(3.0, 1.6 + row * len(groups)))
    height = 0.8 / max(1, len(models))
    for number, model in enumerate(models):
        ys = [i + (number - (len(models) - 1) / 2) * height for i in range(len(groups))]
        widths = [values[model].get(group, 0.0) for group in groups]
        axes.barh(ys, widths, height, label=plain(model), color=COLOURS[number % len(COLOURS)])
    axes.set_yticks(range(len(groups)), [plain(g) for g in groups])
    axes.invert_yaxis()
    axes.set_xlabel(plain(ylabel))
    axes.set_title(plain(title))
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def ann_tradeoff(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    title: str = "ANN: recall against speed",
) -> Path:
    """``results``: model → the ANN benchmark's rows (``name``, ``recall``, ``k``, ``single_qps``,
    ``batch_qps``). A colour per model and a marker per index, named in one legend beside the
    plots: no label is written next to a point, where labels of close points would overlap."""
    return _save(ann_figure(results, title), path)


def ann_figure(results: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> Any:
    from matplotlib.lines import Line2D

    figure, axes_pair = _figure(width=11.0, columns=2)
    k = next((row["k"] for rows in results.values() for row in rows), 10)
    names = list(dict.fromkeys(row["name"] for rows in results.values() for row in rows))
    marker = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(names)}
    for axes, column, label in zip(
        axes_pair,
        ("single_qps", "batch_qps"),
        ("one query per call", "all queries in one call"),
        strict=True,
    ):
        speeds = [float(row[column]) for rows in results.values() for row in rows]
        for number, rows in enumerate(results.values()):
            for row in rows:
                axes.scatter(
                    float(row[column]),
                    float(row["recall"]),
                    color=COLOURS[number % len(COLOURS)],
                    marker=marker[row["name"]],
                    s=50,
                    zorder=3,
                )
        _log_axis(axes, speeds)
        axes.set_xlabel(f"queries/s, {label}")
        axes.set_ylabel(f"recall@{k}")
        axes.set_ylim(-0.02, 1.05)
        axes.grid(alpha=0.3)
    handles = [
        Line2D([], [], linestyle="", marker="o", color=COLOURS[n % len(COLOURS)], label=plain(m))
        for n, m in enumerate(results)
    ]
    handles += [
        Line2D([], [], linestyle="", marker=marker[n], color="#555555", label=plain(n))
        for n in names
    ]
    figure.legend(handles=handles, loc="outside right upper", fontsize="small")
    figure.suptitle(plain(title))
    return figure


def _log_axis(axes: Any, values: Sequence[float]) -> None:
    """A log x axis from the 1-2-5 number below the values to the one above, labelled at 1, 2 and
    5 of each decade (at 1 only over more than three decades) in short numbers (2k, 50k, 1M):
    at least two labels, and never so many that they touch."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    steps = [m * 10.0**e for e in range(-3, 13) for m in (1, 2, 5)]
    positive = [v for v in values if v > 0] or [1.0]
    low = max([s for s in steps if s <= min(positive) * 0.95] or [steps[0]])
    high = min([s for s in steps if s >= max(positive) * 1.05] or [steps[-1]])
    axes.set_xscale("log")
    axes.set_xlim(low, high)
    subs = (1.0, 2.0, 5.0) if math.log10(high / low) <= 3 else (1.0,)
    axes.xaxis.set_major_locator(LogLocator(subs=subs))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: short_number(value)))
    axes.xaxis.set_minor_formatter(NullFormatter())


def short_number(value: float) -> str:
    """1500 → 1.5k, 20000 → 20k, 3000000 → 3M (axis labels)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"
