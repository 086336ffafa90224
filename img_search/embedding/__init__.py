"""Encoder registry: config ``model:`` names → classes.

Adding a model family = one module here, one line in ``ENCODERS`` and one YAML
file under ``img_search/config/models/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from img_search.embedding.base import Encoder, ImageTransform
from img_search.embedding.efficientnet import EfficientNetLite0Encoder
from img_search.embedding.jina_v4 import JinaV4Encoder
from img_search.embedding.open_clip import OpenCLIPEncoder
from img_search.embedding.sentence_transformers import SentenceTransformerEncoder
from img_search.embedding.simulated import SimulatedEncoder
from img_search.embedding.transformers_dual import CLIPEncoder, Siglip2Encoder, SiglipEncoder
from img_search.registry import build_from_spec

ENCODERS: dict[str, type[Encoder]] = {
    "clip": CLIPEncoder,
    "siglip": SiglipEncoder,
    "siglip2": Siglip2Encoder,
    "jina_v4": JinaV4Encoder,
    "open_clip": OpenCLIPEncoder,
    "efficientnet_lite0": EfficientNetLite0Encoder,
    "sentence_transformers": SentenceTransformerEncoder,
    "simulated": SimulatedEncoder,
}


def get_encoder(spec: Mapping[str, Any], name: str | None = None) -> Encoder:
    """Instantiate (not load) the encoder a ``models/*.yaml`` entry describes."""
    return build_from_spec(ENCODERS, spec, "model", name, group="models")


__all__ = [
    "ENCODERS",
    "CLIPEncoder",
    "EfficientNetLite0Encoder",
    "Encoder",
    "ImageTransform",
    "JinaV4Encoder",
    "OpenCLIPEncoder",
    "SentenceTransformerEncoder",
    "Siglip2Encoder",
    "SiglipEncoder",
    "SimulatedEncoder",
    "get_encoder",
]
