"""Resume memory: does resuming a big job cost no more memory than a small fresh one?

A benchmark line, not a test (nothing asserts; the goal is printed next to
the measurement). Goal: "a 1,000,000-item source resumed with 90% done: peak
RSS of the main process within 1.3x of a fresh 10k-item run". Resuming must
not build a set of done ids in memory: what is done is known from the
per-shard completion records (``img_search/pipeline/claims.py``).

What it runs, each a ``python -m img_search.pipeline.embed`` subprocess with
the SIMULATED model (``models.simulated.batch_seconds=0``: no sleep, a 4x4
thumbnail projection) over a generated Parquet ``hf_images`` table of tiny
8x8 PNGs (a few hundred distinct images reused under unique ids
``img/0000000123.png``; 🤗 ``Image()`` column + ``key`` id column):

  1. prepare: both tables are generated once and cached in ``--work``
     (written in chunks, so generating 1M rows takes little memory); the
     pipeline reads local Parquet directly (``img_search/data/parquet_rows.py``),
     without 🤗's Arrow cache;
  2. fresh: the ``--fresh``-item table (default 10,000), from nothing;
  3. interrupted: the ``--items``-item table (default 1,000,000, shards of
     ``--items / --shards`` items, then the shrinking tail) with
     ``IMG_SEARCH_FAULT=commit:<k>``, k the shards that hold ``--done`` (90%)
     of the items: the process SIGKILLs itself right after its k-th shard
     commit, leaving the job state in ``<out>.partial/``;
  4. resumed: the same command without the fault; its summary must say
     ``resumed: <the items of those k shards>`` and ``rows: <items>``.

Both measured runs use the same ``tasks.shard_size`` (``--items / --shards``)
and batch size. For each run it samples every 50 ms the RSS of the MAIN
process (``psutil.Process(pid).memory_info().rss`` of the top process only:
it holds the listing, the claims and the records, and is what the goal is
about) and, for information, its anonymous part (RSS less shared/file-backed
pages: the memory-mapped files a process reads count in RSS although the
kernel can drop them) and the RSS summed over the process
tree (loader workers are forked, so shared pages count more than once). It
prints the peaks per run, the main-process RSS at 10/50/90% of each run's
wall time (does it grow with the items done?), the time of each phase, the
resumed and final rows, the resumed / interrupted ratio (the same job
started fresh: what resuming itself adds), and last the goal line
``resumed peak RSS / fresh peak RSS`` (goal <= 1.3).

Loader workers: ``tasks.num_workers=0`` (``--workers``, default 0), so the
main process itself reads and decodes the rows it embeds and no part of the
run's memory hides in child processes. At 20,000 vs 2,000 items on 2 cores
both settings gave the same main-process peaks (0 workers: fresh 373 MiB,
resumed 374 MiB; auto = 2 workers: 372 and 376 MiB, tree ~880 MiB), and the
auto workers were slower on a busy 2-core machine (resumed run 12.4 s vs 6.6 s).

    python benchmarks/resume_memory.py                               # 1M items resumed at 90% vs 10k fresh
    python benchmarks/resume_memory.py --items 20000 --fresh 2000    # a quick check (~1 min)
    python benchmarks/resume_memory.py --workers -1                  # the pipeline's own worker count
    python benchmarks/resume_memory.py --streaming                   # the table as 100 Parquet files, streamed

Tables, outputs and logs (``logs/<phase>.stdout|stderr``)
live under ``--work`` (default ``$TMPDIR/img_search_resume_memory``; kept, so
a second run skips generating them). A failed run prints its stderr
tail and the script exits 1. Everything runs offline on CPU.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from memory import sampled
from PIL import Image

from img_search.data.base import position_shards

GOAL = 1.3
DISTINCT_IMAGES = 256
CHUNK_ROWS = 50_000
#: 🤗 ``datasets`` schema metadata of Features({"image": Image(), "key": Value("string")})
HF_METADATA = (
    b'{"info": {"features": {"image": {"_type": "Image"}, '
    b'"key": {"dtype": "string", "_type": "Value"}}}}'
)
SCHEMA = pa.schema(
    [
        pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        pa.field("key", pa.string()),
    ],
    metadata={b"huggingface": HF_METADATA},
)


# -- data ---------------------------------------------------------------------------------
def tiny_pngs(count: int) -> list[bytes]:
    """``count`` distinct 8x8 RGB PNGs (random pixels), a few hundred bytes each."""
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def write_table(path: Path, items: int, first: int = 0) -> Path:
    """A Parquet table of ``items`` tiny images with unique ids, written chunk by chunk; cached."""
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == items:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pngs = pa.array(tiny_pngs(DISTINCT_IMAGES), pa.binary())
    tmp = path.with_name(f".{path.name}.tmp")
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        for start in range(first, first + items, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, first + items)
            numbers = np.arange(start, stop)
            images = pa.StructArray.from_arrays(
                [
                    pngs.take(pa.array(numbers % DISTINCT_IMAGES)),
                    pa.nulls(stop - start, pa.string()),
                ],
                fields=list(SCHEMA.field("image").type),
            )
            keys = pa.array(
                np.char.add(np.char.add("img/", np.char.zfill(numbers.astype(str), 10)), ".png")
            )
            writer.write_table(pa.table([images, keys], schema=SCHEMA), row_group_size=10_000)
    os.replace(tmp, path)
    return path


def write_files(folder: Path, items: int, files: int) -> Path:
    """The same table as ``files`` Parquet files in the Hub layout (``data/train-…-of-….parquet``)."""
    per_file = math.ceil(items / files)
    for number, first in enumerate(range(0, items, per_file)):
        name = f"train-{number:05d}-of-{files:05d}.parquet"
        write_table(folder / "data" / name, min(per_file, items - first), first)
    return folder


# -- measured runs ------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    code: int
    seconds: float
    main_peak: float  # MiB, RSS of the main process
    main_anon_peak: float  # MiB, RSS less file-backed/shared pages (memory the process allocated)
    tree_peak: float  # MiB, RSS summed over the process tree
    samples: list[tuple[float, float]] = field(default_factory=list)  # (s, main RSS MiB)
    stdout: str = ""
    stderr: str = ""

    def main_at(self, fraction: float) -> float:
        """Main-process RSS (MiB) at ``fraction`` of the run's wall time."""
        if not self.samples:
            return 0.0
        moment = fraction * self.seconds
        return min(self.samples, key=lambda s: abs(s[0] - moment))[1]

    def line(self, pattern: str) -> str | None:
        found = re.search(pattern, self.stdout, re.MULTILINE)
        return found.group(1) if found else None


