"""CLIP, SigLIP and SigLIP2 checkpoints through transformers ``AutoModel`` / ``AutoProcessor``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from PIL import Image

from img_search.embedding.base import Encoder, ImageTransform, cut_texts
from img_search.failures import prepare_hub


class ProcessorImageTransform(ImageTransform):
    """Runs the checkpoint's own image processor on one image (in a loader worker)."""

    def __init__(self, image_processor: Any, call_kwargs: dict[str, Any] | None = None) -> None:
        self.image_processor = image_processor
        self.call_kwargs = dict(call_kwargs or {})

    def __call__(self, image: Image.Image) -> dict[str, torch.Tensor]:
        batch = self.image_processor(images=[image], return_tensors="pt", **self.call_kwargs)
        return {key: value[0] for key, value in batch.items()}

    def resize_target(self, width: int, height: int) -> tuple[int, int] | None:
        """A ``shortest_edge`` resize (CLIP) keeps the aspect ratio; a fixed size or NaFlex does not grow."""
        if not getattr(self.image_processor, "do_resize", True):
            return None
        size = getattr(self.image_processor, "size", None)
        shortest = size.get("shortest_edge") if isinstance(size, dict) else None
        shortest = shortest or getattr(size, "shortest_edge", None)
        if not shortest:
            return None
        scale = shortest / min(width, height)
        return max(1, int(width * scale)), max(1, int(height * scale))

    def describe(self) -> dict[str, Any]:
        settings = self.image_processor.to_dict()
        settings.update(self.call_kwargs)
        return {"transform": type(self.image_processor).__name__, **settings}


def projected(output: Any) -> torch.Tensor:
    """transformers v5 returns an output object whose ``pooler_output`` is the projected embedding."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


class TransformersDualEncoder(Encoder):
    """Two-tower image/text models that share the ``get_image_features`` / ``get_text_features`` API."""

    #: Tokenizer arguments the family's model card requires.
    text_kwargs: ClassVar[dict[str, Any]] = {"padding": True, "truncation": True}

    def __init__(
        self,
        name: str,
        model_name: str,
        revision: str | None = None,
        attn_implementation: str | None = None,
    ) -> None:
        super().__init__(name, model_name, revision)
        self.attn_implementation = attn_implementation
        self.model: Any = None
        self.processor: Any = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoProcessor

        prepare_hub(self.model_name)  # no network: fail in seconds, not after retries

        extra = (
            {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
        )
        # Never the checkpoint's own code (an ``auto_map`` in its config), whatever it asks.
        pinned = {"revision": self.revision, "trust_remote_code": False}
        self.model = AutoModel.from_pretrained(self.model_name, **pinned, **extra)
        self.model.eval().to(self.device)
        # The PIL image processors, whether torchvision is installed or not: transformers picks its
        # torchvision ones when it can, whose resizing gives other pixels, and so other vectors
        # than those of every table embedded before torchvision came with open_clip.
        self.processor = AutoProcessor.from_pretrained(self.model_name, backend="pil", **pinned)
        config = self.model.config
        self.dim = getattr(config, "projection_dim", None) or config.vision_config.hidden_size

    def image_transform(self) -> ProcessorImageTransform:
        if self.processor is None:
            raise RuntimeError(f"encoder {self.name}: load() first")
        return ProcessorImageTransform(self.processor.image_processor, self.image_call_kwargs())

    def image_call_kwargs(self) -> dict[str, Any]:
        return {}

    def encode_images(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.inference():
            output = self.model.get_image_features(**self.to_device(features))
        return self.finish(projected(output))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = cut_texts(texts, self.max_text_tokens())
        tokens = self.processor.tokenizer(texts, return_tensors="pt", **self.text_kwargs)
        with self.inference():
            output = self.model.get_text_features(**self.to_device(dict(tokens)))
        return self.finish(projected(output))

    def max_text_tokens(self) -> int | None:
        """The tokens the text tower takes: its position embeddings (CLIP 77), or the family's
        ``max_length`` (SigLIP 64)."""
        positions = getattr(self.model.config.text_config, "max_position_embeddings", None)
        return self.text_kwargs.get("max_length") or positions

    def identity(self) -> dict[str, Any]:
        info = super().identity()
        info["text_preprocessing"] = dict(self.text_kwargs)
        return info


class CLIPEncoder(TransformersDualEncoder):
    kind = "clip"
    text_kwargs: ClassVar[dict[str, Any]] = {"padding": True, "truncation": True}


class SiglipEncoder(TransformersDualEncoder):
    """SigLIP was trained on texts padded to 64 tokens: other padding silently gives wrong vectors."""

    kind = "siglip"
    text_kwargs: ClassVar[dict[str, Any]] = {
        "padding": "max_length",
        "max_length": 64,
        "truncation": True,
    }


class Siglip2Encoder(SiglipEncoder):
    """SigLIP2 (NaFlex): patch settings come from the checkpoint's own image processor."""

    kind = "siglip2"

    def image_call_kwargs(self) -> dict[str, Any]:
        image_processor = self.processor.image_processor
        return {
            "patch_size": image_processor.patch_size,
            "max_num_patches": image_processor.max_num_patches,
        }
