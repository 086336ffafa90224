"""``img-search report``: several models over several tasks, into one folder a paper can use.

For each run (a model's tables, with options of its own) and each of its
tasks, the task runs through the same runner as ``img-search evaluate``
(``eval.tasks.RUNNERS``); the results become one row per run × task ×
metric, written as ``results.csv`` and ``results.json``, a markdown table of
the runs side by side (``report.md``: the best of each row in bold, published
numbers of known checkpoints next to them, ``eval.references``) and PNG
figures (``eval.figures``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.table import Table
from rich.text import Text

from img_search.console import stdout_console
from img_search.eval.csv_files import write_csv_rows
from img_search.eval.references import (
    REFERENCES,
    SOURCES,
    Reference,
    Source,
    published_apart,
    read_references,
    reference_for,
)
from img_search.eval.report_markdown import MAIN_KEYS, markdown, side_by_side
from img_search.eval.tasks import RUNNERS

console = stdout_console()

#: Keys of the report's own config, not options of the runs.
REPORT_KEYS = ("runs", "task", "output", "json", "references")
#: Keys a run may set besides the evaluate options.
RUN_KEYS = ("name", "task")
#: What each task needs, as (config key, what to give).
NEEDS = {
    "retrieval": (("images", "<table>"), ("captions", "<caption table>")),
    "inquire": (("images", "<table>"),),
    "inquire_fullrank": (
        ("images", "<table>"),
        ("inquire_fullrank.queries", "<queries csv>"),
        ("inquire_fullrank.annotations", "<annotations csv>"),
    ),
    "ann": (("ann.table", "<table>"),),
}
COLUMNS = (
    "run",
    "model_name",
    "checkpoint",
    "task",
    "split",
    "group",
    "metric",
    "value",
    "reference",
    "reference_source",
)
FIGURES = {
    "recall": "recall_at_k.png",
    "supercategory": "inquire_fullrank_supercategory.png",
    "ann": "ann_recall_vs_qps.png",
}


@dataclass
class Run:
    name: str
    cfg: DictConfig  # the evaluate options of this run (task set per task)
    tasks: list[str]
    model_name: str
    checkpoint: str | None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tables(self) -> dict[str, str]:
        keys = {"images": self.cfg.images, "captions": self.cfg.captions}
        return {name: str(value) for name, value in keys.items() if value}


# -- runs -----------------------------------------------------------------------------------


def runs_of(cfg: DictConfig) -> list[Run]:
    """The runs of the config, each with the evaluate options it overrides and its tasks, checked
    before anything runs: an unknown key or task, or a task without its inputs, is one error."""
    from img_search.store.selection import selection_info

    if OmegaConf.is_missing(cfg, "runs") or not OmegaConf.is_list(cfg.runs) or not cfg.runs:
        raise ValueError(
            "give the runs to compare as a list: runs=[{images: <table>, captions: <table>}, ...]"
        )
    base = {
        k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in REPORT_KEYS
    }
    runs: list[Run] = []
    for index, entry in enumerate(OmegaConf.to_container(cfg.runs, resolve=True)):
        if not isinstance(entry, dict):
            raise ValueError(
                f"runs[{index}] is {entry!r}: give a mapping, e.g. {{images: t.parquet}}"
            )
        unknown = sorted(set(entry) - set(base) - set(RUN_KEYS))
        if unknown:
            raise ValueError(
                f"runs[{index}]: unknown key {', '.join(unknown)}; a run takes "
                f"{', '.join(RUN_KEYS)} and the options of img-search evaluate "
                f"({', '.join(sorted(base))})"
            )
        options = OmegaConf.merge(base, {k: v for k, v in entry.items() if k not in RUN_KEYS})
        options.output, options.plot = None, False
        if not options.ann.table:
            options.ann.table = options.images or options.captions
        tasks = entry.get("task", cfg.task)
        tasks = [str(tasks)] if isinstance(tasks, str) else [str(t) for t in tasks]
        table = options.images or options.captions or options.ann.table
        if not table:
            raise ValueError(f"runs[{index}] names no table: give images=... or captions=...")
        info = selection_info(str(table), options.model_name, options.dataset_name)
        name = str(entry.get("name") or info.model_name)
        for task in tasks:
            if task not in RUNNERS:
                raise ValueError(f"unknown task {task!r}; choose among {', '.join(RUNNERS)}")
            for key, what in NEEDS[task]:
                if not OmegaConf.select(options, key):
                    raise ValueError(f"run {name}: task {task} needs {key}={what}")
        runs.append(Run(name, options, tasks, info.model_name, info.identity.get("checkpoint")))
    seen: dict[str, int] = {}
    for run in runs:  # two runs of one model name: told apart by their tables
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in runs:
        if seen[run.name] > 1:
            run.name = f"{run.name} ({Path(next(iter(run.tables().values()))).name})"
    if len({run.name for run in runs}) < len(runs):
        raise ValueError("two runs have the same name and tables: give each a name=...")
    return runs


def run_all(runs: Sequence[Run], progress: bool = True) -> None:
    """Every task of every run, in order, with a bar over them (the tasks' own bars nest in it)."""
    from img_search.console import make_progress

    steps = sum(len(run.tasks) for run in runs)
    with make_progress(progress) as bar:
        overall = bar.add_task("report", total=steps, rate="")
        for run in runs:
            for task in run.tasks:
                bar.update(overall, description=f"report: {run.name} × {task}")
                cfg = OmegaConf.merge(run.cfg, {"task": task})
                results = RUNNERS[task](cfg)
                results.pop("_table", None)
                run.results[task] = results
                bar.update(overall, advance=1)
        bar.update(overall, description="report")


# -- rows -----------------------------------------------------------------------------------


def rows_of(run: Run, references: Sequence[Reference] = REFERENCES) -> list[dict[str, Any]]:
    """One row per task × metric of a run; INQUIRE splits, breakdowns and ANN indexes in ``split``
    and ``group``; the published value of the run's checkpoint from ``references``, if any."""
    from img_search.eval.fullrank import QUERY_FIELDS

    rows = []

    def add(
        task: str, metric: str, value: float | None, split: str = "", group: str = "all"
    ) -> None:
        reference = reference_for(run.checkpoint, task, metric, split, references, group)
        rows.append(
            {
                "run": run.name,
                "model_name": run.model_name,
                "checkpoint": run.checkpoint or "",
                "task": task,
                "split": split,
                "group": group,
                "metric": metric,
                "value": None if value is None else float(value),
                "reference": "" if reference is None else reference.value,
                "reference_source": "" if reference is None else reference.source,
            }
        )

    for task, results in run.results.items():
        if task == "retrieval":
            for metric, value in results.items():
                if "_R@" in metric:
                    add(task, metric, value)
        elif task == "inquire":
            for split, values in results["splits"].items():
                for metric, value in values.items():
                    if metric not in ("queries", "missing_candidates", "per_query"):
                        add(task, metric, value, split=split)
        elif task == "inquire_fullrank":
            names = [n for n in results["per_query"][0] if n not in QUERY_FIELDS]
            for metric in names:
                add(task, metric, results[metric])
            for group in ("supercategory", "iconic_group"):
                for value_name, means in results[f"by_{group}"].items():
                    for metric in names:
                        add(task, metric, means[metric], group=f"{group}={value_name}")
        elif task == "ann":
            for result in results["results"]:
                for metric in ("recall", "build_s", "batch_qps", "single_qps", "memory_mib"):
                    name = f"recall@{result['k']}" if metric == "recall" else metric
                    add(task, name, result[metric], group=f"index={result['name']}")
    ours = {(r["task"], r["metric"], r["split"], r["group"]) for r in rows}
    for apart in published_apart(run.checkpoint, run.results, ours, references):
        add(apart.task, apart.metric, None, apart.split)  # a line of its own, no value of ours
    return rows


# -- the folder -----------------------------------------------------------------------------


def write_report(
    runs: Sequence[Run],
    rows: Sequence[dict[str, Any]],
    folder: str | os.PathLike[str],
    sources: dict[str, Source] = SOURCES,
) -> dict[str, Path]:
    """results.csv, results.json, the figures and report.md in ``folder``; returns what was written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {"csv": folder / "results.csv", "json": folder / "results.json"}
    write_csv_rows(written["csv"], COLUMNS, rows)
    written["json"].write_text(
        json.dumps(
            {
                "rows": rows,
                "runs": [
                    {
                        "name": run.name,
                        "model_name": run.model_name,
                        "checkpoint": run.checkpoint,
                        "tables": run.tables(),
                        "results": run.results,
                    }
                    for run in runs
                ],
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    written.update(draw_figures(runs, folder))
    written["markdown"] = folder / "report.md"
    written["markdown"].write_text(markdown(runs, rows, written, sources), encoding="utf-8")
    return written


def draw_figures(runs: Sequence[Run], folder: Path) -> dict[str, Path]:
    from img_search.eval import figures

    drawn = {}
    curves = {
        run.name: {
            direction: {
                int(key.rsplit("@", 1)[1]): value
                for key, value in run.results["retrieval"].items()
                if key.startswith(prefix + "_R@")
            }
            for prefix, direction in (
                ("text_to_image", "text → image"),
                ("image_to_text", "image → text"),
            )
        }
        for run in runs
        if "retrieval" in run.results
    }
    if curves:
        drawn["recall"] = figures.recall_curves(
            curves, folder / FIGURES["recall"], "Caption ↔ image Recall@K"
        )
    fullrank = {
        run.name: run.results["inquire_fullrank"]
        for run in runs
        if "inquire_fullrank" in run.results
    }
    if fullrank:
        k = next(iter(fullrank.values()))["k"]
        drawn["supercategory"] = figures.group_bars(
            {
                name: {
                    group: means[f"AP@{r['k']}"] for group, means in r["by_supercategory"].items()
                }
                for name, r in fullrank.items()
            },
            folder / FIGURES["supercategory"],
            f"AP@{k}",
            f"INQUIRE-Fullrank AP@{k} by supercategory",
        )
    ann = {run.name: run.results["ann"]["results"] for run in runs if "ann" in run.results}
    if ann:
        drawn["ann"] = figures.ann_tradeoff(ann, folder / FIGURES["ann"])
    return drawn


def published_numbers(
    path: str | os.PathLike[str] | None,
) -> tuple[dict[str, Source], tuple[Reference, ...]]:
    """The shipped references, and before them those of the user's file (``references=<csv>``):
    a number the user gives for a checkpoint and metric is the one shown."""
    if not path:
        return SOURCES, REFERENCES
    sources, references = read_references(path, tuple(RUNNERS))
    taken = sorted(set(sources) & set(SOURCES))
    if taken:
        raise ValueError(
            f"references={path}: source {', '.join(taken)} is the name of a shipped source "
            "(eval/references.py); name yours another way"
        )
    return {**sources, **SOURCES}, references + REFERENCES


def report_command(cfg: DictConfig) -> None:
    """``img-search report``: the runs' tasks, then the folder; prints the main table and what was written."""
    if OmegaConf.is_missing(cfg, "output") or not cfg.output:
        raise ValueError("give the folder to write: output=<folder>")
    sources, references = published_numbers(cfg.get("references"))
    runs = runs_of(cfg)
    run_all(runs)
    rows = [row for run in runs for row in rows_of(run, references)]
    written = write_report(runs, rows, str(cfg.output), sources)
    if cfg.json:
        sys.stdout.write(written["json"].read_text() + "\n")
        return
    names = [run.name for run in runs]
    overall = [r for r in rows if r["group"] == "all"]
    if overall:
        keys: Sequence[str] = MAIN_KEYS
        headers, body = side_by_side(overall, names, keys)
    else:  # ANN alone
        keys = ("index", "metric")
        indexes = [{**r, "index": r["group"].split("=", 1)[1]} for r in rows if r["task"] == "ann"]
        headers, body = side_by_side(indexes, names, keys)
    summary = Table(title=f"{len(runs)} runs, the best in bold (report.md: every table)")
    for number, (header, _) in enumerate(headers):
        summary.add_column(header, justify="left" if number < len(keys) else "right")
    for cells in body:
        summary.add_row(*(Text(text, style="bold" if best else "") for text, best in cells))
    console.print(summary)
    console.print(f"written to {cfg.output}: " + ", ".join(p.name for p in written.values()))
