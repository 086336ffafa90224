"""The tasks of ``img-search evaluate`` (``RUNNERS``), and what the command prints and writes.

Each runner takes the composed ``evaluate`` config and returns a JSON-ready
dict (``"_table"``: the rich table printed for it); the Python API
(``open_table(...).evaluate``) and the comparison report (``eval.report``)
call the same runners.

- ``retrieval``: caption ↔ image Recall@K (CLIP_benchmark), ``eval.evaluation``;
- ``inquire``: INQUIRE-Rerank, AP / nDCG / MRR over each query's 100 candidates, ``eval.evaluation``;
- ``inquire_fullrank``: INQUIRE-Fullrank, AP@k / nDCG@k / MRR / precision@k / recall@k
  of each query's top k over the whole table, ``eval.fullrank``;
- ``ann``: every configured index against exact search, ``eval.ann``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from img_search.console import stdout_console
from img_search.eval.csv_files import write_csv_rows
from img_search.failures import explain_hub_failure

if TYPE_CHECKING:
    from img_search.embedding import Encoder
    from img_search.store.selection import SelectionInfo, TableSelection

log = logging.getLogger("img_search")
console = stdout_console()

#: Query texts per forward pass of the text tower.
TEXT_BATCH = 64


def required(cfg: DictConfig, key: str, what: str = "<table.parquet>") -> str:
    value = OmegaConf.select(cfg, key)
    if not value:
        raise ValueError(f"task={cfg.task} needs {key}={what}")
    return str(value)


def query_encoder(cfg: DictConfig, info: SelectionInfo | TableSelection) -> Encoder:
    """The text side of the model that made the table's vectors (``table_encoder.encoder_of``:
    checked against its recorded identity); ``encode(texts, side="text")`` gives the queries."""
    from img_search.search.table_encoder import encoder_of, require_side

    encoder = encoder_of(
        info,
        overrides=OmegaConf.to_container(cfg.model_overrides),
        device=str(cfg.device),
        trust_remote_code=bool(cfg.trust_remote_code),
    )
    require_side(encoder, "text")
    return encoder


# -- the tasks ------------------------------------------------------------------------------


def run_retrieval(cfg: DictConfig) -> dict[str, Any]:
    from img_search.eval.evaluation import caption_image_retrieval
    from img_search.store.selection import load_selection

    images = load_selection(required(cfg, "images"), cfg.model_name, cfg.dataset_name)
    captions = load_selection(
        required(cfg, "captions"), cfg.model_name or images.model_name, cfg.caption_dataset_name
    )
    result = caption_image_retrieval(images, captions, [int(k) for k in cfg.ks])
    table = Table(
        title=f"{images.model_name}: {captions.dataset_name} captions ↔ {images.dataset_name} "
        f"images ({result.captions} captions, {result.images} images)"
    )
    table.add_column("direction")
    for k in result.text_to_image:
        table.add_column(f"R@{k}", justify="right")
    table.add_row("text → image", *(f"{100 * v:.2f}" for v in result.text_to_image.values()))
    table.add_row("image → text", *(f"{100 * v:.2f}" for v in result.image_to_text.values()))
    return {
        "task": "retrieval",
        "model_name": images.model_name,
        "images": str(images.path),
        "captions": str(captions.path),
        **result.as_dict(),
        "_table": table,
    }


def run_inquire(cfg: DictConfig) -> dict[str, Any]:
    from img_search.eval.evaluation import inquire_rerank, read_inquire_labels
    from img_search.store.selection import load_selection

    images = load_selection(required(cfg, "images"), cfg.model_name, cfg.dataset_name)
    with explain_hub_failure("inquire.path=<local copy in the Hub layout>"):
        splits = [read_inquire_labels(str(cfg.inquire.path), str(s)) for s in cfg.inquire.splits]
    encoder = query_encoder(cfg, images)
    table = Table(title=f"INQUIRE-Rerank, {images.model_name} ({len(images)} images)")
    results: dict[str, Any] = {"task": "inquire", "model_name": images.model_name, "splits": {}}
    for split, queries in zip(cfg.inquire.splits, splits, strict=True):
        texts = [q.query for q in queries]
        vectors = encoder.encode(texts, side="text", batch_size=TEXT_BATCH).vectors
        result = inquire_rerank(str(split), queries, vectors, images, list(cfg.inquire.ap_ks))
        if not table.columns:
            table.add_column("split")
            table.add_column("queries", justify="right")
            for name in result.metrics:
                table.add_column(name, justify="right")
        table.add_row(
            str(split),
            str(result.queries),
            *(format_value(n, v) for n, v in result.metrics.items()),
        )
        results["splits"][str(split)] = {
            "queries": result.queries,
            "missing_candidates": result.missing_candidates,
            **result.metrics,
            "per_query": result.per_query,
        }
    results["_table"] = table
    return results


def run_inquire_fullrank(cfg: DictConfig) -> dict[str, Any]:
    from img_search.eval.fullrank import inquire_fullrank, read_queries
    from img_search.store.selection import selection_info

    options = cfg.inquire_fullrank
    info = selection_info(required(cfg, "images"), cfg.model_name, cfg.dataset_name)
    queries_file = required(cfg, "inquire_fullrank.queries", "<inquire_queries_test.csv>")
    annotations_file = required(cfg, "inquire_fullrank.annotations", "<inquire_annotations.csv>")
    k = int(options.k)
    if k < 1:
        raise ValueError(f"inquire_fullrank.k must be at least 1, got {k}")
    queries = read_queries(queries_file, annotations_file)
    texts = [q.text for q in queries]
    vectors = query_encoder(cfg, info).encode(texts, side="text", batch_size=TEXT_BATCH).vectors
    result = inquire_fullrank(
        info.path, info.model_name, info.dataset_name, queries, vectors, k, progress=True
    )
    table = Table(
        title=f"INQUIRE-Fullrank, {info.model_name}: top {k} of {result.rows_searched:,} images, "
        f"{len(result.per_query)} queries",
        caption=f"annotated (query, image) pairs: {result.positives:,}, in the table "
        f"{result.positives_in_table:,}, missing {result.positives_missing:,}",
    )
    table.add_column("queries")
    table.add_column("n", justify="right")
    for name in result.metrics:
        table.add_column(name, justify="right")
    table.add_row("all", str(len(result.per_query)), *_formatted(result.metrics))
    for group, values in result.groups.items():
        for value, means in values.items():
            metrics = {n: v for n, v in means.items() if n != "queries"}
            table.add_row(f"{group}: {value}", str(means["queries"]), *_formatted(metrics))
    return {
        "task": "inquire_fullrank",
        "model_name": info.model_name,
        "images": str(info.path),
        "queries_file": queries_file,
        "annotations_file": annotations_file,
        "k": k,
        "queries": len(result.per_query),
        "rows_searched": result.rows_searched,
        "positives": result.positives,
        "positives_in_table": result.positives_in_table,
        "positives_missing": result.positives_missing,
        "left_out_queries": result.left_out_queries,
        **result.metrics,
        **{f"by_{group}": values for group, values in result.groups.items()},
        "per_query": result.per_query,
        "_table": table,
    }


def run_ann(cfg: DictConfig) -> dict[str, Any]:
    import numpy as np

    from img_search.eval.ann import ann_benchmark, random_unit_vectors, results_table
    from img_search.store.selection import load_selection

    ann = cfg.ann
    if ann.table:  # up to ann.queries of its rows, at most 10%, held out as queries
        selection = load_selection(str(ann.table), cfg.model_name, cfg.dataset_name)
        vectors, source = selection.vectors, f"{selection.path} ({selection.model_name})"
        label = selection.model_name
        count = min(int(ann.queries), max(1, len(vectors) // 10))
        held_out = np.random.default_rng(0).choice(len(vectors), count, replace=False)
        mask = np.ones(len(vectors), dtype=bool)
        mask[held_out] = False
        indexed, queries = vectors[mask], vectors[held_out]
    else:  # ann.random.count vectors indexed, and ann.queries more of the same kind as queries
        r = ann.random
        vectors = random_unit_vectors(
            int(r.count) + int(ann.queries),
            int(r.dim),
            int(r.seed),
            int(r.clusters),
            float(r.spread),
        )
        shape = f"{r.clusters} clusters, spread {r.spread}" if r.clusters else "isotropic"
        source = label = f"random unit vectors ({shape})"
        indexed, queries = vectors[: int(r.count)], vectors[int(r.count) :]
    results = ann_benchmark(
        indexed,
        queries,
        OmegaConf.to_container(cfg.indexes, resolve=True),
        int(ann.k),
        float(ann.single_seconds),
        progress=True,
    )
    title = (
        f"ANN: {len(indexed):,} × {indexed.shape[1]} from {source}, {len(queries)} "
        f"{'held-out ' if ann.table else ''}queries"
    )
    out: dict[str, Any] = {
        "task": "ann",
        "source": source,
        "results": [r.__dict__ for r in results],
        "_table": results_table(results, title),
    }
    figure = plot_path(cfg)
    if figure is not None:
        from img_search.eval.figures import ann_tradeoff

        out["figure"] = str(ann_tradeoff({label: out["results"]}, figure, title))
    return out


def plot_path(cfg: DictConfig) -> Path | None:
    """``plot=true``: the figure next to ``output`` (else ./ann_benchmark.png); ``plot=<file.png>``: there."""
    plot = cfg.get("plot")
    if plot in (None, False, "false"):
        return None
    if plot not in (True, "true"):
        return Path(str(plot))
    if cfg.output:
        return Path(str(cfg.output)).with_suffix(".png")
    return Path("ann_benchmark.png")


RUNNERS: dict[str, Callable[[DictConfig], dict[str, Any]]] = {
    "retrieval": run_retrieval,
    "inquire": run_inquire,
    "inquire_fullrank": run_inquire_fullrank,
    "ann": run_ann,
}


# -- output ---------------------------------------------------------------------------------


def format_value(metric: str, value: float) -> str:
    """A metric as the tables show it: R@K in %, AP / nDCG / precision already × 100, MRR and
    recall as fractions, speeds, seconds and MiB."""
    if "_R@" in metric:  # caption ↔ image Recall@K, a fraction
        return f"{100 * value:.2f}"
    if metric in ("MRR", "recall") or metric.startswith("recall@"):
        return f"{value:.4f}"
    if metric.endswith("qps"):
        return f"{value:,.0f}"
    if metric == "memory_mib":
        return f"{value:.1f}"
    return f"{value:.2f}"


def _formatted(metrics: dict[str, float]) -> list[str]:
    return [format_value(name, value) for name, value in metrics.items()]


def csv_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One CSV row per query (inquire, inquire_fullrank), per index (ann), or the one row of retrieval."""
    task = results["task"]
    if task == "inquire":
        return [
            {"split": split, **row}
            for split, values in results["splits"].items()
            for row in values["per_query"]
        ]
    if task == "inquire_fullrank":
        return list(results["per_query"])
    if task == "ann":
        return list(results["results"])
    return [{k: v for k, v in results.items() if not isinstance(v, (dict, list))}]


def write_results(results: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """``.csv``: the task's rows (``csv_rows``); anything else: the JSON that ``json=true`` prints."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".csv":
        path.write_text(json.dumps(results, indent=2, ensure_ascii=False))
        return path
    rows = csv_rows(results)
    return write_csv_rows(path, list(dict.fromkeys(name for row in rows for name in row)), rows)


def evaluate_command(cfg: DictConfig) -> None:
    """``img-search evaluate``: run the task, write ``output=`` if given, print a table or JSON."""
    if cfg.task not in RUNNERS:
        raise ValueError(f"unknown task {cfg.task!r}; choose one of {', '.join(RUNNERS)}")
    results = RUNNERS[str(cfg.task)](cfg)
    table = results.pop("_table")
    written = write_results(results, cfg.output) if cfg.output else None
    if cfg.json:
        sys.stdout.write(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        return
    console.print(table)
    if written is not None:
        console.print(f"results: {written}")
    if results.get("figure"):
        console.print(f"figure: {results['figure']}")
