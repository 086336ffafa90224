"""Encoder base class: CPU preprocessing (picklable, in loader workers) apart from the batched forward.

Every encoder loads from a Hub id or a local directory through one code path
(``model_name``), returns L2-normalised float32 vectors, and describes itself
(``identity()``) so an output table records exactly what produced it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from PIL import Image
from torch.utils.data import default_collate

from img_search.embedding.encode import Encoded, OnError, Side
from img_search.embedding.encode import encode as encode_items
from img_search.embedding.prepare import CaptionText, DecodeAndTransform
from img_search.images import DEFAULT_MAX_PIXELS

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Characters of a text kept per token its model takes, before tokenising. A token spans a word
#: piece (a few characters, rarely 20), so the cut leaves the tokens the model keeps as they were,
#: and a 50 MB caption costs a few kB of tokenising instead of gigabytes.
CHARS_PER_TOKEN = 32


def cut_texts(texts: Sequence[str], max_tokens: int | None) -> list[str]:
    """Each text cut to ``max_tokens x CHARS_PER_TOKEN`` characters (all of it when no limit is known)."""
    if not max_tokens:
        return list(texts)
    limit = max_tokens * CHARS_PER_TOKEN
    return [text if len(text) <= limit else text[:limit] for text in texts]


class ImageTransform:
    """Decoded RGB image → model-ready features for one item; runs in loader workers.

    Subclasses must stay picklable (plain attributes, no models, no open files).
    ``collate`` turns a list of per-item features into one batch.
    """

    def __call__(self, image: Image.Image) -> Any:
        raise NotImplementedError

    def collate(self, features: list[Any]) -> Any:
        return default_collate(features)

    def describe(self) -> dict[str, Any]:
        """The preprocessing settings, recorded in the output metadata."""
        return {"transform": type(self).__name__}

    def resize_target(self, width: int, height: int) -> tuple[int, int] | None:
        """The size this preprocessing first resizes a ``width`` x ``height`` image to.

        Checked against the pixel limit before decoding, because a resize
        that keeps the aspect ratio can ask for far more pixels than the
        image has. None: the target does not grow with the image.
        """
        return None


class Encoder(ABC):
    """A model family behind one small API: ``load``, ``image_transform``, ``encode_images``, ``encode_texts``.

    Subclasses implement those hooks; ``encode(items, side=...)`` is built on them for every model.
    """

    #: Registry name (``model:`` in the YAML).
    kind: ClassVar[str] = ""
    supports_images: ClassVar[bool] = True
    supports_texts: ClassVar[bool] = True
    #: Loading runs Python code shipped with the checkpoint (transformers ``trust_remote_code``).
    runs_checkpoint_code: ClassVar[bool] = False

    def __init__(self, name: str, model_name: str, revision: str | None = None) -> None:
        self.name = name
        #: Every option this encoder was configured with (set by the registry).
        self.spec: dict[str, Any] = {}
        self.model_name = str(model_name)
        self.revision = revision
        self.device = torch.device("cpu")
        self.precision = "fp32"
        self.dim: int | None = None

    # -- life cycle -----------------------------------------------------------
    def load(
        self,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        trust_remote_code: bool = False,
    ) -> Encoder:
        """Load weights (downloading them on first use) onto ``device``.

        ``trust_remote_code`` is the user's own consent, given on the command
        line; it is never read from a table or a checkpoint.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
        if self.runs_checkpoint_code and not trust_remote_code:
            raise RemoteCodeRefused(remote_code_refusal(self))
        self.device = torch.device(device)
        self.precision = precision
        self._load()
        return self

    @abstractmethod
    def _load(self) -> None: ...

    # -- images ---------------------------------------------------------------
    def image_transform(self) -> ImageTransform:
        raise NotImplementedError(f"encoder {self.kind} has no image side")

    def encode_images(self, features: Any) -> torch.Tensor:
        """A collated batch from ``image_transform()`` → (n, dim) unit vectors on ``self.device``."""
        raise NotImplementedError(f"encoder {self.kind} has no image side")

    # -- texts ----------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw strings → (n, dim) unit vectors on ``self.device``."""
        raise NotImplementedError(f"encoder {self.kind} has no text side")

    # -- items → vectors: the steps of the pipeline, and the one loop outside it ----------------
    def has_side(self, side: str) -> bool:
        """Whether this model encodes ``side`` items: "image" or "text"."""
        if side == "image":
            return self.supports_images
        return side == "text" and self.supports_texts

    def preparer(
        self, side: Side, max_pixels: int | None = DEFAULT_MAX_PIXELS, *, require_text: bool = False
    ) -> DecodeAndTransform | CaptionText:
        """Picklable item → features, run in loader workers: an image decoded with the pixel limit
        then ``image_transform()``; a text as it is (``require_text``: an empty one is an error)."""
        if side == "image":
            return DecodeAndTransform(self.image_transform(), max_pixels)
        return CaptionText(require_text)

    def collate(self, side: Side) -> Callable[[list[Any]], Any]:
        """Picklable list of features → one batch for ``forward``."""
        return self.image_transform().collate if side == "image" else list

    def forward(self, side: Side, features: Any) -> torch.Tensor:
        """A collated batch → (n, dim) unit vectors: the ``encode_images`` / ``encode_texts`` hooks."""
        return self.encode_images(features) if side == "image" else self.encode_texts(features)

    def encode(
        self,
        items: Sequence[Any],
        *,
        side: Side,
        batch_size: int = 32,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        on_error: OnError = "raise",
        progress: bool = False,
    ) -> Encoded:
        """Images (paths, bytes, PIL) or texts → vectors, through the pipeline's own steps
        (``embedding.encode``); a side the model lacks is refused before any item is read."""
        return encode_items(
            self,
            items,
            side=side,
            batch_size=batch_size,
            max_pixels=max_pixels,
            on_error=on_error,
            progress=progress,
        )

    # -- description ----------------------------------------------------------
    def source(self) -> dict[str, Any]:
        """Where the weights come from, known before loading (compared with a table's before a query loads)."""
        return {"encoder": self.kind, "checkpoint": self.model_name, "revision": self.revision}

    def identity(self) -> dict[str, Any]:
        """What produced the vectors: enough to refuse mixing two different models in one table."""
        info: dict[str, Any] = {
            **self.source(),
            "dim": self.dim,
            "normalized": True,
            "precision": self.precision,
        }
        if self.supports_images:
            info["image_preprocessing"] = self.image_transform().describe()
        info["fingerprint"] = fingerprint(
            {k: v for k, v in info.items() if k not in ("precision", "dim")}
        )
        return info

    # -- helpers for subclasses -------------------------------------------------
    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """no_grad plus autocast at the chosen precision on the encoder's device."""
        dtype = PRECISIONS[self.precision]
        with torch.inference_mode():
            if dtype is torch.float32:
                yield
            else:
                with torch.autocast(device_type=self.device.type, dtype=dtype):
                    yield

    def to_device(self, features: Any) -> Any:
        """Move a (nested) batch to the device; non-blocking from pinned memory on CUDA."""
        non_blocking = self.device.type == "cuda"
        if isinstance(features, torch.Tensor):
            return features.to(self.device, non_blocking=non_blocking)
        if isinstance(features, dict):
            return {k: self.to_device(v) for k, v in features.items()}
        if isinstance(features, (list, tuple)):
            return type(features)(self.to_device(v) for v in features)
        return features

    def finish(self, vectors: torch.Tensor) -> torch.Tensor:
        """float32, L2-normalised rows; remembers the dimension."""
        vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        self.dim = int(vectors.shape[-1])
        return vectors


class RemoteCodeRefused(ValueError):
    """A checkpoint whose loading runs its own code, without the user's ``trust_remote_code=true``."""


def remote_code_refusal(encoder: Encoder) -> str:
    return (
        f"model {encoder.name} ({encoder.kind}, checkpoint {encoder.model_name}) runs Python code "
        "shipped with its checkpoint; it is loaded only when you add trust_remote_code=true to the "
        "command line (or to the serve config), for a checkpoint you trust"
    )


def fingerprint(payload: Any) -> str:
    """A short stable hash of a JSON-able description."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
