"""open_clip checkpoints (BioCLIP, DFN, LAION, OpenAI's RN50s …) through open_clip's own factory.

``model_name`` is one of:

- ``hf-hub:org/repo`` (or ``org/repo``, as for the other kinds): a Hub repository in
  open_clip's layout, at ``revision``;
- a local folder in that layout (``open_clip_config.json`` plus weights), given as a path;
- an open_clip architecture (``ViT-B-32``) with ``pretrained=<tag>`` (or a weights file).

Model, image transform and tokenizer are what ``open_clip.create_model_and_transforms`` (its
validation transform) and ``open_clip.get_tokenizer`` give for that checkpoint, so the vectors
are ``encode_image(preprocess(image))`` and ``encode_text(tokenizer(texts))``, normalised.
A Hub checkpoint's config and weights are fetched first and loaded from the folder they land
in: that fails in seconds when the Hub cannot serve them, where open_clip would go on with
random weights when only its weights download fails, and it pins ``revision``, which
open_clip's ``hf-hub:`` cannot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from img_search.embedding.base import Encoder, ImageTransform
from img_search.failures import prepare_hub

HUB_PREFIX = "hf-hub:"
FOLDER_PREFIX = "local-dir:"
CONFIG_FILE = "open_clip_config.json"
#: What open_clip takes for weights in a folder (without one it would build a random model).
WEIGHT_SUFFIXES = ("safetensors", "bin", "pth")


@dataclass(frozen=True)
class Checkpoint:
    """Where a ``model_name`` points: ``hub`` (a repository id), ``folder`` (a path) or ``architecture``."""

    kind: str
    where: str


def parse_checkpoint(model_name: str) -> Checkpoint:
    """Read ``model_name`` the way the other kinds do: a path is local, ``org/repo`` is the Hub."""
    if model_name.startswith(HUB_PREFIX):
        return Checkpoint("hub", model_name[len(HUB_PREFIX) :])
    if model_name.startswith(FOLDER_PREFIX):
        return Checkpoint("folder", os.path.expanduser(model_name[len(FOLDER_PREFIX) :]))
    path = os.path.expanduser(model_name)
    written_as_path = model_name.startswith(("/", ".", "~")) or model_name.count("/") > 1
    if written_as_path or os.path.isdir(path):
        return Checkpoint("folder", path)
    if "/" in model_name:
        return Checkpoint("hub", model_name)
    return Checkpoint("architecture", model_name)


class OpenCLIPImageTransform(ImageTransform):
    """The checkpoint's own validation transform (torchvision, picklable), run in loader workers."""

    def __init__(self, transform: Any, preprocess_cfg: dict[str, Any]) -> None:
        self.transform = transform
        #: open_clip's ``PreprocessCfg`` of the checkpoint, JSON-plain (lists, not tuples).
        self.preprocess_cfg = json.loads(json.dumps(preprocess_cfg))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def resize_target(self, width: int, height: int) -> tuple[int, int] | None:
        """``shortest`` scales the shorter side to the target (aspect kept); ``longest`` and ``squash`` do not grow."""
        if self.preprocess_cfg.get("resize_mode", "shortest") != "shortest":
            return None
        size = self.preprocess_cfg["size"]
        target_h, target_w = (size, size) if isinstance(size, int) else size
        scale = max(target_h / height, target_w / width)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def describe(self) -> dict[str, Any]:
        return {"transform": "open_clip", **self.preprocess_cfg}


