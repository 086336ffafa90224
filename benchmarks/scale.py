"""Scale: does each added process embed as fast as one alone? Coordination overhead without a GPU.

For each design and each number of processes N it launches (torchrun as
``python -m torch.distributed.run`` of this interpreter, from the design's tree)

    torchrun --standalone --nproc_per_node N benchmarks/collective_probe.py \\
        img_search.pipeline.embed <simulated model> datasets=image_folder ... tasks.batch_size=8

over a folder of tiny JPEGs (32x24), with the SIMULATED model
(``img_search/embedding/simulated.py``): every batch of 8 "takes"
``--batch-seconds`` (50 ms) ± ``--jitter`` (30%) of sleeping device time and no
CPU, so a 2-core machine can host 8 ranks and whatever is lost is lost to
coordination (waiting for the slowest rank, collectives, the main process
writing for everyone), not to compute. The designs:

  - shards: the working tree, where every process claims shards, embeds and
    commits them itself (``tasks.shard_size=48``: 6 batches, then the
    listing's shrinking tail, 8 shards each of 4, 2 and 1 batches);
  - lockstep: the old design of commit ``dc228a6`` (checked out into a
    temporary ``git worktree`` and imported with ``PYTHONPATH``), where every
    step all-gathers ids and vectors to the main process, which writes.
    That tree has no simulated model: ``collective_probe.py`` registers this
    tree's class into its encoder registry;
  - ray: the working tree with ``engine=ray`` (no torchrun): one command, the
    driver, starts a local Ray (``engine.address=local``) and N actors of
    ``--ray-cpus`` CPUs each (``--ray-workers``: 1, 2, 4), every one claiming
    and committing shards as a launch would (the shards design's
    ``tasks.shard_size``). Skipped, with the reason, when Ray does not import.

Per design and N it prints
  - per-rank items/s relative to the 1-rank rate of the same design (shards:
    mean and min over ranks, from the finished table's ``run.processes``
    metadata; lockstep: every rank runs at the job's pace, so the job's
    items/s from its summary table / N);
  - aggregate: the job's items/s / (N × the 1-rank rate), the efficiency;
  - collective calls (top-level, and tensor-level inside them) and bytes
    put through collectives, the max over ranks, counted by
    ``collective_probe.py``;
  - wall seconds of the whole launch (process start-up included);
  - shards and ray (from the same metadata): overhead per shard, i.e. a
    process's pass seconds minus its ``forward`` stage (the simulated device
    time) over the shards it committed (waiting for data, writing, claiming,
    committing), for the job (Σ over processes / Σ shards) and per process;
    and start-up, the launch's wall seconds minus the slowest process's pass.
Per Ray worker count: items/s per worker relative to the 1-worker Ray rate and
to the 1-rank shards rate (when both ran), the job's aggregate against both,
overhead per shard and start-up. The Ray driver (``role: ray driver``, no
passes) is left out of every per-worker figure.
Then a table of shards and lockstep side by side, the goal line
"8 ranks ≥ 0.95 × 8 × the 1-rank rate", and a table of the shards and Ray
runs' rates, overhead per shard and start-up, by number of processes.

    python benchmarks/scale.py                                  # 4,000 images, 1,2,4,8 ranks, 1,2,4 Ray workers
    python benchmarks/scale.py --images 16000                   # 4x as long a job
    python benchmarks/scale.py --images 400 --ranks 1,2         # a quick check
    python benchmarks/scale.py --designs shards --ranks 1,8
    python benchmarks/scale.py --designs shards,ray --ranks 1,2,4 --ray-workers 1,2,4

Images, outputs, logs (``logs/<design>-<N>.stderr``; ``ray-<N>``: the
driver's) and probe files go under ``--work`` (default
``$TMPDIR/img_search_scale``; kept, and the images are reused); the old
tree's worktree is removed at the end. Each launch has ``--timeout``
seconds; a failed launch prints its stderr tail, the others still run, and the
script exits 1. Everything runs offline on CPU (``tasks.cpu=true``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "benchmarks" / "collective_probe.py"
OLD_COMMIT = "dc228a6"
MODULE = "img_search.pipeline.embed"
GOAL_RANKS, GOAL = 8, 0.95
#: The old design on this machine, measured before with 4,000 images (aggregate items/s / (N × 1-rank rate)).
REFERENCE_LOCKSTEP = {2: 0.89, 4: 0.73, 8: 0.49}
ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",  # offline: no usage report, no prompt
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Run:
    design: str
    ranks: int
    ok: bool = False
    problem: str = ""
    wall_s: float = 0.0
    #: items/s of each rank (lockstep: the job's pace / N for every rank).
    rank_rates: list[float] = field(default_factory=list)
    #: the job's items/s (items / the slowest rank's seconds).
    job_rate: float = 0.0
    items: int = 0
    top_calls: int = 0
    tensor_calls: int = 0
    bytes: int = 0
    img_search_file: str = ""
    #: shards and ray: (pass seconds − forward seconds) / shards committed, of each process …
    overheads: list[float | None] = field(default_factory=list)
    #: … and of the job (Σ over its processes / Σ shards).
    overhead: float | None = None
    #: shards and ray: the wall seconds minus the slowest process's pass seconds.
    startup_s: float | None = None


@dataclass
class Design:
    name: str
    label: str
    tree: Path
    extra: list[str]
    #: numbers of processes: ranks (torchrun) or Ray workers
    counts: list[int]


# -- images ---------------------------------------------------------------------------


def write_images(folder: Path, count: int) -> None:
    """``count`` distinct 32x24 JPEGs (reused when the folder already has them)."""
    marker = folder / "complete.txt"
    if marker.exists() and marker.read_text().strip() == str(count):
        return
    from img_search.testing.fixtures import jpeg_bytes, synthetic_image

    if folder.exists():
        shutil.rmtree(folder)
    for i in range(count):
        path = folder / f"{i // 1000:03d}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(synthetic_image(i, (32, 24))))
    marker.write_text(str(count))


# -- the old tree ---------------------------------------------------------------------


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def add_worktree(commit: str) -> tuple[Path, Path]:
    holder = Path(tempfile.mkdtemp(prefix="img_search_scale_old_"))
    tree = holder / "tree"
    done = git("worktree", "add", "--detach", str(tree), commit)
    if done.returncode != 0:
        shutil.rmtree(holder, ignore_errors=True)
        raise SystemExit(f"git worktree add {commit} failed:\n{done.stderr.strip()}")
    return holder, tree


def remove_worktree(holder: Path, tree: Path) -> None:
    done = git("worktree", "remove", "--force", str(tree))
    if done.returncode != 0:
        print(f"warning: git worktree remove: {done.stderr.strip()}", file=sys.stderr)
    shutil.rmtree(holder, ignore_errors=True)
    git("worktree", "prune")


# -- launching ----------------------------------------------------------------------


def design_env(tree: Path, probe_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBE_")}
    env.update(ENV)
    env["PYTHONPATH"] = str(tree)  # ahead of the editable install of the working tree
    env["PROBE_SIMULATED_FILE"] = str(REPO / "img_search" / "embedding" / "simulated.py")
    if probe_dir is not None:
        env["PROBE_DIR"] = str(probe_dir)
    return env


def python_in(tree: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` of this interpreter from ``tree``, with that tree's environment."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=design_env(tree), capture_output=True, text=True
    )


def imported_from(tree: Path) -> str:
    """Where ``import img_search`` resolves with this tree's environment; refuses another tree."""
    done = python_in(tree, "import img_search; print(img_search.__file__)")
    where = done.stdout.strip()
    if done.returncode != 0 or not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(
            f"with PYTHONPATH={tree} img_search imports from {where or '?'} "
            f"(not that tree): {done.stderr.strip()[-500:]}"
        )
    return where


