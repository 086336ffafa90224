"""Throughput: does the pipeline run at the speed of the model?

For each model it prints images/s of
  - model-only: the encoder's forward pass over already-preprocessed batches
    (same batch size and precision, warmed up, median of ``--repeats`` runs,
    alternated with the pipeline runs so both see the same machine);
  - preprocess-only: decode + the encoder's transform, one process;
  - pipeline: the real ``launch`` (loader workers, shard claims, commits, Parquet),
    measured by the run machinery itself (model loading excluded), median run;
then the pipeline/model-only ratio and the pipeline's per-stage seconds.
Finally the peak RSS (process tree) of the CLI embedding ``--rss-small`` vs
``--rss-large`` small images, to show memory does not grow with the dataset.

    python benchmarks/throughput.py                       # EfficientNet-Lite0 + SigLIP2-base-sized, 1000 JPEGs
    python benchmarks/throughput.py --models efficientnet_lite0 --images 300 --skip-rss

Everything (JPEGs of 500x375 at quality 90, a random-weight SigLIP2 with the
sizes of google/siglip2-base-patch16-224) is built in a temporary folder.
The last lines are the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from memory import sampled
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from img_search.embedding import get_encoder
from img_search.images import open_image
from img_search.testing.fixtures import synthetic_image

GOALS = {"efficientnet_lite0": 0.85, "siglip2_base": 0.90}


def write_jpegs(folder: Path, count: int, size: tuple[int, int], quality: int) -> list[Path]:
    """Photo-like JPEGs: smooth colour fields, shapes and sensor-like noise (not flat, not pure noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i // 1000:03d}" / f"img_{i:06d}.jpg"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            base = np.asarray(synthetic_image(i, size), dtype=np.float32)
            noise = rng.normal(0, 12, size=base.shape).astype(np.float32)
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(
                path, quality=quality
            )
        paths.append(path)
    return paths


def build_model(key: str, work: Path) -> tuple[str, dict]:
    """(config key of the models group, spec) for a benchmark model."""
    if key == "efficientnet_lite0":
        return "efficientnet_lite0", {
            "model": "efficientnet_lite0",
            "model_name": "efficientnet-lite0",
        }
    if key == "siglip2_base":
        from img_search.testing.checkpoints import build_siglip2_base_sized

        path = work / "siglip2-base-sized"
        if not (path / "config.json").exists():
            build_siglip2_base_sized(path)
        return "siglip2", {"model": "siglip2", "model_name": str(path)}
    raise SystemExit(f"unknown benchmark model {key}; choose from {sorted(GOALS)}")


def preprocess_only(transform, paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        transform(open_image(str(path)))
    return len(paths) / (time.perf_counter() - started)


def preprocessed_batches(transform, paths: list[Path], batch_size: int) -> list:
    return [
        transform.collate([transform(open_image(str(p))) for p in paths[i : i + batch_size]])
        for i in range(0, len(paths), batch_size)
    ]


def model_only(encoder, batches: list, images: int) -> float:
    """One timed pass of the forward over already-preprocessed batches."""
    started = time.perf_counter()
    for batch in batches:
        encoder.encode_images(batch)
    return images / (time.perf_counter() - started)


def pipeline(
    group_key: str,
    spec: dict,
    folder: Path,
    out: Path,
    batch_size: int,
    workers: int,
    extra: tuple[str, ...] = (),
):
    """One run of the embed job in this process; its ``PassStats`` (model loading excluded).
    ``extra``: more overrides (``tasks.precision=fp16``, ``tasks.decode=gpu``)."""
    from img_search.api.jobs import compose
    from img_search.pipeline.launch import launch
    from img_search.pipeline.modalities import IMAGES, image_dataset_specs
    from img_search.pipeline.plan import plan_job

    overrides = [
        f"models={group_key}",
        f"models.{group_key}.model_name={spec['model_name']}",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        f"tasks.batch_size={batch_size}",
        f"tasks.num_workers={workers}",
        "tasks.overwrite=true",
        "logging=quiet",
        *extra,
    ]
    cfg = compose("embed_config", overrides)
    job = plan_job(cfg, IMAGES, image_dataset_specs(cfg))
    ((stats,),) = [report.stats for report in launch(job).reports]
    return stats


def peak_rss_of(command: list[str]) -> float:
    """Peak resident memory (MiB) of a command and all its children, sampled every 50 ms."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with sampled(process.pid) as peaks:
        code = process.wait()
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {code}")
    return peaks.tree / 2**20


def rss_check(work: Path, small: int, large: int) -> tuple[float, float]:
    from img_search.testing.checkpoints import build_tiny_clip

    checkpoint = build_tiny_clip(work / "tiny-clip")
    results = []
    for count in (small, large):
        folder = work / f"rss-{count}"
        write_jpegs(folder, count, (64, 48), 85)
        out = work / f"rss-{count}.parquet"
        command = [
            sys.executable,
            "-m",
            "img_search.pipeline.embed",
            "models=clip",
            f"models.clip.model_name={checkpoint}",
            "datasets=image_folder",
            f"datasets.image_folder.path={folder}",
            f"output_path={out}",
            "tasks.batch_size=256",
            "tasks.overwrite=true",
        ]
        results.append(peak_rss_of(command))
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="efficientnet_lite0,siglip2_base")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=-1, help="loader workers (-1: the pipeline's auto)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of (model-only, pipeline); medians reported"
    )
    parser.add_argument(
        "--model-only-images", type=int, default=256, help="images per model-only run"
    )
    parser.add_argument("--rss-small", type=int, default=1000)
    parser.add_argument("--rss-large", type=int, default=50000)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "img_search_bench"
    )
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {device}  torch threads: {torch.get_num_threads()}  cores: {os.cpu_count()}")
    folder = args.work / f"jpegs-{args.images}"  # the pipeline embeds the whole folder
    paths = write_jpegs(folder, args.images, (500, 375), 90)
    print(
        f"{len(paths)} JPEGs of 500x375 (q90), {sum(p.stat().st_size for p in paths) / len(paths) / 1024:.0f} KiB each"
    )
    ratios = {}
    for key in args.models.split(","):
        group_key, spec = build_model(key, args.work)
        encoder = get_encoder(spec, name=group_key).load(device)
        transform = encoder.image_transform()
        pre = preprocess_only(transform, paths[: min(len(paths), 200)])
        sample = paths[: args.model_only_images]
        batches = preprocessed_batches(transform, sample, args.batch_size)
        encoder.encode_images(batches[0])  # warm-up
        # this machine's speed drifts between minutes: alternate the two measurements
        model_rates, runs = [], []
        for _ in range(args.repeats):
            model_rates.append(model_only(encoder, batches, len(sample)))
            runs.append(
                pipeline(
                    group_key,
                    spec,
                    folder,
                    args.work / f"{key}.parquet",
                    args.batch_size,
                    args.workers,
                )
            )
        model = statistics.median(model_rates)
        stats = sorted(runs, key=lambda s: s.items_per_s)[len(runs) // 2]  # the median run
        del encoder, batches
        ratios[key] = stats.items_per_s / model
        stages = "  ".join(f"{k} {v:.1f}s" for k, v in stats.stages.items())
        print(
            f"[{key}] batch {args.batch_size}, {args.repeats} rounds: model-only {model:.1f} img/s "
            f"(runs {', '.join(f'{r:.1f}' for r in model_rates)}) | preprocess-only {pre:.1f} img/s "
            f"(1 process) | pipeline {stats.items_per_s:.1f} img/s over {stats.rows} images "
            f"(runs {', '.join(f'{r.items_per_s:.1f}' for r in runs)}) | median run's stages: {stages}"
        )
    if not args.skip_rss:
        small, large = rss_check(args.work, args.rss_small, args.rss_large)
        print(
            f"peak RSS: {small:.0f} MiB for {args.rss_small} images, {large:.0f} MiB for {args.rss_large} images"
        )
        print(
            f"RSS ratio {args.rss_large} / {args.rss_small} images: {large / small:.2f} (goal <= 1.5)"
        )
    for key, ratio in ratios.items():
        goal = GOALS.get(key, 0.9) if device == "cpu" else 0.95
        print(f"{key}: pipeline / model-only = {ratio:.3f} (goal >= {goal})")


if __name__ == "__main__":
    main()