def measure(name: str, command: list[str], env: dict[str, str], logs: Path) -> Run:
    """Run ``command``; peak RSS of its main process and of its whole tree, sampled every 50 ms."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    started = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        with sampled(process.pid) as peaks:
            code = process.wait()
        samples = peaks.samples
    return Run(
        name,
        code,
        time.perf_counter() - started,
        peaks.main / 2**20,
        peaks.anon / 2**20,
        peaks.tree / 2**20,
        samples,
        out_path.read_text(),
        err_path.read_text(),
    )


def failed(run: Run, why: str) -> None:
    tail = "\n".join(run.stderr.splitlines()[-40:])
    print(f"[{run.name}] {why} (exit code {run.code}); stderr tail:\n{tail}", file=sys.stderr)
    if run.stdout.strip():
        print(f"[{run.name}] stdout:\n{run.stdout.strip()}", file=sys.stderr)
    sys.exit(1)


def embed_command(
    table: Path, out: Path, shard_size: int, batch_size: int, workers: int, streaming: bool
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "img_search.pipeline.embed",
        "models=simulated",
        "models.simulated.batch_seconds=0",
        "datasets=hf_images",
        f"datasets.hf_images.path={table}",
        "datasets.hf_images.id_column=key",
        f"datasets.hf_images.streaming={str(streaming).lower()}",
        f"output_path={out}",
        f"tasks.batch_size={batch_size}",
        f"tasks.shard_size={shard_size}",
        f"tasks.num_workers={workers}",
        "tasks.commit_every_s=86400",  # one commit per shard, so commit:<k> means k shards done
        "tasks.cpu=true",
        "logging=quiet",
    ]


def clear_output(out: Path) -> None:
    """The table, its errors file, its job state and any temporary files beside them."""
    for path in out.parent.glob(f"*{out.stem}*"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def describe(run: Run) -> str:
    return (
        f"[{run.name}] {run.seconds:.1f} s | main process peak RSS {run.main_peak:.0f} MiB "
        f"(anonymous {run.main_anon_peak:.0f} MiB; RSS at 10/50/90% of the run "
        f"{run.main_at(0.1):.0f}/{run.main_at(0.5):.0f}/{run.main_at(0.9):.0f} MiB) | "
        f"process tree peak RSS {run.tree_peak:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000, help="items of the resumed job")
    parser.add_argument("--fresh", type=int, default=10_000, help="items of the fresh baseline job")
    parser.add_argument("--shards", type=int, default=100, help="shards of the resumed job")
    parser.add_argument(
        "--done", type=float, default=0.9, help="fraction of shards done before the kill"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="tasks.num_workers of both runs (-1: the pipeline's auto)",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="the tables as --shards Parquet files each (one shard per file), read streaming",
    )
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "img_search_resume_memory"
    )
    args = parser.parse_args()
    if not 0 < args.done < 1 or args.shards < 2:
        parser.error("--done must be in (0, 1) and --shards at least 2")

    work = args.work.resolve()
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HF_DATASETS_CACHE=str(work / "hf_cache"),
    )
    env.pop("IMG_SEARCH_FAULT", None)
    logs = work / "logs"
    shard_size = math.ceil(args.items / args.shards)
    shards = math.ceil(args.items / shard_size)
    # one file per shard when streaming; else position shards ending in a shrinking tail
    sizes = (
        [min(shard_size, args.items - i * shard_size) for i in range(shards)]
        if args.streaming
        else [len(s) for s in position_shards(args.items, shard_size, args.batch_size)]
    )
    ends = np.cumsum(sizes)  # one process claims the shards in order
    kill_after = int(np.searchsorted(ends, args.done * args.items, side="right"))
    if not 0 < kill_after < len(sizes):
        parser.error(f"--done {args.done} leaves nothing done or nothing to do")
    expected_resumed = int(ends[kill_after - 1])
    print(
        f"cores: {os.cpu_count()}  items: {args.items:,} in {len(sizes)} shards of up to "
        f"{shard_size:,}, killed after {kill_after} shard commits ({expected_resumed:,} items)  "
        f"fresh: {args.fresh:,}  batch {args.batch_size}  "
        f"tasks.num_workers={args.workers}  work: {work}",
        flush=True,
    )

    started = time.perf_counter()
    if args.streaming:
        big = write_files(work / "data" / f"files-{args.items}", args.items, shards)
        small = write_files(work / "data" / f"files-{args.fresh}", args.fresh, 1)
    else:
        big = write_table(work / "data" / f"images-{args.items}.parquet", args.items)
        small = write_table(work / "data" / f"images-{args.fresh}.parquet", args.fresh)
    generated = time.perf_counter() - started
    size = sum(p.stat().st_size for p in ([big] if big.is_file() else big.rglob("*.parquet")))
    print(
        f"[prepare] tables {generated:.1f} s ({size / 2**20:.1f} MiB for {args.items:,} items)",
        flush=True,
    )

    fresh_out = work / "out" / "fresh.parquet"
    clear_output(fresh_out)
    fresh = measure(
        "fresh",
        embed_command(small, fresh_out, shard_size, args.batch_size, args.workers, args.streaming),
        env,
        logs,
    )
    if fresh.code != 0 or fresh.line(r"^rows: (\d+)") != str(args.fresh):
        failed(fresh, f"the fresh run did not embed {args.fresh} rows")
    print(describe(fresh), flush=True)

    resume_out = work / "out" / "resume.parquet"
    clear_output(resume_out)
    command = embed_command(
        big, resume_out, shard_size, args.batch_size, args.workers, args.streaming
    )
    interrupted = measure(
        "interrupted", command, {**env, "IMG_SEARCH_FAULT": f"commit:{kill_after}"}, logs
    )
    if interrupted.code != -9:
        failed(
            interrupted, f"the run was expected to kill itself (SIGKILL) after {kill_after} commits"
        )
    records = resume_out.with_name(resume_out.name + ".partial") / "records"
    finished = sum(1 for _ in records.rglob("*.json")) if records.is_dir() else 0
    print(describe(interrupted) + f" | killed with {finished} shard records", flush=True)

    resumed = measure("resumed", command, env, logs)
    rows, resumed_rows = resumed.line(r"^rows: (\d+)"), resumed.line(r"^resumed: (\d+)")
    if resumed.code != 0 or rows != str(args.items):
        failed(resumed, f"the resumed run did not finish the table of {args.items} rows")
    print(describe(resumed), flush=True)
    print(
        f"[resumed] resumed: {resumed_rows} rows (expected {expected_resumed}), "
        f"rows: {rows} (expected {args.items})"
    )
    if resumed_rows != str(expected_resumed):
        failed(resumed, f"the resumed run did not report {expected_resumed} resumed rows")
    ratio = resumed.main_peak / fresh.main_peak
    anon_ratio = resumed.main_anon_peak / fresh.main_anon_peak
    same_job = resumed.main_peak / interrupted.main_peak
    print(
        f"phases: prepare {generated:.1f} s, fresh {fresh.seconds:.1f} s, "
        f"interrupted {interrupted.seconds:.1f} s, resumed {resumed.seconds:.1f} s"
    )
    print(
        f"peak RSS of the main process: resumed {args.items:,}-item job "
        f"({args.done:.0%} done) {resumed.main_peak:.0f} MiB, fresh {args.fresh:,}-item job "
        f"{fresh.main_peak:.0f} MiB"
    )
    print(
        f"for information: anonymous memory resumed / fresh {anon_ratio:.2f} "
        f"({resumed.main_anon_peak:.0f} / {fresh.main_anon_peak:.0f} MiB); RSS resumed / "
        f"interrupted (the same job started fresh) {same_job:.2f}"
    )
    print(f"resumed / fresh main-process peak RSS: {ratio:.2f} (goal <= {GOAL})")


if __name__ == "__main__":
    main()