def model_overrides(tree: Path, batch_seconds: float, jitter: float) -> list[str]:
    """``models=simulated`` where the tree has its YAML; otherwise the same entry spelled out."""
    if (tree / "img_search" / "config" / "models" / "simulated.yaml").exists():
        return [
            "models=simulated",
            f"models.simulated.batch_seconds={batch_seconds}",
            f"models.simulated.jitter={jitter}",
        ]
    return [
        "~models.efficientnet_lite0",
        "+models.simulated.model=simulated",
        "+models.simulated.model_name=simulated",
        f"+models.simulated.batch_seconds={batch_seconds}",
        f"+models.simulated.jitter={jitter}",
    ]


def launch(
    command: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float
) -> tuple[int | None, float]:
    """Run ``command`` in its own session (stdout → log.stdout, stderr → log.stderr); rc None on timeout."""
    started = time.perf_counter()
    with open(log.with_suffix(".stdout"), "w") as out, open(log.with_suffix(".stderr"), "w") as err:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
        )
        code: int | None = None
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(process)
        except BaseException:  # Ctrl-C: stop the launcher and its ranks too
            stop(process)
            raise
    return code, time.perf_counter() - started


def stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = ANSI.sub("", path.read_text(errors="replace"))
    except OSError:
        return "(no output)"
    found = text.splitlines()
    # torchrun's own traceback (ChildFailedError) would fill the tail: keep the ranks' lines before it
    cut = next((i for i, line in enumerate(found) if "failed (exitcode:" in line), None)
    if cut is not None:
        found = found[: cut + 1]
    return "\n".join(found[-lines:]) or "(no output)"


