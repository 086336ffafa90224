"""Exact top-k over a table against its floor: seconds, the ratio, peak memory, equality.

    python benchmarks/exact_topk.py                           # 500k and 2M x 768, both forms and dtypes
    python benchmarks/exact_topk.py --rows 200000 --forms folder --dtypes float16   # a quick look
    python benchmarks/exact_topk.py --before c9ab4a8          # also that commit's search, on its format

A benchmark, not a test (nothing asserts). For each size, table form (one
file, a folder of ``--part-rows`` parts) and dtype, in one run:

  1. write: ``--rows`` random unit vectors of ``--dim`` as the store writes
     them (row groups of ``ROW_GROUP_BYTES``), one table at a time, deleted
     after its measurements (2M x 768 float32 is 5.8 GB);
  2. the floor: the table's files read from the page cache (the second of
     two reads; its rate is printed), then, in a child process, FAISS
     ``IndexFlatIP`` add + search of the same vectors already in memory as
     one float32 matrix (read before the clock starts; where the matrix and
     FAISS's copy of it do not fit in memory, the first rows that do, the
     seconds scaled to the table);
  3. the search: ``exact_top_k`` in a child process, its libraries imported
     before the clock starts (its peak RSS is its VmHWM), ``--queries``
     random unit queries, ``--k``;
  4. ``--before COMMIT``: the table rewritten as that commit wrote it
     (``testing.tables.rewrite_as_before``: dictionary + Snappy, plain-list
     parts) and searched by that commit's ``exact_top_k`` (its ``img_search``
     from ``git archive``, first on ``PYTHONPATH``);
  5. equality: the search over the first ``--check-rows`` rows against
     numpy's stable argsort of the same scores.

Next to the ratio to the floor it prints the GEMM rate (numpy's BLAS, the
queries against a block) and the physical limit: the bytes at the page-cache
rate plus the product's FLOPs at the GEMM rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from memory import sampled

MODEL, DATASET = "bench", "random"
MIB, GB = 2**20, 1e9


def unit_vectors(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def write_table(path: Path, rows: int, dim: int, dtype: str, part_rows: int) -> None:
    """The table as the store writes it, straight to its files (a file table is not assembled
    from parts here: that would hold the table twice on disk)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from img_search.atomic import remove
    from img_search.store import TableLayout, vectors_to_arrow
    from img_search.store import writer as W

    layout = TableLayout.of(path)
    metadata = {"kind": "image", "output_dtype": dtype, "models": {MODEL: {"dim": dim}}}
    group_rows = max(1, W.ROW_GROUP_BYTES // (dim * np.dtype(dtype).itemsize))
    rng = np.random.default_rng(0)
    spans = (
        [(0, rows)]
        if not layout.is_folder
        else [(first, min(first + part_rows, rows)) for first in range(0, rows, part_rows)]
    )
    files = []
    for number, (first, last) in enumerate(spans):
        file = (
            layout.path if not layout.is_folder else layout.parts_dir / f"part-{number:05d}.parquet"
        )
        file.parent.mkdir(parents=True, exist_ok=True)
        schema = W.table_schema(None if layout.is_folder else dim, dtype)  # folder parts: lists
        if not layout.is_folder:
            schema = W.with_metadata(schema, metadata)
        with pq.ParquetWriter(file, schema, **W.parquet_options(schema)) as writer:
            for start in range(first, last, group_rows):
                stop = min(start + group_rows, last)
                ids = [f"train/{i // 1000:05d}/{i:08d}.jpg" for i in range(start, stop)]
                columns = [
                    pa.array(ids),
                    pa.array([MODEL] * len(ids)),
                    pa.array([DATASET] * len(ids)),
                    vectors_to_arrow(unit_vectors(rng, stop - start, dim), dtype).cast(
                        schema.field("embedding").type
                    ),
                ]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
        files.append(file)
    if layout.is_folder:
        schema = W.with_metadata(
            W.table_schema(None, dtype), {**metadata, "parts": [f.name for f in files]}
        )
        W.publish_folder(layout, schema, files)
        remove(layout.state_dir)


def table_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*")))


def page_cache_read(path: Path) -> float:
    """Seconds to read the table's files once more (the first read puts them in the page cache)."""
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    buffer = bytearray(16 * MIB)
    seconds = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for file in files:
            with open(file, "rb", buffering=0) as handle:
                while handle.readinto(buffer):
                    pass
        seconds = time.perf_counter() - started
    return seconds


def gemm_rate(queries: np.ndarray, rows: int = 16_384, repeat: int = 5) -> float:
    """FLOP/s of the queries against one block of float32 vectors (numpy's BLAS), best of ``repeat``."""
    block = unit_vectors(np.random.default_rng(2), rows, queries.shape[1])
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        np.matmul(queries, block.T)
        best = min(best, time.perf_counter() - started)
    return 2 * len(queries) * rows * queries.shape[1] / best


def peak_rss() -> int:
    """This process's peak RSS (Linux VmHWM; not ru_maxrss, which counts the parent before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def child_search(table: str, queries_file: str, k: int, result_file: str) -> dict:
    """The search in a fresh process, its libraries imported before the clock starts (as FAISS's
    are): pyarrow's dataset module (which imports pandas), rich, threadpoolctl."""
    import pyarrow.dataset  # noqa: F401
    import rich.progress  # noqa: F401
    import threadpoolctl  # noqa: F401

    from img_search.search.exact import exact_top_k  # (the tree on PYTHONPATH: now or --before)

    queries = np.load(queries_file)
    started = time.perf_counter()
    found = exact_top_k(table, queries, k)
    seconds = time.perf_counter() - started
    np.savez(result_file, rows=found.rows, scores=found.scores)
    return {"seconds": seconds, "peak": peak_rss(), "rows": found.scanned}


def child_faiss(table: str, queries_file: str, k: int) -> dict:
    """FAISS flat add + search of the table's vectors, read into one float32 matrix before the clock
    starts. The add copies them (twice the matrix in memory): where that does not fit, the first
    rows that do are measured and the seconds scaled to the table's rows (``scaled_from``)."""
    import faiss
    import psutil

    from img_search.store.blocks import vector_blocks
    from img_search.store.reader import table_files

    queries = np.load(queries_file)
    total = sum(pq_rows(file) for file in table_files(table))
    dim = queries.shape[1]
    fits = int(psutil.virtual_memory().available * 0.8 / (2 * 4 * dim))
    rows = min(total, fits)
    matrix = np.empty((rows, dim), dtype=np.float32)
    filled = 0
    for block in vector_blocks(table, MODEL, DATASET, block_rows=65_536):
        take = min(len(block.vectors), rows - filled)
        matrix[filled : filled + take] = block.vectors[:take]
        filled += take
        if filled == rows:
            break
    index = faiss.IndexFlatIP(dim)
    started = time.perf_counter()
    index.add(matrix)
    added = time.perf_counter()
    index.search(queries, k)
    searched = time.perf_counter()
    scale = total / rows
    return {
        "add": (added - started) * scale,
        "search": (searched - added) * scale,
        "scaled_from": rows if rows < total else None,
    }


def pq_rows(file: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(file).num_rows


def run_child(kind: str, args: list[str], python_path: Path | None = None) -> dict:
    env = dict(os.environ)
    if python_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(python_path), env.get("PYTHONPATH", "")])
    command = [sys.executable, __file__, "--child", kind, *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    with sampled(process.pid):
        out, _ = process.communicate()
    if process.returncode:
        sys.exit(f"the {kind} child failed (exit code {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def check(table: Path, queries: np.ndarray, k: int, rows: int) -> str:
    """Streamed over the first ``rows`` rows vs numpy's stable argsort over them in memory."""
    from img_search.search.exact import exact_top_k
    from img_search.store import open_table
    from img_search.store import schema as S
    from img_search.store.vectors import embedding_matrix

    found = exact_top_k(table, queries, k, max_rows=rows)
    matrix = embedding_matrix(open_table(table).head(rows, columns=[S.EMBEDDING]).column(0))
    scores = queries @ matrix.T
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    same = int((found.rows == expected).all(axis=1).sum())
    largest = float(np.abs(found.scores - np.take_along_axis(scores, found.rows, axis=1)).max())
    return f"top k identical to numpy's for {same}/{len(queries)} queries (largest score diff {largest:.1e})"


def before_tree(commit: str, work: Path) -> Path:
    """That commit's ``img_search`` package, extracted (no worktree is registered)."""
    tree = work / f"before-{commit}"
    if not (tree / "img_search").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            [
                "git",
                "-C",
                str(Path(__file__).resolve().parent.parent),
                "archive",
                commit,
                "img_search",
            ],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def measure(args: argparse.Namespace, rows: int, form: str, dtype: str, rates: dict) -> dict:
    name = f"table-{rows}x{args.dim}-{dtype}" + (".parquet" if form == "file" else "")
    path = args.work / name
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    started = time.perf_counter()
    write_table(path, rows, args.dim, dtype, args.part_rows)
    written = time.perf_counter() - started
    queries_file, result_file = args.work / "queries.npy", args.work / "result.npz"
    queries = np.load(queries_file)
    size = table_bytes(path)
    read = page_cache_read(path)
    floor = run_child("faiss", [str(path), str(queries_file), str(args.k)])
    page_cache_read(path)  # (again: FAISS's matrices may have pushed the table out of the cache)
    search = run_child("search", [str(path), str(queries_file), str(args.k), str(result_file)])
    result = {
        "rows": rows,
        "form": form,
        "dtype": dtype,
        "bytes": size,
        "written_s": written,
        "read_s": read,
        "faiss_add_s": floor["add"],
        "faiss_scaled_from": floor["scaled_from"],
        "faiss_search_s": floor["search"],
        "floor_s": read + floor["add"] + floor["search"],
        "search_s": search["seconds"],
        "peak": search["peak"],
        "limit_s": read + 2 * args.queries * rows * args.dim / rates["gemm"],
    }
    result["check"] = check(path, queries, args.k, min(args.check_rows, rows))
    largest = size if form == "file" else max(f.stat().st_size for f in path.glob("*.parquet"))
    if args.before and shutil.disk_usage(args.work).free < 1.2 * largest:
        print(f"    before: not measured, no room to rewrite {path} ({largest / MIB:,.0f} MiB)")
    elif args.before:
        from img_search.testing.tables import rewrite_as_before

        rewrite_as_before(path)
        page_cache_read(path)
        old = run_child(
            "search",
            [str(path), str(queries_file), str(args.k), str(result_file)],
            python_path=before_tree(args.before, args.work),
        )
        result["before_s"], result["before_peak"] = old["seconds"], old["peak"]
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return result


def report(result: dict, dim: int) -> None:
    r = result
    single = r["rows"] * dim * 4
    print(
        f"{r['rows']:>9,} x {dim} {r['dtype']} {r['form']:6s} {r['bytes'] / MIB:7,.0f} MiB | "
        f"floor {r['floor_s']:6.2f} s (page cache {r['read_s']:.2f} s = "
        f"{r['bytes'] / r['read_s'] / GB:.1f} GB/s, faiss add {r['faiss_add_s']:.2f} + search "
        f"{r['faiss_search_s']:.2f}) | exact_top_k {r['search_s']:6.2f} s = "
        f"{r['search_s'] / r['floor_s']:.2f} x floor, {r['search_s'] / r['limit_s']:.2f} x the "
        f"physical limit {r['limit_s']:.2f} s | peak RSS {r['peak'] / MIB:,.0f} MiB = "
        f"{r['peak'] / single:.2f} x the float32 matrix"
        + (
            f" | before {r['before_s']:.2f} s ({r['before_s'] / r['search_s']:.1f} x now, "
            f"peak {r['before_peak'] / MIB:,.0f} MiB)"
            if "before_s" in r
            else ""
        )
    )
    if r["faiss_scaled_from"]:
        print(f"    FAISS measured on the first {r['faiss_scaled_from']:,} rows (memory), scaled")
    print(f"    {r['check']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[500_000, 2_000_000])
    parser.add_argument("--forms", nargs="+", default=["file", "folder"])
    parser.add_argument("--dtypes", nargs="+", default=["float16", "float32"])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=250)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--check-rows", type=int, default=100_000)
    parser.add_argument("--part-rows", type=int, default=250_000)
    parser.add_argument("--before", metavar="COMMIT", help="also that commit's search, its format")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "img_search_exact_topk"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        run = child_search if kind == "search" else child_faiss
        print(json.dumps(run(rest[0], rest[1], int(rest[2]), *rest[3:])))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    queries = unit_vectors(np.random.default_rng(1), args.queries, args.dim)
    np.save(args.work / "queries.npy", queries)
    rates = {"gemm": gemm_rate(queries)}
    print(
        f"{args.queries} queries, k={args.k}; GEMM {rates['gemm'] / 1e9:.0f} GFLOP/s "
        f"(numpy's BLAS, {os.cpu_count()} cores)"
    )
    results = []
    for rows in args.rows:
        for form in args.forms:
            for dtype in args.dtypes:
                results.append(measure(args, rows, form, dtype, rates))
                report(results[-1], args.dim)
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "results": results}, indent=2))


if __name__ == "__main__":
    main()
