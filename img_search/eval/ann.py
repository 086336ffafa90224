"""ANN benchmark: for each index, recall@k against exact search, build time, queries/s and memory.

Queries/s is measured two ways, because they answer different questions:
``batch_qps`` sends all queries in one call (offline evaluation, where BLAS
makes exact search fast), ``single_qps`` one query per call (an interactive
search box, where exact search scans every vector for each query).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from img_search.search.indexes import FlatIndex, VectorIndex, index_specs, make_index

log = logging.getLogger("img_search")


@dataclass
class AnnResult:
    name: str
    kind: str
    params: str
    rows: int
    dim: int
    queries: int
    k: int
    recall: float
    build_s: float
    batch_qps: float
    single_qps: float
    memory_mib: float


def recall_against(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k that the index returned in its top-k.

    Where fewer than k vectors are indexed, the true top-k is all of them
    (``truth`` is padded with −1), and recall@k the share of those found.
    """
    shares = []
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        shares.append(len(np.intersect1d(f[f >= 0], t)) / max(1, len(t)))
    return float(np.mean(shares))


def _single_qps(index: VectorIndex, queries: np.ndarray, k: int, seconds: float) -> float:
    """One query per call, for about ``seconds`` (at least 20 queries)."""
    done, started = 0, time.perf_counter()
    while done < len(queries):
        index.search(queries[done : done + 1], k)
        done += 1
        if done >= 20 and time.perf_counter() - started > seconds:
            break
    return done / (time.perf_counter() - started)


def measure(
    name: str,
    index: VectorIndex,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray | None,
    k: int,
    single_seconds: float,
) -> tuple[AnnResult, np.ndarray]:
    started = time.perf_counter()
    index.add(vectors)
    build_s = time.perf_counter() - started
    index.search(queries[: min(8, len(queries))], k)  # warm-up
    started = time.perf_counter()
    _, found = index.search(queries, k)
    batch_qps = len(queries) / (time.perf_counter() - started)
    result = AnnResult(
        name=name,
        kind=index.kind,
        params=" ".join(
            f"{key}={value}"
            for key, value in sorted(index.params.items())
            if value not in (None, {})
        ),
        rows=len(vectors),
        dim=vectors.shape[1],
        queries=len(queries),
        k=k,
        recall=1.0 if truth is None else recall_against(found, truth),
        build_s=build_s,
        batch_qps=batch_qps,
        single_qps=_single_qps(index, queries, k, single_seconds),
        memory_mib=index.nbytes() / 2**20,
    )
    return result, found


def ann_benchmark(
    vectors: np.ndarray,
    queries: np.ndarray,
    specs: Mapping[str, Mapping[str, Any]],
    k: int = 10,
    single_seconds: float = 2.0,
    progress: bool = False,
) -> list[AnnResult]:
    """Exact search first (the reference), then every configured index over the same queries.

    ``progress`` shows a bar over the indexes, naming the one being built and timed.
    """
    from img_search.console import make_progress

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if k > len(vectors):  # recall@k as asked: the true top k is every vector
        log.info(
            "ann: %d vectors indexed, fewer than k=%d: recall@%d counts all %d",
            len(vectors),
            k,
            k,
            len(vectors),
        )
    others = {n: spec for n, spec in index_specs(specs).items() if spec[0] != "flat"}
    with make_progress(progress) as bar:
        task = bar.add_task("ann: exact", total=1 + len(others), rate="")
        exact, truth = measure(
            "exact", FlatIndex(vectors.shape[1]), vectors, queries, None, k, single_seconds
        )
        results = [exact]
        for name, (kind, params) in others.items():  # flat: that is the reference itself
            bar.update(task, advance=1, description=f"ann: {name}")
            index = make_index(kind, vectors.shape[1], **params)
            try:
                results.append(measure(name, index, vectors, queries, truth, k, single_seconds)[0])
            finally:
                index.close()  # milvus: the connection, and a scratch Milvus Lite file
        bar.update(task, advance=1, description="ann benchmark")
    return results


def results_table(results: list[AnnResult], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in (
        "index",
        "params",
        f"recall@{results[0].k}",
        "build s",
        "batch q/s",
        "single q/s",
        "× exact (single)",
        "MiB",
    ):
        table.add_column(column, justify="left" if column in ("index", "params") else "right")
    exact_single = results[0].single_qps
    for r in results:
        table.add_row(
            r.name,
            r.params,
            f"{r.recall:.4f}",
            f"{r.build_s:.2f}",
            f"{r.batch_qps:,.0f}",
            f"{r.single_qps:,.0f}",
            f"{r.single_qps / exact_single:.1f}",
            f"{r.memory_mib:.1f}",
        )
    return table


def random_unit_vectors(
    count: int, dim: int, seed: int = 0, clusters: int = 0, spread: float = 1.0
) -> np.ndarray:
    """Random unit vectors: isotropic (``clusters=0``) or around ``clusters`` random centres.

    Real embeddings are clustered (a few thousand concepts, each a tight
    cone), which is what graph and cell indexes exploit; isotropic vectors in
    hundreds of dimensions have no near neighbours at all and are the
    worst case for every ANN method.
    """
    rng = np.random.default_rng(seed)
    if clusters > 0:
        centres = rng.standard_normal((clusters, dim))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        vectors = centres[rng.integers(0, clusters, count)]
        vectors = vectors + spread * rng.standard_normal((count, dim)) / np.sqrt(dim)
    else:
        vectors = rng.standard_normal((count, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)