# -- reading what a run did -----------------------------------------------------------


def summary_row(stderr: str) -> dict[str, str]:
    """The first data row of the rich 'img_search embedding summary' table, by column name."""
    lines = [ANSI.sub("", line) for line in stderr.splitlines()]
    for i, line in enumerate(lines):
        if "┃" in line and "items/s" in line:
            header = [c.strip() for c in line.strip().strip("┃").split("┃")]
            for row in lines[i + 1 :]:
                if "│" in row:
                    cells = [c.strip() for c in row.strip().strip("│").split("│")]
                    if len(cells) == len(header):
                        return dict(zip(header, cells, strict=True))
    raise ValueError("no summary table with an items/s column in the launch's stderr")


def probe_files(folder: Path, ranks: int) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("rank-*.json"))]
    if len(found) != ranks:
        raise ValueError(f"{len(found)} of {ranks} probe files in {folder}")
    bad = [
        f"rank {p['rank']}: exit {p['exit_code']}" for p in found if p["exit_code"] not in (0, None)
    ]
    if bad:
        raise ValueError("; ".join(bad))
    return found


def worker_order(process: dict[str, Any]) -> tuple[int, int]:
    """Ranks in order; Ray workers (all rank 0) by the i of their role ``ray worker i of n``."""
    found = re.match(r"ray worker (\d+) of", str(process.get("role") or ""))
    return int(process.get("rank") or 0), int(found.group(1)) if found else 0


def read_processes(output: Path, count: int, images: int, run: Run) -> None:
    """Per-process items/s and overhead per shard, the job's items/s and items, from the finished
    table's metadata; the Ray driver (``role: ray driver``, no passes) is not one of them."""
    from img_search.store import read_metadata

    metadata = read_metadata(output)
    processes = [
        p
        for p in (metadata.get("run") or {}).get("processes") or []
        if p.get("role") != "ray driver"
    ]
    rates, seconds, items, overhead, shards = [], [], 0, 0.0, 0
    for process in sorted(processes, key=worker_order):
        passes = process.get("passes") or []
        done = sum(int(p["rows"]) + int(p["errors"]) for p in passes)
        spent = sum(float(p["seconds"]) for p in passes)
        device = sum(float((p.get("stages") or {}).get("forward", 0.0)) for p in passes)
        committed = sum(len(p.get("shards") or []) for p in passes)
        rates.append(done / spent if spent > 0 else 0.0)
        run.overheads.append((spent - device) / committed if committed else None)
        seconds.append(spent)
        items, overhead, shards = items + done, overhead + spent - device, shards + committed
    if len(rates) != count:
        raise ValueError(f"the metadata lists {len(rates)} working processes, not {count}")
    if items != images or int(metadata.get("rows", -1)) != images:
        raise ValueError(f"{items} items embedded, table rows {metadata.get('rows')}, not {images}")
    run.rank_rates, run.job_rate, run.items = rates, items / max(seconds), items
    run.overhead = overhead / shards if shards else None
    run.startup_s = run.wall_s - max(seconds)
    if run.design == "ray":  # no probe: img_search's own count
        run.top_calls = max(int(p.get("collectives") or 0) for p in processes)
        run.bytes = max(int(p.get("collective_bytes") or 0) for p in processes)


