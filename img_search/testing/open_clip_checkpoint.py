"""A tiny random-weight open_clip checkpoint in the Hub layout, built offline by open_clip itself.

``build_tiny_open_clip(folder)`` writes ``open_clip_config.json`` (a small custom ``model_cfg``
and a ``preprocess_cfg`` unlike open_clip's defaults: bilinear resizing, a mean and std of its
own) and lets ``open_clip.create_model("local-dir:<folder>")`` build the model from it (no
weights there yet, so random and seeded), then saves its ``state_dict`` as
``open_clip_pytorch_model.bin``, the file name of open_clip's Hub repositories. Loading the
folder again through ``local-dir:`` is loading a downloaded ``hf-hub:`` repository.

The text tower uses open_clip's default tokenizer, whose BPE vocabulary (49,408 tokens) ships
inside the package; the checkpoint is about 13 MB, nearly all of it the token embeddings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

__all__ = [
    "PHOTO_SIZES",
    "TINY_OPEN_CLIP_DIM",
    "TINY_OPEN_CLIP_PREPROCESS",
    "build_open_clip_sized",
    "build_tiny_open_clip",
    "open_clip_vectors",
    "put_in_hub_cache",
    "write_photos",
]

#: Embedding dimension of the tiny checkpoint.
TINY_OPEN_CLIP_DIM = 32
_MODEL_CFG = {
    "embed_dim": TINY_OPEN_CLIP_DIM,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: The checkpoint's own preprocessing: shortest side to 64, centre crop, bilinear, its own statistics.
TINY_OPEN_CLIP_PREPROCESS = {
    "interpolation": "bilinear",
    "resize_mode": "shortest",
    "mean": [0.5, 0.45, 0.4],
    "std": [0.25, 0.25, 0.3],
}


def build_tiny_open_clip(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint into ``path`` (created); returns ``path``."""
    config = {"model_cfg": _MODEL_CFG, "preprocess_cfg": TINY_OPEN_CLIP_PREPROCESS}
    return _build(Path(path), config, seed)


def build_open_clip_sized(path: str | Path, architecture: str = "ViT-B-32", seed: int = 0) -> Path:
    """A random-weight checkpoint of an open_clip architecture (``ViT-B-32``: 151M parameters,
    ~600 MB) with open_clip's default preprocessing, in the same layout (benchmarks)."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    model_cfg = open_clip.get_model_config(architecture)
    size = model_cfg["vision_cfg"]["image_size"]
    preprocess = {
        "size": size,
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    return _build(Path(path), {"model_cfg": model_cfg, "preprocess_cfg": preprocess}, seed)


def _build(folder: Path, config: dict, seed: int) -> Path:
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "no CLIP weights found": that is the point
    try:
        model = open_clip.create_model(f"local-dir:{folder}")
    finally:
        logging.getLogger().setLevel(quiet)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def put_in_hub_cache(folder: str | Path, cache: str | Path, repo_id: str) -> Path:
    """Copy a checkpoint folder into a Hub cache (``HF_HUB_CACHE``) as the ``main`` of ``repo_id``.

    With ``HF_HUB_OFFLINE=1`` and that cache, ``hf-hub:<repo_id>`` loads these files through
    the Hub client's own cache lookup, as after a download: the Hub code path, offline.
    Returns the snapshot folder.
    """
    import shutil

    commit = "0" * 40
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in Path(folder).iterdir():
        shutil.copy2(file, snapshot / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


#: (width, height) of ``write_photos``: square, wide, tall, strips, smaller than the model's input
PHOTO_SIZES = [(64, 64), (200, 80), (80, 200), (640, 48), (33, 300), (17, 23), (96, 95), (150, 150)]


def write_photos(folder: str | Path) -> list[str]:
    """PNGs and JPEGs of several sizes and aspect ratios (one grey), named ``p<n>.png|jpg``."""
    from img_search.testing.fixtures import synthetic_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for number, size in enumerate(PHOTO_SIZES):
        image = synthetic_image(number, size)
        if number == 3:
            image = image.convert("L")
        name = f"p{number}.{'png' if number % 2 else 'jpg'}"
        image.save(folder / name)
        names.append(name)
    return names


def open_clip_vectors(folder: str | Path, images=None, texts=None):
    """What a user gets from open_clip itself, normalised: ``encode_image(preprocess(image))`` for
    each of ``images``, or ``encode_text(tokenizer(texts))``."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    model.eval()
    with torch.no_grad():
        if images is not None:
            vectors = model.encode_image(torch.stack([preprocess(image) for image in images]))
        else:
            vectors = model.encode_text(open_clip.get_tokenizer(f"local-dir:{folder}")(texts))
    return torch.nn.functional.normalize(vectors, dim=-1).numpy()
