"""A stand-in for Jina embeddings v4's remote-code model (its weights cannot be fetched offline).

It exposes the same ``encode_image`` / ``encode_text`` API and records what it
was asked, so tests check what the adapter sends to the model and what it
makes of the answers. Install it with
``monkeypatch.setattr(transformers.AutoModel, "from_pretrained", ...)``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

DIM = 12


class StandInJina:
    """Returns a list of un-normalised per-item tensors, like the remote code does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.device = None

    def to(self, device):
        self.device = torch.device(device)
        return self

    def eval(self):
        return self

    def encode_image(self, images, task, batch_size, return_numpy, truncate_dim, **kwargs):
        assert all(isinstance(image, Image.Image) and image.mode == "RGB" for image in images)
        self.calls.append(
            ("image", {"task": task, "n": len(images), "truncate_dim": truncate_dim, **kwargs})
        )
        return [
            self._vector(float(np.asarray(image).mean()) + image.width, truncate_dim)
            for image in images
        ]

    def encode_text(self, texts, task, prompt_name, batch_size, return_numpy, truncate_dim):
        self.calls.append(("text", {"task": task, "prompt_name": prompt_name, "n": len(texts)}))
        return [self._vector(float(len(text)), truncate_dim) for text in texts]

    @staticmethod
    def _vector(seed: float, truncate_dim):
        values = torch.arange(1, DIM + 1, dtype=torch.float32) * (seed + 1.0)
        values[0] = -seed
        return values[: truncate_dim or DIM] * 3.0