def read_lockstep(
    stdout: str, stderr: str, ranks: int, images: int
) -> tuple[list[float], float, int]:
    row = summary_row(stderr)
    items = int(row["rows"]) + int(row["errors"])
    rows = re.findall(r"^rows: (\d+)$", stdout, re.M)
    if items != images or not rows or int(rows[-1]) != images:
        raise ValueError(f"{items} items in the summary, 'rows: {rows[-1:] or '?'}', not {images}")
    job = float(row["items/s"])
    return [job / ranks] * ranks, job, items


def run_one(design: Design, ranks: int, args: argparse.Namespace, folder: Path) -> Run:
    run = Run(design.name, ranks)
    name = f"{design.name}-{ranks}"
    probe_dir, output = args.work / "probe" / name, args.work / "out" / f"{name}.parquet"
    log = args.work / "logs" / f"{name}.log"
    for stale in (probe_dir, output, Path(f"{output}.partial")):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    probing = probe_dir if design.name != "ray" else None
    for d in (probing, output.parent, log.parent):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    if design.name == "ray":  # one command, the driver; no torchrun, no probe
        launcher = [sys.executable, "-m", MODULE]
    else:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",  # = torchrun, with this interpreter
            "--standalone",
            "--nproc_per_node",
            str(ranks),
            str(PROBE),
            MODULE,
        ]
    command = [
        *launcher,
        *model_overrides(design.tree, args.batch_seconds, args.jitter),
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"tasks.batch_size={args.batch_size}",
        f"tasks.num_workers={args.workers}",
        "tasks.cpu=true",
        "tasks.overwrite=true",
        *design.extra,
        *([f"engine.workers={ranks}"] if design.name == "ray" else []),
        f"output_path={output}",
    ]
    code, run.wall_s = launch(
        command, design.tree, design_env(design.tree, probing), log, args.timeout
    )
    stderr_path = log.with_suffix(".stderr")
    try:
        if code is None:
            raise ValueError(f"timed out after {args.timeout:.0f} s")
        if code != 0:
            raise ValueError(f"exit code {code}")
        if design.name == "ray":  # collectives (none expected) from the metadata
            read_processes(output, ranks, args.images, run)
            run.ok = True
            return run
        probes = probe_files(probe_dir, ranks)
        where = {str(p["img_search_file"]) for p in probes}
        if not all(Path(w).resolve().is_relative_to(design.tree.resolve()) for w in where):
            raise ValueError(f"imported img_search from {sorted(where)}, not {design.tree}")
        run.img_search_file = sorted(where)[0]
        run.top_calls = max(p["top_level_calls"] for p in probes)
        run.tensor_calls = max(p["tensor_calls"] for p in probes)
        run.bytes = max(p["bytes"] for p in probes)
        if design.name == "shards":
            read_processes(output, ranks, args.images, run)
        else:
            run.rank_rates, run.job_rate, run.items = read_lockstep(
                log.with_suffix(".stdout").read_text(), stderr_path.read_text(), ranks, args.images
            )
        run.ok = True
    except Exception as exc:  # any failure: say why, show the launch's stderr, go on
        run.problem = str(exc)
        print(f"\n!! {design.name} with {ranks} {noun(design)}(s) failed: {exc}", flush=True)
        print(f"   command: {' '.join(command)}\n   cwd: {design.tree}", flush=True)
        print(f"   last lines of {stderr_path}:\n{tail(stderr_path)}\n", flush=True)
    return run


# -- reporting ------------------------------------------------------------------------


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


@dataclass
class Relative:
    mean: float | None = None
    low: float | None = None
    aggregate: float | None = None


def relative(run: Run, base: float | None) -> Relative:
    if not run.ok or not base:
        return Relative()
    per = [r / base for r in run.rank_rates]
    return Relative(statistics.fmean(per), min(per), run.job_rate / (run.ranks * base))


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def ms(seconds: float | None) -> str:
    return fmt(None if seconds is None else seconds * 1000, ".1f")


def noun(design: Design) -> str:
    return "worker" if design.name == "ray" else "rank"


