"""Exact top-k streamed over a float16 table: peak memory against the table's size, queries/s, equality.

    python benchmarks/exact_topk.py                      # 2,000,000 x 768, 250 queries, k=50
    python benchmarks/exact_topk.py --rows 200000        # a quick check

A benchmark, not a test (nothing asserts). What it runs:

  1. prepare: ``--rows`` random unit vectors of ``--dim`` (normal draws,
     normalised) written as a float16 folder table under ``--work`` with the
     store's own writer, ``--part-rows`` rows a part file, ``--chunk-rows`` at
     a time (generating holds one chunk); kept, and reused when its recorded
     rows, dim and seed match;
  2. search: a child process (this script with ``--child``) runs
     ``img_search.search.exact.exact_top_k`` for ``--queries`` random unit
     queries at ``--k`` over the whole table, with the default block of
     16 MiB of vectors. Its peak RSS is its own high-water mark (VmHWM);
     this process also samples the child's RSS and its anonymous part (RSS
     less file-backed pages) every 50 ms;
  3. check: the same search over the first ``--check-rows`` rows only
     (``max_rows``), here, against numpy on those rows read into one float32
     matrix: ``np.argsort(-(queries @ matrix.T), kind="stable")[:, :k]``.

It prints the sizes (table on disk, the float16 and float32 matrices), the
child's peak RSS against them, seconds, queries/s and rows/s, and the
equality of the check: queries whose top k is identical (rows in the same
order), queries whose top-k set is identical, and the largest difference
between a streamed score and numpy's score of the same row. BLAS sums a dot
product in an order that depends on the shape of the product, so the block
scores and the one-matrix scores may differ in their last bit and swap rows
whose scores are that close; the last line says whether every difference is
within the rounding bound of a float32 dot product (dim x 2^-24 for unit vectors).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from memory import sampled

from img_search.search.exact import exact_top_k
from img_search.store import open_table, read_metadata
from img_search.store import schema as S
from img_search.store.reader import embedding_matrix
from img_search.testing.tables import write_embedding_table

MODEL, DATASET = "bench", "random"
MIB = 2**20


def unit_vectors(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def prepare(path: Path, rows: int, dim: int, part_rows: int, chunk_rows: int) -> Path:
    """The float16 folder table of ``rows`` random unit vectors; reused when it is already there."""
    recorded = {"rows": rows, "dim": dim, "seed": 0}
    try:
        if read_metadata(path).get("benchmark") == recorded:
            return path
    except (OSError, ValueError):
        pass
    if path.exists():
        import shutil

        shutil.rmtree(path)
    rng = np.random.default_rng(0)

    def chunks(first: int, last: int):
        for start in range(first, last, chunk_rows):
            stop = min(start + chunk_rows, last)
            ids = [f"train/{i // 1000:05d}/{i:08d}.jpg" for i in range(start, stop)]
            yield ids, unit_vectors(rng, stop - start, dim)

    parts = (
        (MODEL, DATASET, chunks(first, min(first + part_rows, rows)))
        for first in range(0, rows, part_rows)
    )
    started = time.perf_counter()
    write_embedding_table(path, parts, output_dtype="float16", metadata={"benchmark": recorded})
    print(f"prepared {rows:,} x {dim} float16 in {time.perf_counter() - started:.1f} s: {path}")
    return path


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def child(table: str, queries_file: str, k: int, result_file: str) -> None:
    """The measured search; prints one JSON line (seconds, RSS after imports, peak RSS)."""
    queries = np.load(queries_file)
    baseline = psutil.Process().memory_info().rss
    started = time.perf_counter()
    found = exact_top_k(table, queries, k, progress=True)
    seconds = time.perf_counter() - started
    np.savez(result_file, rows=found.rows, scores=found.scores)
    print(
        json.dumps(
            {"seconds": seconds, "baseline": baseline, "peak": peak_rss(), "rows": found.scanned}
        )
    )


def peak_rss() -> int:
    """This process's peak RSS since it started its program (Linux VmHWM).

    Not ``ru_maxrss``: that also counts what the process held before ``exec``,
    as a fork of this script's parent with all its memory.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def check(table: Path, queries: np.ndarray, k: int, rows: int) -> None:
    """Streamed over the first ``rows`` rows vs numpy's argsort over them held in memory."""
    found = exact_top_k(table, queries, k, max_rows=rows)
    head = open_table(table).head(rows, columns=[S.EMBEDDING])
    scores = queries @ embedding_matrix(head.column(S.EMBEDDING)).T
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    same_order = (found.rows == expected).all(axis=1)
    same_set = np.array([set(a) == set(b) for a, b in zip(found.rows, expected, strict=True)])
    numpy_scores_of_found = np.take_along_axis(scores, found.rows, axis=1)
    numpy_scores_at_rank = np.take_along_axis(scores, expected, axis=1)
    largest = float(np.abs(found.scores - numpy_scores_of_found).max())
    # A swap of near-ties moves a row by one rank at most, to a place whose numpy score is as close.
    swap = float(np.abs(numpy_scores_of_found - numpy_scores_at_rank).max())
    print(
        f"equality on the first {rows:,} rows, {len(queries)} queries, k={k}: "
        f"identical top k {same_order.sum()}/{len(queries)}, identical top-k sets "
        f"{same_set.sum()}/{len(queries)}; largest |streamed - numpy| score of one row "
        f"{largest:.2e}; at equal rank {swap:.2e}"
    )
    # Rounding bound of a float32 dot product of unit vectors summed in any order: dim x 2^-24.
    bound = queries.shape[1] * 2.0**-24
    verdict = "yes" if swap <= bound and largest <= bound else "NO"
    print(
        f"every difference within float32 rounding of one dot product (<= {bound:.1e}): {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=250)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--check-rows", type=int, default=200_000)
    parser.add_argument("--part-rows", type=int, default=250_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "img_search_exact_topk"
    )
    parser.add_argument("--child", nargs=4, metavar=("TABLE", "QUERIES", "K", "RESULT"))
    args = parser.parse_args()
    if args.child:
        table, queries_file, k, result_file = args.child
        child(table, queries_file, int(k), result_file)
        return

    args.work.mkdir(parents=True, exist_ok=True)
    table = prepare(
        args.work / f"table-{args.rows}x{args.dim}",
        args.rows,
        args.dim,
        args.part_rows,
        args.chunk_rows,
    )
    queries = unit_vectors(np.random.default_rng(1), args.queries, args.dim)
    queries_file, result_file = args.work / "queries.npy", args.work / "result.npz"
    np.save(queries_file, queries)
    command = [sys.executable, __file__, "--child", str(table), str(queries_file), str(args.k)]
    process = subprocess.Popen(
        [*command, str(result_file)], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    with sampled(process.pid) as peaks:
        out, _ = process.communicate()
    if process.returncode:
        sys.exit(f"the search failed (exit code {process.returncode})")
    run = json.loads(out.strip().splitlines()[-1])

    on_disk = disk_bytes(table)
    half, single = args.rows * args.dim * 2, args.rows * args.dim * 4
    print(
        f"table: {args.rows:,} x {args.dim} float16, {on_disk / MIB:,.0f} MiB on disk; "
        f"as one matrix {half / MIB:,.0f} MiB float16, {single / MIB:,.0f} MiB float32"
    )
    print(
        f"search: {args.queries} queries, k={args.k}, {run['seconds']:.1f} s: "
        f"{args.queries / run['seconds']:.2f} queries/s, {run['rows'] / run['seconds']:,.0f} rows/s"
    )
    peak = run["peak"]
    print(
        f"peak RSS of the search process: {peak / MIB:,.0f} MiB (after imports "
        f"{run['baseline'] / MIB:,.0f} MiB; sampled: RSS {peaks.main / MIB:,.0f} MiB, anonymous "
        f"part {peaks.anon / MIB:,.0f} MiB) = "
        f"{peak / on_disk:.3f} x the table on disk, {peak / single:.3f} x the float32 matrix"
    )
    check(table, queries, args.k, min(args.check_rows, args.rows))


if __name__ == "__main__":
    main()
