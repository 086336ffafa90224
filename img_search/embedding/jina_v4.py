"""Jina embeddings v4 (``jinaai/jina-embeddings-v4``): one model for images and texts.

The model ships its own code (``trust_remote_code``) with ``encode_image`` and
``encode_text`` entry points that do their own preprocessing, so loader
workers only decode images here and the forward pass receives PIL images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from img_search.embedding.base import PRECISIONS, Encoder, ImageTransform, cut_texts
from img_search.failures import prepare_hub

#: The tokens ``encode_text`` keeps (its remote code's ``max_length`` default).
MAX_TEXT_TOKENS = 32768


class DecodedImages(ImageTransform):
    """Pass decoded RGB images through; the model's own processor runs in ``encode_image``."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image

    def collate(self, features: list[Any]) -> list[Image.Image]:
        return list(features)


class JinaV4Encoder(Encoder):
    """Wraps the remote-code model; ``task`` picks the LoRA adapter, ``prompt_name`` the text role.

    ``device_map`` (e.g. ``"auto"``) lets Accelerate's big-model loading spread
    the weights over the devices of one process instead of ``.to(device)``.
    """

    kind = "jina_v4"
    runs_checkpoint_code = True

    def __init__(
        self,
        name: str,
        model_name: str = "jinaai/jina-embeddings-v4",
        revision: str | None = None,
        task: str = "retrieval",
        prompt_name: str = "query",
        truncate_dim: int | None = None,
        max_pixels: int | None = None,
        device_map: str | None = None,
    ) -> None:
        super().__init__(name, model_name, revision)
        self.task = task
        self.prompt_name = prompt_name
        self.truncate_dim = truncate_dim
        self.max_pixels = max_pixels
        self.device_map = device_map
        self.model: Any = None

    def _load(self) -> None:
        from transformers import AutoModel

        prepare_hub(self.model_name)  # no network: fail in seconds, not after retries

        # Reached only with the user's trust_remote_code=true (checked in ``Encoder.load``).
        kwargs: dict[str, Any] = {"trust_remote_code": True, "revision": self.revision}
        if self.precision != "fp32":
            kwargs["dtype"] = PRECISIONS[self.precision]
        if self.device_map:
            kwargs["device_map"] = self.device_map
        model = AutoModel.from_pretrained(self.model_name, **kwargs)
        if not self.device_map:
            model = model.to(self.device)
        self.model = model.eval()

    def image_transform(self) -> DecodedImages:
        return DecodedImages()

    def encode_images(self, features: list[Image.Image]) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if self.max_pixels:
            kwargs["max_pixels"] = self.max_pixels
        with torch.inference_mode():
            output = self.model.encode_image(
                images=list(features),
                task=self.task,
                batch_size=len(features),
                return_numpy=False,
                truncate_dim=self.truncate_dim,
                **kwargs,
            )
        return self.finish(self._stack(output))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        with torch.inference_mode():
            output = self.model.encode_text(
                texts=cut_texts(texts, MAX_TEXT_TOKENS),
                task=self.task,
                prompt_name=self.prompt_name,
                batch_size=len(texts),
                return_numpy=False,
                truncate_dim=self.truncate_dim,
            )
        return self.finish(self._stack(output))

    def _stack(self, output: Any) -> torch.Tensor:
        """The remote code returns a list of per-item tensors (or one tensor); stack on our device."""
        if isinstance(output, torch.Tensor):
            return output.to(self.device)
        return torch.stack([torch.as_tensor(v) for v in output]).to(self.device)

    def identity(self) -> dict[str, Any]:
        info = super().identity()
        info.update(task=self.task, prompt_name=self.prompt_name, truncate_dim=self.truncate_dim)
        return info