def costs(run: Run, per: str) -> str:
    """The shards and ray designs' overhead per shard and start-up, as a part of a run's line."""
    each = ", ".join(ms(o) for o in run.overheads)
    return (
        f"| overhead/shard {ms(run.overhead)} ms (per {per} {each}) "
        f"| start-up {fmt(run.startup_s, '.1f')} s "
    )


def ray_missing() -> str | None:
    """Why ``import ray`` fails for the launches (this interpreter, the working tree), or None."""
    done = python_in(REPO, "import ray")
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images",
        type=int,
        default=4000,
        help="tiny JPEGs of the job (4,000: the size of the issue's lockstep reference; 8 ranks "
        "embed for only 3.5 s each, so a process's fixed costs per pass show)",
    )
    parser.add_argument("--ranks", default="1,2,4,8", help="numbers of processes, comma-separated")
    parser.add_argument(
        "--designs",
        default=None,
        help="shards (working tree), lockstep (old), ray (working tree, engine=ray); default: "
        "all three, ray skipped (with the reason) when it does not import",
    )
    parser.add_argument(
        "--ray-workers", default="1,2,4", help="numbers of Ray workers, comma-separated"
    )
    parser.add_argument(
        "--ray-cpus",
        type=float,
        default=0.5,
        help="engine.num_cpus_per_worker (the local Ray gets max(cores, ⌈workers × it⌉) CPUs; "
        "the simulated model takes none)",
    )
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "img_search_scale"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--batch-seconds", type=float, default=0.05, help="simulated device time per batch"
    )
    parser.add_argument("--jitter", type=float, default=0.3, help="± fraction of --batch-seconds")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=48,
        help="tasks.shard_size of the shards and ray designs (whole batches; the listing's tail "
        "shrinks to one batch after it)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="tasks.num_workers of every launch (0: each rank decodes its tiny JPEGs itself)",
    )
    parser.add_argument("--old-commit", default=OLD_COMMIT, help="the lockstep design's commit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per launch")
    args = parser.parse_args()
    ranks = sorted({int(r) for r in args.ranks.split(",") if r.strip()})
    ray_workers = sorted({int(r) for r in args.ray_workers.split(",") if r.strip()})
    asked = [d.strip() for d in (args.designs or "shards,lockstep,ray").split(",") if d.strip()]
    known = ("shards", "lockstep", "ray")
    unknown = sorted(set(asked) - set(known))
    designs = [d for d in known if d in asked]  # ray last: its lines compare with shards' 1 rank
    if unknown or not designs or not ranks or min(ranks) < 1:
        parser.error(
            f"--designs: shards, lockstep and/or ray (got {unknown or asked}); --ranks ≥ 1"
        )
    if "ray" in designs and (not ray_workers or min(ray_workers) < 1 or args.ray_cpus <= 0):
        parser.error("--ray-workers ≥ 1 and --ray-cpus > 0")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)

    ideal = args.batch_size / args.batch_seconds
    print(
        f"cores: {os.cpu_count()}  images: {args.images} (32x24 JPEG)  batch: {args.batch_size}  "
        f"simulated device time: {args.batch_seconds * 1000:.0f} ms ± {args.jitter:.0%} per batch "
        f"(ideal {ideal:.0f} items/s per rank)  work: {args.work}",
        flush=True,
    )
    skipped = False
    if "ray" in designs and (why := ray_missing()) is not None:
        print(
            f"ray: skipped, Ray does not import ({why}); pip install 'img_search[ray]'", flush=True
        )
        designs.remove("ray")
        skipped = args.designs is not None  # asked for by name: the script fails at the end
    folder = args.work / f"images-{args.images}"
    write_images(folder, args.images)

    worktree: tuple[Path, Path] | None = None
    results: dict[tuple[str, int], Run] = {}
    plan: list[Design] = []
    shard_size = f"tasks.shard_size={args.shard_size}"
    try:
        for name in designs:
            if name == "shards":
                plan.append(Design(name, "shards (working tree)", REPO, [shard_size], ranks))
            elif name == "ray":
                extra = [
                    shard_size,
                    "engine=ray",
                    "engine.address=local",
                    f"engine.num_cpus_per_worker={args.ray_cpus:g}",
                ]
                plan.append(
                    Design(name, "ray (working tree, engine=ray)", REPO, extra, ray_workers)
                )
            else:
                worktree = add_worktree(args.old_commit)
                plan.append(Design(name, f"lockstep ({args.old_commit})", worktree[1], [], ranks))
        for design in plan:
            print(
                f"{design.name}: img_search imported from {imported_from(design.tree)}", flush=True
            )
        for design in plan:
            if design.name == "ray":
                for n in design.counts:
                    run = results[(design.name, n)] = run_one(design, n, args, folder)
                    if run.ok:
                        print(ray_line(run, results, ray_workers, ideal), flush=True)
                continue
            base: float | None = None
            for n in design.counts:
                run = run_one(design, n, args, folder)
                results[(design.name, n)] = run
                if n == 1 and run.ok:
                    base = run.rank_rates[0]
                if not run.ok:
                    continue
                rel = relative(run, base if 1 in ranks else ideal)
                print(
                    f"{design.name:8} {n} rank(s): per-rank {fmt(rel.mean)} mean / {fmt(rel.low)} min "
                    f"of the 1-rank rate | aggregate {fmt(rel.aggregate)} of N × it "
                    f"({run.job_rate:.1f} items/s, per rank {', '.join(f'{r:.1f}' for r in run.rank_rates)}) "
                    f"| collective calls/rank {run.top_calls} (tensor-level {run.tensor_calls}) "
                    f"| bytes/rank {size(run.bytes)} "
                    + (costs(run, "rank") if design.name == "shards" else "")
                    + f"| wall {run.wall_s:.1f} s",
                    flush=True,
                )
    finally:
        if worktree is not None:
            remove_worktree(*worktree)

    report(plan, ranks, results, args, ideal)
    if any(d.name == "ray" for d in plan):
        report_ray(plan, ranks, ray_workers, results, ideal)
    failed = [f"{d}-{n}" for (d, n), r in results.items() if not r.ok]
    if skipped:
        failed.append("ray (does not import)")
    if failed:
        print(f"FAILED: {', '.join(failed)} (logs in {args.work / 'logs'})")
        sys.exit(1)


