"""A SIMULATED model: a fixed device time per batch and cheap deterministic vectors, no weights.

For rehearsing a big job's coordination (many processes, many machines, a
shared filesystem, kills and reruns) without GPUs, and for the scale
benchmark: ``encode_*`` sleeps ``batch_seconds`` (± ``jitter``, as a real
accelerator's step time varies), which takes no CPU, so a small machine can
host many "ranks". The vectors are a fixed random projection of a 4×4 colour
thumbnail (images) or of a hash of the text's bytes, L2-normalised: the same
item always gives the same vector, whatever process or batch embeds it. They
mean nothing; do not search them.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from img_search.embedding.base import Encoder, ImageTransform

THUMBNAIL = 4


class Thumbnail(ImageTransform):
    """A 4×4 RGB thumbnail as 48 floats in 0..1."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        small = image.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(small, dtype=np.float32).reshape(-1) / 255.0)

    def describe(self) -> dict[str, Any]:
        return {"transform": type(self).__name__, "size": THUMBNAIL}


class SimulatedEncoder(Encoder):
    """Sleeps ``batch_seconds × U(1 − jitter, 1 + jitter)`` per batch; returns ``dim``-d unit vectors."""

    kind = "simulated"

    def __init__(
        self,
        name: str,
        model_name: str = "simulated",
        revision: str | None = None,
        dim: int = 64,
        batch_seconds: float = 0.05,
        jitter: float = 0.3,
        seed: int = 0,
    ) -> None:
        super().__init__(name, model_name, revision)
        if dim <= 0 or batch_seconds < 0 or not 0 <= jitter < 1:
            raise ValueError("simulated model: dim > 0, batch_seconds ≥ 0 and 0 ≤ jitter < 1")
        self.dim = dim
        self.batch_seconds, self.jitter, self.seed = batch_seconds, jitter, seed
        self._projection = np.random.default_rng(seed).standard_normal((3 * THUMBNAIL**2, dim))
        self._clock = random.Random()

    def _load(self) -> None:
        """Nothing to load."""

    def image_transform(self) -> Thumbnail:
        return Thumbnail()

    def encode_images(self, features: torch.Tensor) -> torch.Tensor:
        self._device_time()
        vectors = features.double().numpy() @ self._projection
        return self.finish(torch.from_numpy(vectors))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        self._device_time()
        rows = []
        for text in texts:
            digest = hashlib.sha256(text.encode("utf-8")).digest()
            rows.append(np.frombuffer(digest * 2, dtype=np.uint8)[: 3 * THUMBNAIL**2] / 255.0)
        return self.finish(torch.from_numpy(np.stack(rows) @ self._projection))

    def _device_time(self) -> None:
        if self.batch_seconds > 0:
            spread = self._clock.uniform(1 - self.jitter, 1 + self.jitter)
            time.sleep(self.batch_seconds * spread)
