"""Small local datasets with the columns of the Hub ones, for tests and offline experiments.

``write_inquire_like`` and ``write_flickr30k_like`` write the Hub layout
(``data/<split>-00000-of-00001.parquet`` with image bytes embedded), so
``datasets.<name>.path=<folder>`` points the real dataset classes at them.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def synthetic_image(seed: int, size: tuple[int, int] | None = None) -> Image.Image:
    """A distinct, deterministic RGB picture: smooth colour field plus a few rectangles."""
    rng = np.random.default_rng(seed)
    width, height = size or (int(rng.integers(48, 160)), int(rng.integers(48, 160)))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, size=3)
    slope = rng.uniform(-2, 2, size=(3, 2))
    pixels = np.stack([base[c] + slope[c, 0] * xs + slope[c, 1] * ys for c in range(3)], axis=-1)
    for _ in range(3):
        x0 = int(rng.integers(0, max(1, width - 8)))
        y0 = int(rng.integers(0, max(1, height - 8)))
        pixels[y0 : y0 + int(rng.integers(4, 40)), x0 : x0 + int(rng.integers(4, 40))] = (
            rng.uniform(0, 255, 3)
        )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _write_split(root: Path, split: str, rows: dict[str, list], features: object) -> None:
    import datasets

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_dict(rows, features=features)
    table.to_parquet(str(data / f"{split}-00000-of-00001.parquet"))


def inquire_file_name(index: int) -> str:
    return f"train/{index % 7:05d}_Animalia_Chordata_Aves_Species_{index % 7}/{index:08x}-img.jpg"


def write_inquire_like(
    root: str | Path,
    n_images: int = 41,
    splits: tuple[str, ...] = ("validation", "test"),
    candidates_per_query: int = 10,
    seed: int = 0,
) -> list[str]:
    """INQUIRE-Rerank-shaped copy: rows are (query, candidate) pairs; images recur across rows.

    Returns the distinct ``inat24_file_name`` values in first-seen order
    (validation rows first, as the dataset class concatenates splits).
    """
    import datasets

    root = Path(root)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "query": datasets.Value("string"),
            "relevant": datasets.Value("int64"),
            "clip_score": datasets.Value("float64"),
            "inat24_image_id": datasets.Value("int64"),
            "inat24_file_name": datasets.Value("string"),
            "supercategory": datasets.Value("string"),
            "category": datasets.Value("string"),
            "iconic_group": datasets.Value("string"),
            "inat24_species_id": datasets.Value("int64"),
            "inat24_species_name": datasets.Value("string"),
            "latitude": datasets.Value("float64"),
            "longitude": datasets.Value("float64"),
            "location_uncertainty": datasets.Value("float64"),
            "date": datasets.Value("string"),
            "query_id": datasets.Value("int64"),
        }
    )
    images = [jpeg_bytes(synthetic_image(seed * 100_000 + i)) for i in range(n_images)]
    rng = np.random.default_rng(seed)
    order: list[int] = []
    per_split = np.array_split(np.arange(n_images), len(splits))
    query_id = 0
    for split, own in zip(splits, per_split, strict=True):
        rows: dict[str, list] = {name: [] for name in features}
        # Every image of this split appears at least once; some appear for several queries.
        pool = list(own) + list(rng.choice(own, size=max(1, len(own) // 3), replace=True))
        for start in range(0, len(pool), candidates_per_query):
            chunk = pool[start : start + candidates_per_query]
            for index in chunk:
                index = int(index)
                if index not in order:
                    order.append(index)
                rows["image"].append({"bytes": images[index], "path": None})
                rows["query"].append(f"query {query_id}")
                rows["relevant"].append(int(rng.integers(0, 2)))
                rows["clip_score"].append(float(rng.uniform(0, 1)))
                rows["inat24_image_id"].append(1_000_000 + index)
                rows["inat24_file_name"].append(inquire_file_name(index))
                rows["supercategory"].append("Birds")
                rows["category"].append("Appearance")
                rows["iconic_group"].append("Aves")
                rows["inat24_species_id"].append(index % 7)
                rows["inat24_species_name"].append(f"Species {index % 7}")
                rows["latitude"].append(0.0)
                rows["longitude"].append(0.0)
                rows["location_uncertainty"].append(10.0)
                rows["date"].append("2021-06-01")
                rows["query_id"].append(query_id)
            query_id += 1
        _write_split(root, split, rows, features)
    return [inquire_file_name(i) for i in order]


def write_flickr30k_like(root: str | Path, n_images: int = 12, seed: int = 1) -> list[str]:
    """lmms-lab/flickr30k-shaped copy (split ``test``); returns the file-name stems in order."""
    import datasets

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Sequence(datasets.Value("string")),
            "sentids": datasets.Sequence(datasets.Value("string")),
            "img_id": datasets.Value("string"),
            "filename": datasets.Value("string"),
        }
    )
    rows: dict[str, list] = {name: [] for name in features}
    stems = []
    for i in range(n_images):
        stem = str(1_000_092_795 + i * 17)
        stems.append(stem)
        rows["image"].append(
            {"bytes": jpeg_bytes(synthetic_image(seed * 100_000 + i)), "path": None}
        )
        rows["caption"].append([f"picture {i} caption {k}" for k in range(5)])
        rows["sentids"].append([str(i * 5 + k) for k in range(5)])
        rows["img_id"].append(str(i))
        rows["filename"].append(f"{stem}.jpg")
    _write_split(Path(root), "test", rows, features)
    return stems


def write_photo_folder(
    root: str | Path, count: int, size: tuple[int, int] = (32, 24), per_folder: int = 500
) -> list[str]:
    """``count`` small distinct JPEGs under ``root`` (subfolders of ``per_folder``); returns their ids.

    Ids are what ``image_folder`` makes of them: the path relative to ``root``.
    """
    relative = [f"{i // per_folder:03d}/{i:06d}.jpg" for i in range(count)]
    return write_jpegs(root, relative, size)


def write_jpegs(root: str | Path, relative: list[str], size: tuple[int, int]) -> list[str]:
    """``synthetic_image(i)`` at ``root / relative[i]`` (files already there are kept); returns ``relative``."""
    for number, name in enumerate(relative):
        path = Path(root) / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg_bytes(synthetic_image(number, size), quality=85))
    return relative


def inat24_class_folder(number: int) -> str:
    return f"{number:05d}_Animalia_Chordata_Aves_Genus_species{number}"


def write_inat24_like(
    root: str | Path, classes: int, per_class: int, size: tuple[int, int] = (32, 32)
) -> list[str]:
    """iNat24's layout under ``root``: ``train/<class folder>/<uuid-like name>.jpg``, small JPEGs.

    Returns the paths relative to ``root`` as INQUIRE's annotations write them
    (``train/00003_Animalia_…/0000002a-….jpg``), class by class.
    """
    relative = [
        f"train/{inat24_class_folder(n // per_class)}/{n:08x}-{n * 7919 % 65536:04x}-img.jpg"
        for n in range(classes * per_class)
    ]
    return write_jpegs(root, relative, size)


def write_img2dataset_tar(
    tar: str | Path, samples: list[dict[str, Any]], failed: Sequence[str] = ()
) -> None:
    """One shard as img2dataset writes it: ``<stem>.tar``, ``<stem>.parquet``, ``<stem>_stats.json``.

    A sample is ``{"key": ..., <extension>: bytes | str | dict, ...}`` (a dict
    is written as JSON); its members follow in the sample's order. The
    Parquet lists every sample as ``success`` and the ``failed`` keys as
    failed downloads (not in the tar), with img2dataset's columns.
    """
    tar = Path(tar)
    tar.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as archive:
        for sample in samples:
            for extension, value in sample.items():
                if extension == "key":
                    continue
                if isinstance(value, dict):
                    value = json.dumps(value)
                data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                member = tarfile.TarInfo(f"{sample['key']}.{extension}")
                member.size, member.mtime, member.mode = len(data), 1_700_000_000, 0o444
                archive.addfile(member, io.BytesIO(data))
    keys = [str(s["key"]) for s in samples] + list(failed)
    pq.write_table(
        pa.table(
            {
                "key": keys,
                "status": ["success"] * len(samples) + ["failed_to_download"] * len(failed),
                "caption": [s.get("txt") for s in samples] + [None] * len(failed),
                "url": [f"https://example.org/{k}.jpg" for k in keys],
                "error_message": [None] * len(samples) + ["HTTP Error 404"] * len(failed),
            }
        ),
        tar.with_suffix(".parquet"),
    )
    stats = {"count": len(keys), "successes": len(samples), "failed_to_download": len(failed)}
    tar.with_name(f"{tar.stem}_stats.json").write_text(json.dumps(stats))


@dataclass
class Img2datasetLike:
    """What ``write_img2dataset_like`` wrote, by item id (``<tar stem>/<key>``)."""

    root: Path
    images: dict[str, bytes]  # every image a reader embeds, the corrupt one excepted
    corrupt: str  # a JPEG that does not decode
    no_image: str  # a sample with only a .txt
    truncated: Path  # a tar cut inside a sample's image
    lost: list[str]  # the samples the cut took (the img2dataset Parquet lists them)
    captions: dict[str, str] = field(default_factory=dict)  # id → .txt of every sample still held


def write_img2dataset_like(
    root: str | Path, shards: int = 6, per_shard: int = 5, seed: int = 7
) -> Img2datasetLike:
    """``shards`` img2dataset shards of ``per_shard`` samples (jpg, txt, json) and one failed download each.

    Shard 1 holds a corrupt JPEG, shard 2 a sample with only its caption, and
    shard 4 (with at least 4 of them) is cut in the middle of its fourth image.
    """
    if shards < 5 or per_shard < 4:
        raise ValueError("write_img2dataset_like needs at least 5 shards of 4 samples")
    root = Path(root)
    images, captions = {}, {}
    corrupt = no_image = ""
    for shard in range(shards):
        samples = []
        for i in range(per_shard):
            key = f"{shard:05d}{i:04d}"
            item_id, caption = (
                f"{shard:05d}/{key}",
                f"photo {shard * per_shard + i} of shard {shard}",
            )
            sample: dict[str, Any] = {"key": key}
            if (shard, i) == (1, 2):
                sample["jpg"], corrupt = b"\xff\xd8\xff\xe0 not really a JPEG", item_id
            elif (shard, i) != (2, 3):
                sample["jpg"] = images[item_id] = jpeg_bytes(
                    synthetic_image(seed * 1000 + shard * per_shard + i, (40, 30))
                )
            sample["txt"] = captions[item_id] = caption
            if (shard, i) == (2, 3):
                no_image = item_id
            else:
                sample["json"] = {"key": key, "caption": caption, "status": "success"}
            samples.append(sample)
        write_img2dataset_tar(
            root / f"{shard:05d}.tar", samples, failed=[f"{shard:05d}{per_shard:04d}"]
        )
    truncated = root / "00004.tar"
    with tarfile.open(truncated) as archive:
        cut = archive.getmember("000040003.jpg")
    with open(truncated, "r+b") as file:
        file.truncate(cut.offset_data + cut.size // 2)
    lost = [f"00004/00004{i:04d}" for i in range(3, per_shard)]
    for item_id in lost:
        del images[item_id], captions[item_id]
    return Img2datasetLike(root, images, corrupt, no_image, truncated, lost, captions)