def base_rate(results: dict[tuple[str, int], Run], design: str, counts: list[int]) -> float | None:
    """The 1-process rate of a design (None: its 1-process run failed or did not run)."""
    one = results.get((design, 1))
    return one.rank_rates[0] if 1 in counts and one is not None and one.ok else None


def ray_line(
    run: Run, results: dict[tuple[str, int], Run], ray_workers: list[int], ideal: float
) -> str:
    """A Ray run against the 1-worker Ray rate and against the 1-rank rate of the shards design."""
    own = relative(run, base_rate(results, "ray", ray_workers) if 1 in ray_workers else ideal)
    local = relative(run, base_rate(results, "shards", [1]))
    return (
        f"ray      {run.ranks} worker(s): per-worker {fmt(own.mean)} mean / {fmt(own.low)} min "
        f"of the 1-worker rate, {fmt(local.mean)}/{fmt(local.low)} of the 1-rank local rate "
        f"| aggregate {fmt(own.aggregate)} of N × the 1-worker rate, {fmt(local.aggregate)} of "
        f"N × the 1-rank local rate ({run.job_rate:.1f} items/s, per worker "
        f"{', '.join(f'{r:.1f}' for r in run.rank_rates)}) | collective calls/worker "
        f"{run.top_calls} " + costs(run, "worker") + f"| wall {run.wall_s:.1f} s"
    )


