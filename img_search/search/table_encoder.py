"""The query side of a search: the same model that made the vectors, rebuilt from the table's metadata.

A vector is only comparable with vectors of the model that made them, so the
query encoder is rebuilt from the spec the pipeline recorded, and its
identity (encoder, checkpoint, revision, preprocessing) must equal the one
recorded for the table; a different checkpoint is refused, not silently used.

A table is data, not a program: its spec is rebuilt only into a registered
encoder kind, what can be compared is compared before anything is loaded,
and a checkpoint that ships code is loaded only with the user's own
``trust_remote_code=true``, never because a table names it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from img_search.embedding import Encoder, get_encoder
from img_search.embedding.base import RemoteCodeRefused
from img_search.images import open_image


class ModelMismatch(ValueError):
    """The query model is not the model that produced the searched vectors."""


def load_query_encoder(
    model_name: str,
    model_spec: Mapping[str, Any],
    identity: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> Encoder:
    """Load the encoder of ``model_spec`` (plus ``overrides``) and check it against ``identity``."""
    if not model_spec:
        raise ModelMismatch(
            f"the table does not record how model {model_name!r} was configured; "
            "it was not written by img_search.pipeline"
        )
    spec = {**model_spec, **(overrides or {})}
    encoder = get_encoder(spec, name=model_name)
    check_same_source(encoder, identity)
    if encoder.runs_checkpoint_code and trust_remote_code:
        check_consented_checkpoint(encoder, (overrides or {}).get("model_name"))
    encoder.load(device, trust_remote_code=trust_remote_code)
    check_same_model(encoder, identity)
    return encoder


def check_same_source(encoder: Encoder, identity: Mapping[str, Any]) -> None:
    """Before loading: the kind, checkpoint, revision (and open_clip's pretrained tag) the table
    records must be the spec's."""
    if not identity:
        return
    mine = encoder.source()
    raise_differences(encoder, identity, mine, tuple(mine))


def check_consented_checkpoint(encoder: Encoder, named_by_user: str | None) -> None:
    """``trust_remote_code=true`` consents to the checkpoint the user configured, not to any a table names.

    That is the encoder's registered default (``jinaai/jina-embeddings-v4``)
    or one named on the command line (``+model_overrides.model_name=...``).
    """
    default = inspect.signature(type(encoder).__init__).parameters["model_name"].default
    allowed = {str(c) for c in (default, named_by_user) if c not in (None, inspect.Parameter.empty)}
    if encoder.model_name not in allowed:
        raise RemoteCodeRefused(
            f"the table names checkpoint {encoder.model_name} for model {encoder.name} "
            f"({encoder.kind}), whose loading runs its own code; trust_remote_code=true covers "
            f"only {' or '.join(sorted(allowed))}: name this one yourself with "
            f"+model_overrides.model_name={encoder.model_name} if you trust it"
        )


def check_same_model(encoder: Encoder, identity: Mapping[str, Any]) -> None:
    """Refuse an encoder whose identity differs from the recorded one, naming the difference."""
    if not identity:
        return
    mine = encoder.identity()
    if mine.get("fingerprint") == identity.get("fingerprint"):
        return
    keys = (*encoder.source(), "image_preprocessing")
    raise_differences(encoder, identity, mine, keys, always=True)


def raise_differences(
    encoder: Encoder,
    identity: Mapping[str, Any],
    mine: Mapping[str, Any],
    keys: Sequence[str],
    always: bool = False,
) -> None:
    differences = [
        f"{key}: index {identity.get(key)!r}, query {mine.get(key)!r}"
        for key in keys
        if mine.get(key) != identity.get(key)
    ]
    if not differences and not always:
        return
    raise ModelMismatch(
        f"the query model {encoder.name!r} is not the model that made these vectors ("
        + ("; ".join(differences) or "different fingerprint")
        + ")"
    )


def encode_text_queries(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    if not encoder.supports_texts:
        raise ModelMismatch(
            f"model {encoder.name!r} ({encoder.kind}) has no text side: search its images with "
            "image=... or id=..., or search a caption table for text"
        )
    return encoder.encode_texts(list(texts)).cpu().numpy().astype(np.float32)


def encode_image_queries(
    encoder: Encoder, images: Sequence[Any], max_pixels: int | None = None
) -> np.ndarray:
    """Image files (or their bytes, or PIL images) → query vectors; a missing file is named."""
    opened = []
    resize_to = encoder.image_transform().resize_target if encoder.supports_images else None
    for image in images:
        if isinstance(image, (str, os.PathLike)) and not os.path.exists(image):
            raise FileNotFoundError(f"query image not found: {image}")
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        source = os.fspath(image) if isinstance(image, os.PathLike) else image
        opened.append(open_image(source, resize_to=resize_to, **kwargs))
    return encode_images(encoder, opened)


def encode_images(encoder: Encoder, images: Sequence[Image.Image]) -> np.ndarray:
    """Decoded RGB images → query vectors, through the encoder's own preprocessing."""
    if not encoder.supports_images:
        raise ModelMismatch(
            f"model {encoder.name!r} ({encoder.kind}) has no image side: query it with text=..."
        )
    transform = encoder.image_transform()
    batch = transform.collate([transform(image) for image in images])
    return encoder.encode_images(batch).cpu().numpy().astype(np.float32)
