"""The first GPU run, prepared: one command, one JSON, within 8 minutes on one H100.

    python benchmarks/gpu.py --out gpu.json        # on the GPU machine (docs/benchmarks.md)
    python benchmarks/gpu.py --smoke --out s.json  # the same steps on the CPU, tiny (make test)

In one run, writing the JSON again after each step (a run cut short keeps
what it measured):

  1. ``--images`` synthetic JPEGs of LAION-like sizes (sides from 128 to 1,600
     pixels, most near 500 x 400, photo-like noise, quality 85-95), generated
     there by one process per core;
  2. for a ViT-B/32-sized random open_clip checkpoint and a SigLIP2-base-sized
     random SigLIP2 (both built there, no download): model-only images/s (the
     forward over batches preprocessed beforehand, pinned, synchronised) and
     the pipeline's (the embed job in this process: loader workers = cores,
     shard claims, Parquet, model loading excluded), fp16, batch 256, with
     ``tasks.decode=cpu`` and, where the model's preprocessing runs on the
     device, ``tasks.decode=gpu``; pipeline ÷ model-only next to each;
  3. exact top-k over a ``--topk-rows`` x 768 float16 table: the products on
     the GPU (torch, block by block) against numpy's on the CPU, the same
     ranking code, and whether they agree;
  4. the device's name and memory, CUDA, cores, and the libraries' versions.

clip-retrieval reports 2,500 images/s per A100 for ViT-B/32 (its README):
the JSON's ``reference`` holds that number for the comparison.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from throughput import pipeline

from img_search.embedding import get_encoder

CLIP_RETRIEVAL_A100 = 2_500  # ViT-B/32 images/s per A100, clip-retrieval's README
FULL = {"images": 20_000, "batch": 256, "precision": "fp16", "topk_rows": 1_000_000, "dim": 768}
SMOKE = {"images": 48, "batch": 8, "precision": "fp32", "topk_rows": 20_000, "dim": 64}


def laion_like_size(rng: np.random.Generator) -> tuple[int, int]:
    """A (width, height) as web images come: a log-normal longer side, a common aspect ratio."""
    longer = int(np.clip(rng.lognormal(np.log(520), 0.35), 128, 1600))
    ratio = rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9, 5 / 4], p=[0.25, 0.3, 0.2, 0.15, 0.1])
    shorter = max(96, int(longer / ratio))
    return (longer, shorter) if rng.random() < 0.7 else (shorter, longer)


def write_jpeg(task: tuple[Path, int, float]) -> int:
    from PIL import Image

    from img_search.testing.fixtures import synthetic_image

    path, seed, scale = task
    rng = np.random.default_rng(seed)
    width, height = laion_like_size(rng)
    size = (max(16, int(width * scale)), max(16, int(height * scale)))
    base = np.asarray(synthetic_image(seed, size), dtype=np.float32)
    noisy = base + rng.normal(0, 10, size=base.shape).astype(np.float32)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
        path, quality=int(rng.integers(85, 96))
    )
    return path.stat().st_size


def write_jpegs(folder: Path, count: int, cores: int, scale: float) -> dict[str, Any]:
    """``count`` JPEGs in ``folder`` (kept between runs), one writer process per core."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tasks = [(folder / f"{i // 1000:03d}-{i:06d}.jpg", i, scale) for i in range(count)]
    todo = [t for t in tasks if not t[0].exists()]
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        pool.map(write_jpeg, todo, chunksize=64)
    sizes = [t[0].stat().st_size for t in tasks]
    return {
        "count": count,
        "mean_kib": round(sum(sizes) / len(sizes) / 1024, 1),
        "generate_s": round(time.perf_counter() - started, 1),
    }


def build_models(work: Path, smoke: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """name → (config key of the models group, spec): random checkpoints built in ``work``."""
    from img_search.testing.checkpoints import build_siglip2_base_sized, build_tiny_siglip2
    from img_search.testing.open_clip_checkpoint import build_open_clip_sized, build_tiny_open_clip

    vit, siglip2 = work / "vit_b32", work / "siglip2_base"
    if not (vit / "open_clip_pytorch_model.bin").exists():
        build_tiny_open_clip(vit) if smoke else build_open_clip_sized(vit, "ViT-B-32")
    if not (siglip2 / "config.json").exists():
        build_tiny_siglip2(siglip2) if smoke else build_siglip2_base_sized(siglip2)
    return {
        "vit_b32": ("open_clip", {"model": "open_clip", "model_name": str(vit)}),
        "siglip2_base": ("siglip2", {"model": "siglip2", "model_name": str(siglip2)}),
    }


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def model_only(encoder: Any, batches: list, images: int, device: str, repeats: int) -> float:
    """Images/s of the forward over preprocessed (pinned) batches: the median of ``repeats`` passes."""
    encoder.encode_images(batches[0])  # warm-up (kernels, autotuning)
    synchronize(device)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            encoder.encode_images(batch)
        synchronize(device)
        rates.append(images / (time.perf_counter() - started))
    return statistics.median(rates)


def preprocessed(transform: Any, paths: list[Path], batch: int, device: str) -> list:
    """Whole batches of ``paths`` through the model's own CPU preprocessing (threads: PIL and
    torch release the GIL), pinned on CUDA as the pipeline pins them."""
    from concurrent.futures import ThreadPoolExecutor

    from img_search.images import open_image
    from img_search.pipeline.reader.stream import _pin

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        features = list(pool.map(lambda p: transform(open_image(str(p))), paths))
    batches = [
        transform.collate(features[i : i + batch])
        for i in range(0, len(features) - batch + 1, batch)
    ]
    return [_pin(b) for b in batches] if device == "cuda" else batches


def measure_model(
    name: str, key: str, spec: dict, jpegs: Path, args: argparse.Namespace, settings: dict
) -> dict[str, Any]:
    from img_search.embedding.device_preprocess import device_preprocess

    device, batch = args.device, settings["batch"]
    encoder = get_encoder(spec, name=key).load(device, precision=settings["precision"])
    transform = encoder.image_transform()
    paths = sorted(jpegs.glob("*.jpg"))[: batch * 4]
    batches = preprocessed(transform, paths, batch, device)
    model = model_only(encoder, batches, len(batches) * batch, device, args.repeats)
    on_device = device_preprocess(transform) is not None
    parameters = sum(p.numel() for p in encoder.model.parameters())
    del encoder, batches
    if device == "cuda":
        torch.cuda.empty_cache()
    result: dict[str, Any] = {
        "parameters": parameters,
        "dim": None,
        "model_only_images_per_s": round(model, 1),
        "pipeline": {},
    }
    for decode in ("cpu", "gpu") if on_device else ("cpu",):
        extra = (
            f"tasks.precision={settings['precision']}",
            f"tasks.decode={decode}",
            *(("tasks.cpu=true",) if device == "cpu" else ()),
        )
        out = args.work / f"{name}-{decode}.parquet"
        stats = pipeline(key, spec, jpegs, out, batch, args.workers, extra)
        result["pipeline"][decode] = {
            "images_per_s": round(stats.items_per_s, 1),
            "ratio_to_model_only": round(stats.items_per_s / model, 3),
            "rows": stats.rows,
            "errors": stats.errors,
            "stages_s": {k: round(v, 2) for k, v in stats.stages.items()},
        }
        from img_search.store import read_metadata

        result["dim"] = read_metadata(out)["models"][key]["dim"]
    if not on_device:
        result["pipeline"]["gpu"] = {"skipped": "its preprocessing runs on the CPU only"}
    return result


def measure_exact_top_k(args: argparse.Namespace, settings: dict) -> dict[str, Any]:
    """The products on the device against numpy's, over the same table, with the same ranking."""
    from exact_topk import DATASET, MODEL, unit_vectors, write_table

    from img_search.search.exact import exact_top_k
    from img_search.store.blocks import decode_threads

    rows, dim = settings["topk_rows"], settings["dim"]
    table = args.work / f"topk-{rows}x{dim}"
    if not (table / "_common_metadata").exists():
        write_table(table, rows, dim, "float16", part_rows=max(1, rows // 8))
    queries = unit_vectors(np.random.default_rng(1), 250, dim)
    timings, found = {}, {}
    for where in ("cpu", args.device) if args.device != "cpu" else ("cpu", "torch-cpu"):
        device = None if where == "cpu" else where.removeprefix("torch-")
        started = time.perf_counter()
        found[where] = exact_top_k(table, queries, 50, MODEL, DATASET, device=device)
        synchronize(args.device)
        timings[where] = time.perf_counter() - started
    cpu, other = found["cpu"], found[list(found)[1]]
    return {
        "rows": rows,
        "dim": dim,
        "queries": 250,
        "k": 50,
        "decode_threads": decode_threads(),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "rows_per_s": {k: round(rows / v) for k, v in timings.items()},
        "identical_top_k_queries": int((cpu.rows == other.rows).all(axis=1).sum()),
        "largest_score_difference": float(np.abs(cpu.scores - other.scores).max()),
    }


def environment(device: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in (
        "img_search", "torch", "torchvision", "transformers", "accelerate", "open_clip_torch",
        "hydra-core", "omegaconf", "pyarrow", "numpy", "pillow", "faiss-cpu", "sentence-transformers",
    ):  # fmt: skip
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    info: dict[str, Any] = {
        "device": device,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch_cuda": torch.version.cuda,  # the build's CUDA (None for a CPU build)
        "versions": found,
    }
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        info.update(name=properties.name, memory_gib=round(properties.total_memory / 2**30, 1))
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny models and sizes")
    parser.add_argument("--images", type=int, help="JPEGs to embed (20,000; smoke 48)")
    parser.add_argument("--workers", type=int, help="loader workers (the cores)")
    parser.add_argument("--repeats", type=int, default=3, help="model-only passes (median)")
    parser.add_argument("--topk-rows", type=int, help="rows of the exact top-k table")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "img_search_gpu")
    args = parser.parse_args()
    settings = dict(SMOKE if args.smoke else FULL)
    settings.update(
        {k: v for k, v in (("images", args.images), ("topk_rows", args.topk_rows)) if v}
    )
    args.device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    cores = len(os.sched_getaffinity(0))
    args.workers = args.workers or (2 if args.smoke else cores)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "smoke": args.smoke,
        "environment": environment(args.device),
        "settings": {**settings, "loader_workers": args.workers},
        "reference": {"clip_retrieval_vit_b32_a100_images_per_s": CLIP_RETRIEVAL_A100},
        "models": {},
    }

    def save(step: str) -> None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"[{report['seconds']:6.1f} s] {step}", flush=True)

    jpegs = args.work / f"jpegs-{settings['images']}"
    report["images"] = write_jpegs(jpegs, settings["images"], cores, 0.125 if args.smoke else 1.0)
    save(f"{settings['images']} JPEGs")
    for name, (key, spec) in build_models(args.work, args.smoke).items():
        report["models"][name] = measure_model(name, key, spec, jpegs, args, settings)
        save(f"{name}: {json.dumps(report['models'][name])}")
    report["exact_top_k"] = measure_exact_top_k(args, settings)
    save(f"exact top-k: {json.dumps(report['exact_top_k'])}")


if __name__ == "__main__":
    sys.exit(main())