def print_table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def report(
    plan: list[Design],
    ranks: list[int],
    results: dict[tuple[str, int], Run],
    args: Any,
    ideal: float,
) -> None:
    plan = [d for d in plan if d.name != "ray"]  # Ray: report_ray
    if not plan:
        return
    bases = {d.name: base_rate(results, d.name, ranks) for d in plan}
    print()
    if 1 not in ranks:
        print(f"(no 1-rank run: rates are relative to the ideal {ideal:.0f} items/s per rank)")
    for design in plan:
        base = bases[design.name] if 1 in ranks else ideal
        print(f"{design.label}: 1-rank rate {fmt(base, '.1f')} items/s")
    head = ["ranks"]
    for design in plan:
        short = design.name
        head += [f"{short} per-rank mean/min", f"{short} aggregate", "calls", "bytes", "wall s"]
    rows = []
    for n in ranks:
        row = [str(n)]
        for design in plan:
            run = results.get((design.name, n))
            if run is None or not run.ok:
                row += ["FAILED", "-", "-", "-", "-"]
                continue
            rel = relative(run, bases[design.name] if 1 in ranks else ideal)
            per = fmt(rel.mean) if design.name == "lockstep" else f"{fmt(rel.mean)}/{fmt(rel.low)}"
            row += [
                per,
                fmt(rel.aggregate),
                str(run.top_calls),
                size(run.bytes),
                f"{run.wall_s:.1f}",
            ]
        rows.append(row)
    print_table(head, rows)
    print(
        "(per-rank: items/s of a rank / the 1-rank rate; aggregate: job items/s / (N × the 1-rank rate); "
        "calls, bytes: collectives per rank, max over ranks)"
    )
    print(
        "reference, lockstep measured before on this machine (4,000 images): "
        + ", ".join(f"{n} ranks {v:.2f}" for n, v in REFERENCE_LOCKSTEP.items())
    )
    for design in plan:
        run = results.get((design.name, GOAL_RANKS))
        if run is None:
            verdict = f"not measured (add {GOAL_RANKS} to --ranks)"
        elif not run.ok:
            verdict = "FAILED"
        else:
            value = relative(run, bases[design.name] if 1 in ranks else ideal).aggregate
            verdict = (
                f"{fmt(value)} ({'met' if value is not None and value >= GOAL else 'NOT met'})"
            )
        print(
            f"goal: {GOAL_RANKS} ranks ≥ {GOAL} × {GOAL_RANKS} × the 1-rank rate — {design.name}: {verdict}"
        )


def report_ray(
    plan: list[Design],
    ranks: list[int],
    ray_workers: list[int],
    results: dict[tuple[str, int], Run],
    ideal: float,
) -> None:
    """engine=ray next to the local engine (the shards design), by number of processes."""
    local = any(d.name == "shards" for d in plan)
    local_base = base_rate(results, "shards", ranks) if local else None
    ray_base = base_rate(results, "ray", ray_workers)
    print()
    if 1 not in ray_workers:
        print(f"(no 1-worker run: Ray rates are relative to the ideal {ideal:.0f} items/s)")
    print(
        f"ray (working tree, engine=ray): 1-worker rate {fmt(ray_base, '.1f')} items/s"
        + (
            f"; shards (engine=local): 1-rank rate {fmt(local_base, '.1f')} items/s"
            if local
            else ""
        )
    )
    head = [
        "engine",
        "N",
        "per-process mean/min",
        "of local 1-rank",
        "aggregate",
        "of local",
        "overhead/shard ms",
        "start-up s",
        "wall s",
    ]
    rows = []
    for n in sorted(set(ray_workers) | (set(ranks) if local else set())):
        for name, counts, own in (
            ("shards", ranks if local else [], local_base),
            ("ray", ray_workers, ray_base),
        ):
            if n not in counts:
                continue
            run = results.get((name, n))
            if run is None or not run.ok:
                rows.append([name, str(n), "FAILED", *["-"] * (len(head) - 3)])
                continue
            rel = relative(run, own if 1 in counts else ideal)
            vs_local = relative(run, local_base)
            rows.append(
                [
                    "local" if name == "shards" else "ray",
                    str(n),
                    f"{fmt(rel.mean)}/{fmt(rel.low)}",
                    f"{fmt(vs_local.mean)}/{fmt(vs_local.low)}",
                    fmt(rel.aggregate),
                    fmt(vs_local.aggregate),
                    ms(run.overhead),
                    fmt(run.startup_s, ".1f"),
                    f"{run.wall_s:.1f}",
                ]
            )
    print_table(head, rows)
    print(
        "(per-process: items/s of a rank or Ray worker / its engine's 1-process rate, and / the local "
        "1-rank rate; aggregate: job items/s / (N × those rates); overhead/shard: (pass seconds − "
        "forward seconds) / shards committed, over all processes; start-up: wall − the slowest "
        "process's pass; the Ray driver is no process here)"
    )


if __name__ == "__main__":
    main()
