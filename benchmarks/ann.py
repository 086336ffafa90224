"""ANN benchmark on random unit vectors: recall@10 and queries/s of each index against exact search.

    python benchmarks/ann.py                         # 100k x 256: tight, loose, isotropic
    python benchmarks/ann.py --count 20000 --shapes tight

Three shapes of data: ``tight`` and ``loose`` clusters (vectors around 1000
random centres with noise of norm about 1 and 2, like real embeddings, where
graph indexes shine) and ``isotropic`` (uniform on the sphere: no vector has
near neighbours, the worst case of every ANN method).
The last lines compare HNSW's one-query-per-call rate with exact search's
(the interactive case; the goal is >= 10x at recall@10 >= 0.95).
"""

from __future__ import annotations

import argparse

from rich.console import Console

from img_search.eval.ann import ann_benchmark, random_unit_vectors, results_table, write_csv

#: shape → (clusters, spread) of ``random_unit_vectors``
SHAPES = {"tight": (1000, 1.0), "loose": (1000, 2.0), "isotropic": (0, 1.0)}
SPECS = {
    "faiss_hnsw": {"kind": "faiss_hnsw", "M": 32, "ef_construction": 80, "ef_search": 128},
    "faiss_ivf": {"kind": "faiss_ivf", "nprobe": 16},
    "usearch": {"kind": "usearch"},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--csv", default=None, help="write every row to this CSV")
    args = parser.parse_args()
    console = Console(width=150)
    summary, rows = [], []
    for shape in args.shapes.split(","):
        clusters, spread = SHAPES[shape]
        vectors = random_unit_vectors(args.count + args.queries, args.dim, 0, clusters, spread)
        results = ann_benchmark(
            vectors[: args.count], vectors[args.count :], SPECS, args.k, progress=True
        )
        rows += results
        title = f"{shape}: {args.count:,} x {args.dim}, {args.queries} queries, k={args.k}"
        console.print(results_table(results, title))
        exact = results[0]
        hnsw = next(r for r in results if r.name == "faiss_hnsw")
        summary.append(
            f"{shape}: faiss_hnsw recall@{args.k} {hnsw.recall:.3f} (goal >= 0.95), one query per call "
            f"{hnsw.single_qps:,.0f} q/s vs exact {exact.single_qps:,.0f} q/s = "
            f"{hnsw.single_qps / exact.single_qps:.1f}x (goal >= 10x); batched {hnsw.batch_qps:,.0f} "
            f"vs {exact.batch_qps:,.0f} q/s"
        )
    if args.csv:
        print(f"CSV: {write_csv(rows, args.csv)}")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