class OpenCLIPEncoder(Encoder):
    """Any open_clip image/text model; ``pretrained`` names the weights of an architecture name."""

    kind = "open_clip"

    def __init__(
        self,
        name: str,
        model_name: str,
        pretrained: str | None = None,
        revision: str | None = None,
    ) -> None:
        super().__init__(name, model_name, revision)
        self.pretrained = pretrained
        self.model: Any = None
        self.tokenizer: Any = None
        self.transform: OpenCLIPImageTransform | None = None

    def source(self) -> dict[str, Any]:
        return {**super().source(), "pretrained": self.pretrained}

    def _load(self) -> None:
        checkpoint = parse_checkpoint(self.model_name)
        name, config = self._resolve(checkpoint)
        import open_clip

        with open_clip_info_hidden():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=self.pretrained if checkpoint.kind == "architecture" else None
            )
            if checkpoint.kind == "hub" and config.get("text_cfg", {}).get("hf_tokenizer_name"):
                # a Hugging Face tokenizer: open_clip fetches it by the Hub id its config names
                name = HUB_PREFIX + checkpoint.where
            self.tokenizer = open_clip.get_tokenizer(name)
        self.model = model.eval().to(self.device)
        self.transform = OpenCLIPImageTransform(preprocess, model.visual.preprocess_cfg)
        self.dim = int(config["embed_dim"])

    def _resolve(self, checkpoint: Checkpoint) -> tuple[str, dict[str, Any]]:
        """The name open_clip loads, and the checkpoint's ``model_cfg``; Hub files fetched first."""
        if checkpoint.kind != "architecture" and self.pretrained:
            raise ValueError(
                f"models.{self.name}.pretrained={self.pretrained} applies to an open_clip "
                f"architecture name; {self.model_name} brings its own weights (pretrained=null)"
            )
        if checkpoint.kind == "architecture":
            return checkpoint.where, self._architecture(checkpoint.where)
        if checkpoint.kind == "hub":
            prepare_hub(checkpoint.where)  # no network: fail in seconds, not after retries
            folder = fetch_hub_checkpoint(checkpoint.where, self.revision)
        else:
            folder = Path(checkpoint.where).resolve()
            if not (folder / CONFIG_FILE).is_file():
                raise FileNotFoundError(
                    f"model {self.name}: no open_clip checkpoint at {folder} (no {CONFIG_FILE}; "
                    "a folder in the layout of open_clip's Hub repositories is needed)"
                )
            if not any(any(folder.glob(f"*.{suffix}")) for suffix in WEIGHT_SUFFIXES):
                raise FileNotFoundError(
                    f"model {self.name}: no weights in {folder} "
                    f"({', '.join('*.' + s for s in WEIGHT_SUFFIXES)})"
                )
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        return FOLDER_PREFIX + str(folder), config["model_cfg"]

    def _architecture(self, arch: str) -> dict[str, Any]:
        """An architecture needs its weights named: a tag open_clip knows, or a file."""
        import open_clip

        if arch not in open_clip.list_models():
            raise ValueError(
                f"models.{self.name}.model_name={arch} is neither a folder, a Hub id "
                "(hf-hub:org/repo) nor an open_clip architecture (open_clip.list_models())"
            )
        tags = open_clip.list_pretrained_tags_by_model(arch)
        pretrained = self.pretrained
        if not pretrained or (pretrained not in tags and not os.path.isfile(pretrained)):
            given = f"{pretrained!r} is not one of them" if pretrained else "none was given"
            raise ValueError(
                f"models.{self.name}.pretrained names the weights of {arch}: a tag "
                f"({', '.join(tags) or 'open_clip has none'}) or a weights file; {given}"
            )
        weights = open_clip.get_pretrained_cfg(arch, pretrained)
        if weights:  # a tag: fetched now, so that a Hub that cannot serve it fails cleanly
            prepare_hub(os.path.split(weights.get("hf_hub", ""))[0] or None)  # org/repo[/file]
            open_clip.pretrained.download_pretrained(weights)
        return open_clip.get_model_config(arch)

    def image_transform(self) -> OpenCLIPImageTransform:
        if self.transform is None:
            raise RuntimeError(f"encoder {self.name}: load() first")
        return self.transform

    def encode_images(self, features: torch.Tensor) -> torch.Tensor:
        with self.inference():
            vectors = self.model.encode_image(self.to_device(features))
        return self.finish(vectors)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts))
        with self.inference():
            vectors = self.model.encode_text(self.to_device(tokens))
        return self.finish(vectors)

    def identity(self) -> dict[str, Any]:
        info = super().identity()
        info["text_preprocessing"] = {
            "tokenizer": type(self.tokenizer).__name__,
            "context_length": getattr(self.tokenizer, "context_length", None),
        }
        return info


@contextlib.contextmanager
def open_clip_info_hidden() -> Iterator[None]:
    """open_clip tells every step of a load at INFO on the root logger; its warnings stay."""
    import open_clip

    package = os.path.dirname(open_clip.__file__)

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(package)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def fetch_hub_checkpoint(repo_id: str, revision: str | None) -> Path:
    """The Hub cache folder holding the repository's ``open_clip_config.json`` and weights.

    The weights file is open_clip's own choice (``open_clip_model.safetensors``, else
    ``open_clip_pytorch_model.bin``); both files come from the same revision, so they
    land in one snapshot folder.
    """
    from huggingface_hub import hf_hub_download

    # Before open_clip is imported (torchvision: seconds): a Hub that cannot serve it fails now.
    config = Path(hf_hub_download(repo_id, CONFIG_FILE, revision=revision))
    from open_clip.pretrained import download_pretrained_from_hf

    weights = Path(download_pretrained_from_hf(repo_id, revision=revision))
    if weights.parent != config.parent:  # cannot happen for one revision; never load a mix
        raise FileNotFoundError(f"{repo_id}: config and weights of different revisions")
    return config.parent
