"""WebDataset listing: how long before the first batch of a LAION-sized job?

A benchmark line, not a test (nothing asserts). Before embedding, every
process needs the listing of the tars (which samples, where each image
lies): ``tarfile`` walks each tar's headers, Python work at a few thousand
samples a second per process. ``img_search/data/tar_listing.py`` lists the
tars with a pool of processes, lets the processes of a job start on their own
stretch of the tars, and keeps each tar's listing in the job's folder, so a
second process (another rank, an array task, a rerun) reads it instead.

It writes ``--tars`` img2dataset-layout tars of ``--per-tar`` samples
(``.jpg`` of ``--jpg-bytes`` bytes, ``.txt``, ``.json``: the listing reads
headers only, so the payload is the same bytes each time) under ``--work``
(kept; a second run reuses them), then times, each in a fresh subprocess
(``datasets=webdataset``'s ``build()``, as the pipeline runs it):

  1. one:     one process, nothing kept (what every process did before);
  2. pool:    one process with a pool of ``--workers`` (default: the cores),
              keeping each tar's listing in a new folder;
  3. kept:    a second process over that folder (another rank, or a rerun);
  4. ranks:   ``--ranks`` processes at once (default 2), each with
              ``cores / ranks`` workers, sharing a new folder: the time until
              the last one has the whole listing, and how many tars each listed.

For each it prints seconds, samples/s, the ratio to ``one`` and the peak
RSS of the process, then what 100M samples would take at those rates.

    python benchmarks/listing.py                       # 40 tars x 5,000 samples
    python benchmarks/listing.py --tars 8 --per-tar 1000   # a quick check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

LAION = 100_000_000


def write_tars(root: Path, tars: int, per_tar: int, jpg_bytes: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    stamp = root / f"tars-{tars}x{per_tar}x{jpg_bytes}.done"
    paths = [str(root / f"{t:05d}.tar") for t in range(tars)]
    if stamp.exists():
        return paths
    payload = os.urandom(jpg_bytes)
    for t, path in enumerate(paths):
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
            for s in range(per_tar):
                key = f"{t:05d}{s:04d}"
                meta = json.dumps({"key": key, "caption": f"photo {s}"}).encode()
                for ext, data in (("jpg", payload), ("txt", f"photo {s}".encode()), ("json", meta)):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    stamp.write_text("")
    return paths


def child(args: argparse.Namespace) -> None:
    """One process: build the dataset as the pipeline does, print a JSON line."""
    import logging

    import webdataset.tariterators  # noqa: F401  (the pipeline has it, and torch, imported by then)

    from img_search.data import tar_listing
    from img_search.data.base import BuildContext
    from img_search.data.webdataset import WebDatasetImages

    made = []

    class Made(logging.Handler):  # "<what>: N tar(s) listed here, M by other processes meanwhile"
        def emit(self, record: logging.LogRecord) -> None:
            if "listed here" in record.msg:
                made.append(record.args[1])

    tar_listing.log.addHandler(Made())
    tar_listing.log.setLevel(logging.INFO)
    dataset = WebDatasetImages("laion", args.urls)
    folder = Path(args.folder) if args.folder else None
    dataset.context = BuildContext(folder, args.slot, args.slots, args.workers)
    started = time.perf_counter()
    dataset.build()
    seconds = time.perf_counter() - started
    made = made[0] if made else 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    print(
        json.dumps({"seconds": seconds, "items": dataset.length(), "peak_mib": peak, "made": made})
    )


def run(urls: str, folder: Path | None, slot: int, slots: int, workers: int) -> subprocess.Popen:
    command = [sys.executable, __file__, "--child", "--urls", urls]
    command += ["--folder", str(folder or ""), "--slot", str(slot), "--slots", str(slots)]
    command += ["--workers", str(workers)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        sys.exit(f"a listing process failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tars", type=int, default=40)
    parser.add_argument("--per-tar", type=int, default=5000)
    parser.add_argument("--jpg-bytes", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "img_search_listing"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--slot", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    write_tars(args.work / "tars", args.tars, args.per_tar, args.jpg_bytes)
    urls = f"{args.work / 'tars'}/{{00000..{args.tars - 1:05d}}}.tar"
    samples = args.tars * args.per_tar
    print(
        f"{args.tars} tars x {args.per_tar} samples = {samples:,} samples, {os.cpu_count()} cores"
    )
    kept = args.work / "kept"
    shutil.rmtree(kept, ignore_errors=True)

    rows = []
    one = result(run(urls, None, 0, 1, 1))
    rows.append(("one process, nothing kept", one))
    pool = result(run(urls, kept, 0, 1, args.workers))
    rows.append((f"pool of {args.workers}, kept", pool))
    again = result(run(urls, kept, 0, 1, args.workers))
    rows.append(("another process, reads what was kept", again))
    shared = args.work / "shared"
    shutil.rmtree(shared, ignore_errors=True)
    per_rank = max(1, args.workers // args.ranks)
    ranks = [run(urls, shared, r, args.ranks, per_rank) for r in range(args.ranks)]
    outs = [result(p) for p in ranks]
    together = {  # the ranks start together (after the same imports): until the last has it all
        "seconds": max(o["seconds"] for o in outs),
        "items": outs[0]["items"],
        "peak_mib": max(o["peak_mib"] for o in outs),
        "made": sum(o["made"] for o in outs),
    }
    rows.append((f"{args.ranks} ranks x {per_rank} workers, shared", together))
    print(
        f"{'':42} {'seconds':>8} {'samples/s':>10} {'vs one':>7} {'peak MiB':>9} {'tars listed':>12}"
    )
    for name, row in rows:
        rate = samples / row["seconds"]
        print(
            f"{name:42} {row['seconds']:8.2f} {rate:10,.0f} {one['seconds'] / row['seconds']:7.2f} "
            f"{row['peak_mib']:9.0f} {row['made']:12}"
        )
    print("tars listed per rank:", [o["made"] for o in outs], f"(of {args.tars})")
    core_rate = samples / one["seconds"]
    pool_rate = samples / pool["seconds"]
    print(
        f"100M samples: one process {LAION / core_rate / 3600:.1f} h; this pool "
        f"{LAION / pool_rate / 60:.0f} min; 64 cores (8 ranks x 8 workers) at this pool's rate per "
        f"worker {LAION / (pool_rate / args.workers * 64) / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
