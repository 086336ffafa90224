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
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from img_search.embedding import Encoder, get_encoder
from img_search.embedding.base import RemoteCodeRefused, fingerprint
from img_search.embedding.devices import pick_device


class ModelMismatch(ValueError):
    """The query model is not the model that produced the searched vectors."""


class RecordedModel(Protocol):
    """What a table (``store.selection.SelectionInfo``) or a saved index (``SavedIndex``) records
    of the model that made its vectors."""

    @property
    def model_name(self) -> str: ...

    @property
    def model_spec(self) -> Mapping[str, Any]: ...

    @property
    def identity(self) -> Mapping[str, Any]: ...


def encoder_of(
    recorded: RecordedModel,
    *,
    overrides: Mapping[str, Any] | None = None,
    device: str = "auto",
    trust_remote_code: bool = False,
    loaded: dict[str, Encoder] | None = None,
) -> Encoder:
    """The model that made these vectors, rebuilt from the recorded spec (plus ``overrides``).

    Its source is compared with the recorded identity before anything is
    loaded, a checkpoint that ships code is loaded only with the user's
    consent, and after loading the whole identity must match. ``device``:
    ``auto`` is CUDA when there is one. ``loaded`` (by fingerprint) lets
    several tables or queries of one model share one loaded encoder.
    """
    name, identity = recorded.model_name, recorded.identity or {}
    if not recorded.model_spec:
        raise ModelMismatch(
            f"the table does not record how model {name!r} was configured; "
            "it was not written by img_search.pipeline"
        )
    spec = {**recorded.model_spec, **(overrides or {})}
    key = str(identity.get("fingerprint") or fingerprint({"name": name, "spec": spec}))
    if loaded is not None and key in loaded:
        return loaded[key]
    encoder = get_encoder(spec, name=name)
    check_same_source(encoder, identity)
    if encoder.runs_checkpoint_code and trust_remote_code:
        check_consented_checkpoint(encoder, (overrides or {}).get("model_name"))
    encoder.load(pick_device(device), trust_remote_code=trust_remote_code)
    check_same_model(encoder, identity)
    if loaded is not None:
        loaded[key] = encoder
    return encoder


#: What to search with instead, when a model lacks the side of a query.
OTHER_WAYS = {
    "text": "search its images with image=... or id=..., or search a caption table for text",
    "image": "query it with text=...",
}


def require_side(encoder: Encoder, side: str) -> None:
    """A query of a side the model has, or ``ModelMismatch`` saying what it can be searched with."""
    if not encoder.has_side(side):
        raise ModelMismatch(
            f"model {encoder.name!r} ({encoder.kind}) has no {side} side: {OTHER_WAYS[side]}"
        )


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
