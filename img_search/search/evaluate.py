"""``python -m img_search.search.evaluate task=retrieval|inquire|ann``: numbers for a paper."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from img_search.cli import pick_device, user_errors_exit
from img_search.command_line import hydra_entry
from img_search.failures import explain_hub_failure

log = logging.getLogger("img_search")
console = Console(width=160)
TASKS = ("retrieval", "inquire", "ann")


def _required(cfg: DictConfig, key: str) -> str:
    value = OmegaConf.select(cfg, key)
    if not value:
        raise ValueError(f"task={cfg.task} needs {key}=<table.parquet>")
    return str(value)


def run_retrieval(cfg: DictConfig) -> dict[str, Any]:
    from img_search.search.evaluation import caption_image_retrieval
    from img_search.search.tables import load_selection

    images = load_selection(_required(cfg, "images"), cfg.model_name, cfg.dataset_name)
    captions = load_selection(
        _required(cfg, "captions"), cfg.model_name or images.model_name, cfg.caption_dataset_name
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
    from img_search.search.evaluation import inquire_rerank, read_inquire_labels
    from img_search.search.query_encoder import encode_text_queries, load_query_encoder
    from img_search.search.tables import load_selection

    images = load_selection(_required(cfg, "images"), cfg.model_name, cfg.dataset_name)
    with explain_hub_failure("inquire.path=<local copy in the Hub layout>"):
        splits = [read_inquire_labels(str(cfg.inquire.path), str(s)) for s in cfg.inquire.splits]
    encoder = load_query_encoder(
        images.model_name,
        images.model_spec,
        images.identity,
        overrides=OmegaConf.to_container(cfg.model_overrides),
        device=pick_device(str(cfg.device)),
        trust_remote_code=bool(cfg.trust_remote_code),
    )
    table = Table(title=f"INQUIRE-Rerank, {images.model_name} ({len(images)} images)")
    results: dict[str, Any] = {"task": "inquire", "model_name": images.model_name, "splits": {}}
    for split, queries in zip(cfg.inquire.splits, splits, strict=True):
        vectors = encode_text_queries(encoder, [q.query for q in queries])
        result = inquire_rerank(str(split), queries, vectors, images, list(cfg.inquire.ap_ks))
        if not table.columns:
            table.add_column("split")
            table.add_column("queries", justify="right")
            for name in result.metrics:
                table.add_column(name, justify="right")
        table.add_row(
            str(split), str(result.queries), *(f"{v:.2f}" for v in result.metrics.values())
        )
        results["splits"][str(split)] = {
            "queries": result.queries,
            "missing_candidates": result.missing_candidates,
            **result.metrics,
            "per_query": result.per_query,
        }
    results["_table"] = table
    return results


def run_ann(cfg: DictConfig) -> dict[str, Any]:
    import numpy as np

    from img_search.search.ann import ann_benchmark, random_unit_vectors, results_table, write_csv
    from img_search.search.tables import load_selection

    ann = cfg.ann
    if ann.table:
        selection = load_selection(str(ann.table), cfg.model_name, cfg.dataset_name)
        vectors, source = selection.vectors, f"{selection.path} ({selection.model_name})"
        default_csv = selection.path.with_name(
            selection.path.name.removesuffix(".parquet") + ".ann_benchmark.csv"
        )
    else:
        r = ann.random
        vectors = random_unit_vectors(
            int(r.count) + int(ann.queries),
            int(r.dim),
            int(r.seed),
            int(r.clusters),
            float(r.spread),
        )
        shape = f"{r.clusters} clusters, spread {r.spread}" if r.clusters else "isotropic"
        source, default_csv = f"random unit vectors ({shape})", Path("ann_benchmark.csv")
    count = min(int(ann.queries), max(1, len(vectors) // 10))
    held_out = np.random.default_rng(0).choice(len(vectors), count, replace=False)
    mask = np.ones(len(vectors), dtype=bool)
    mask[held_out] = False
    indexed, queries = vectors[mask], vectors[held_out]
    results = ann_benchmark(
        indexed,
        queries,
        OmegaConf.to_container(cfg.indexes, resolve=True),
        int(ann.k),
        float(ann.single_seconds),
    )
    csv_path = write_csv(results, cfg.output or default_csv)
    title = (
        f"ANN: {len(indexed):,} × {indexed.shape[1]} from {source}, {len(queries)} held-out queries"
    )
    return {
        "task": "ann",
        "source": source,
        "csv": str(csv_path),
        "results": [r.__dict__ for r in results],
        "_table": results_table(results, title),
    }


RUNNERS = {"retrieval": run_retrieval, "inquire": run_inquire, "ann": run_ann}


@hydra_entry(config_path="pkg://img_search.config.search", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg):
        if cfg.task not in RUNNERS:
            raise ValueError(f"unknown task {cfg.task!r}; choose one of {', '.join(TASKS)}")
        results = RUNNERS[str(cfg.task)](cfg)
        table = results.pop("_table")
        if cfg.output and cfg.task != "ann":
            Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
            Path(cfg.output).write_text(json.dumps(results, indent=2, ensure_ascii=False))
        if cfg.json:
            sys.stdout.write(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        else:
            console.print(table)
            if cfg.task == "ann":
                console.print(f"CSV: {results['csv']}")


if __name__ == "__main__":
    main()
