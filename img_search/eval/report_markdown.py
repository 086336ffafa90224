"""``report.md``: the runs of a report side by side, as markdown tables a paper or a README takes.

Every piece of user text in it (run names, checkpoints, table paths, INQUIRE
supercategories from a CSV, the sources and notes of a references file) goes
through ``md_cell``: a ``|`` would add a cell and shift the numbers under the
wrong run, a newline would end the row, and HTML or a ``[link](...)`` would
be rendered. ``side_by_side`` lines the values up, for this file and for the
table ``img-search report`` prints.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from img_search.eval.references import SOURCES, Source
from img_search.eval.tasks import format_value

if TYPE_CHECKING:
    from img_search.eval.report import Run

#: Metrics where less is better (the others: more).
LOWER_IS_BETTER = ("build_s", "memory_mib")
#: The columns of the main table's lines.
MAIN_KEYS = ("task", "split", "metric")

#: Characters markdown would act on, as text: backslash escapes for its own syntax (``|`` ends a
#: table cell), entities for HTML. ``_`` apart: see ``_EMPHASIS``.
_ESCAPES = str.maketrans(
    {
        **{c: "\\" + c for c in "\\|*`[]~$"},  # $: GitHub's math
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
    }
)
#: An ``_`` that may start or end emphasis: one not between two letters or digits (CommonMark
#: never reads ``text_to_image`` as emphasis, so metric names and paths stay readable as typed).
_EMPHASIS = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
#: A URL shown as a link: http(s) and nothing that would end the ``<...>`` autolink.
_LINKABLE = re.compile(r"https?://[^\s<>]+")


def md_cell(text: object) -> str:
    """``text`` as it reads, inside a markdown table cell (or any line of report.md): markdown and
    HTML escaped, line breaks as ``<br>``, so one value is always one cell."""
    escaped = _EMPHASIS.sub(r"\\_", str(text).translate(_ESCAPES))
    return "<br>".join(escaped.splitlines())


def md_link(url: str) -> str:
    """An http(s) URL as an autolink; anything else as text."""
    return f"<{url}>" if _LINKABLE.fullmatch(url) else md_cell(url)


def markdown(
    runs: Sequence[Run],
    rows: Sequence[dict[str, Any]],
    written: dict[str, Path],
    sources: dict[str, Source] = SOURCES,
) -> str:
    names = [run.name for run in runs]
    overall = [r for r in rows if r["group"] == "all"]
    published = [n for n in names if any(r["run"] == n and r["reference"] != "" for r in overall)]
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Model comparison",
        "",
        f"Written by `img-search report` on {today}.",
        "",
        *markdown_table(
            [(h, False) for h in ("run", "model", "checkpoint", "tables", "tasks")],
            [
                [
                    (text, False)
                    for text in (
                        run.name,
                        run.model_name,
                        run.checkpoint or "",
                        ", ".join(f"{k}: {v}" for k, v in run.tables().items()),
                        ", ".join(run.tasks),
                    )
                ]
                for run in runs
            ],
            keys=5,
        ),
    ]
    if overall:
        lines += [
            "",
            "## Results",
            "",
            "Caption ↔ image R@K in %; AP, nDCG and precision × 100; MRR and recall as fractions. "
            "The best value of each row is in bold"
            + (
                "; *published* columns hold the numbers the sources below report for the same "
                "checkpoint."
                if published
                else "."
            ),
            "",
            *markdown_table(*side_by_side(overall, names, MAIN_KEYS, published), len(MAIN_KEYS)),
        ]
    lines += breakdowns(rows, names)
    lines += figure_lines(written)
    lines += published_lines(rows, sources)
    return "\n".join(lines) + "\n"


def breakdowns(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    """INQUIRE-Fullrank AP by supercategory and by iconic group; the ANN indexes."""
    lines = []
    for group, title in (("supercategory", "supercategory"), ("iconic_group", "iconic group")):
        selected = [
            r for r in rows if r["group"].startswith(f"{group}=") and r["metric"].startswith("AP@")
        ]
        if selected:
            metric = selected[0]["metric"]
            lines += ["", f"## INQUIRE-Fullrank {metric} by {title}", ""]
            shown = [{**r, "group": r["group"].split("=", 1)[1]} for r in selected]
            by = [n for n in names if any(r["run"] == n and r["reference"] != "" for r in shown)]
            lines += markdown_table(*side_by_side(shown, names, ("group",), by), 1)
    ann_rows = [{**r, "index": r["group"].split("=", 1)[1]} for r in rows if r["task"] == "ann"]
    if ann_rows:
        lines += ["", "## ANN indexes against exact search", ""]
        lines += markdown_table(*side_by_side(ann_rows, names, ("index", "metric")), 2)
    return lines


def figure_lines(written: dict[str, Path]) -> list[str]:
    pictures = [(key, path) for key, path in written.items() if path.suffix == ".png"]
    if not pictures:
        return []
    titles = {
        "recall": "Recall@K",
        "supercategory": "INQUIRE-Fullrank AP by supercategory",
        "ann": "ANN recall against queries/s",
    }
    return ["", "## Figures", "", *(f"![{titles[key]}]({path.name})" for key, path in pictures)]


def published_lines(rows: Sequence[dict[str, Any]], sources: dict[str, Source]) -> list[str]:
    """Each source, whether it was used, its link and its note (a user's file: theirs, escaped)."""
    lines = ["", "## Published numbers", ""]
    used = {r["reference_source"] for r in rows if r["reference_source"]}
    for key, source in sources.items():
        state = "used above" if key in used else "nothing here to compare with"
        name = "" if source.name == key else f"{md_cell(source.name)}, "
        lines.append(
            f"- **{md_cell(key)}**: {name}{md_link(source.url)} ({state}). {md_cell(source.note)}."
        )
    lines.append(
        "- Shipped numbers are only those checked against their source "
        "(`img_search/eval/references.py`); numbers given with `references=` are shown as given. "
        "A checkpoint is matched by the Hub id recorded in its table."
    )
    return lines


Cell = tuple[str, bool]  # text, and: best of its row (a value), a published column (a header)


def side_by_side(
    rows: Sequence[dict[str, Any]],
    names: Sequence[str],
    keys: Sequence[str],
    published: Sequence[str] = (),
) -> tuple[list[Cell], list[list[Cell]]]:
    """Headers and lines of a table: one line per distinct ``keys``, a column per run, then a
    *published* column per run in ``published`` (its header: the run's name, marked); each run's
    best value of a line is marked."""
    lines: dict[tuple, tuple[str, dict[str, float], dict[str, float]]] = {}
    for row in rows:  # per line: its metric, each run's value, each run's published value
        _, values, references = lines.setdefault(
            tuple(row[k] for k in keys), (row["metric"], {}, {})
        )
        if row["value"] is not None:  # a published number apart has no value of ours
            values[row["run"]] = row["value"]
        if row["reference"] != "":
            references[row["run"]] = row["reference"]
    headers = [*((h, False) for h in (*keys, *names)), *((name, True) for name in published)]
    body = []
    for key, (metric, values, references) in lines.items():
        present = [values[name] for name in names if name in values]
        best = (min if metric in LOWER_IS_BETTER else max)(present) if len(present) > 1 else None
        best_text = None if best is None else format_value(metric, best)
        cells: list[Cell] = [(str(k), False) for k in key]
        for name in names:  # equal as shown: all bold
            text = format_value(metric, values[name]) if name in values else ""
            cells.append((text, name in values and text == best_text))
        for name in published:
            text = format_value(metric, references[name]) if name in references else ""
            cells.append((text, False))
        body.append(cells)
    return headers, body


def markdown_table(headers: Sequence[Cell], body: Sequence[Sequence[Cell]], keys: int) -> list[str]:
    """A markdown table of plain texts (``keys`` left-aligned columns, then numbers), every header
    and cell escaped by ``md_cell``; a value marked best is bold, a published column says so."""
    names = (md_cell(h) + (": *published*" if published else "") for h, published in headers)
    out = [
        "| " + " | ".join(names) + " |",
        "|" + "---|" * keys + "---:|" * (len(headers) - keys),
    ]
    for cells in body:
        texts = (f"**{md_cell(t)}**" if best and t else md_cell(t) for t, best in cells)
        out.append("| " + " | ".join(texts) + " |")
    return out
