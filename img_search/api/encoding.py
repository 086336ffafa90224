"""``load_encoder``: a model of the registry, in a notebook, with the pipeline's own preprocessing.

The same YAML specs and the same registry as ``models=<name>`` on the
command line, and the same steps as a loader worker and the forward pass
(``Encoder.encode``: decode with the pixel limit, the encoder's transform,
its collate, its encoder), so a batch gives the vectors the pipeline writes
for that batch.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from img_search.embedding.encode import Encoded, ItemFailure
from img_search.images import DEFAULT_MAX_PIXELS  # tasks.max_image_pixels' default
from img_search.registry import UnknownNameError

if TYPE_CHECKING:
    from img_search.embedding import Encoder

#: An image that cannot be embedded: ``.index`` in the input, ``.reason``, ``.cause`` (the
#: encode path's ``ItemFailure``; its message is ``image <index>: <reason>``).
ImageFailure = ItemFailure
#: ``encode_images(..., on_error="skip")``: ``vectors[j]`` is the image ``indices[j]`` of the
#: input; ``failures`` name the rest (the encode path's ``Encoded``).
EncodedImages = Encoded


def model_specs() -> dict[str, dict[str, Any]]:
    """Every ``models/*.yaml`` of the package, by name, resolved (``${packaged_model:…}``)."""
    from omegaconf import OmegaConf

    from img_search.pipeline.config_store import register

    register()  # the resolvers the YAML files use (``${packaged_model:…}``)

    specs: dict[str, dict[str, Any]] = {}
    folder = importlib.resources.files("img_search.config").joinpath("models")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            loaded = OmegaConf.create(entry.read_text(encoding="utf-8"))
            for name, spec in loaded.items():
                specs[str(name)] = spec
    return specs


def model_spec(
    name_or_spec: str | Mapping[str, Any], overrides: Mapping[str, Any]
) -> tuple[str, dict]:
    """(name, spec): a registered model's YAML spec, or a spec given whole, with ``overrides`` on top."""
    from omegaconf import OmegaConf

    if isinstance(name_or_spec, str):
        specs = model_specs()
        if name_or_spec not in specs:
            raise UnknownNameError(
                f"unknown model {name_or_spec!r}; the models are: {', '.join(sorted(specs))} "
                "(or give a spec: {'model': 'clip', 'model_name': '/path/to/checkpoint'})"
            )
        name, spec = name_or_spec, specs[name_or_spec]
    else:
        spec = OmegaConf.create(dict(name_or_spec))
        name = str(spec.get("name") or spec.get("model") or "model")
    merged = OmegaConf.merge(spec, OmegaConf.create(dict(overrides)))
    return name, OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def load_encoder(
    name_or_spec: str | Mapping[str, Any],
    device: str | None = None,
    precision: str = "fp32",
    *,
    trust_remote_code: bool = False,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    **overrides: Any,
) -> ModelEncoder:
    """Load a model as ``models=<name>`` would: ``load_encoder("siglip2", model_name="/ckpt")``.

    ``device`` None picks CUDA when there is one. ``overrides`` replace
    options of the model's YAML (``model_name``, ``revision``, its kwargs).
    ``trust_remote_code`` is needed by checkpoints that ship code (jina_v4).
    """
    from img_search.embedding import get_encoder
    from img_search.embedding.devices import pick_device

    name, spec = model_spec(name_or_spec, overrides)
    encoder = get_encoder(spec, name=name)
    encoder.load(pick_device(device or "auto"), precision, trust_remote_code)
    return ModelEncoder(encoder, max_image_pixels)


class ModelEncoder:
    """A loaded model: ``encode_images`` and ``encode_texts`` give float32 unit vectors, one row each.

    ``encoder`` is the registry's encoder underneath (``identity()``, ``dim``).
    """

    def __init__(self, encoder: Encoder, max_image_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.encoder = encoder
        self.max_image_pixels = max_image_pixels

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int | None:
        return self.encoder.dim

    def __repr__(self) -> str:
        where = f"{self.encoder.device}, {self.encoder.precision}"
        return (
            f"ModelEncoder({self.name!r}: {self.encoder.kind} {self.encoder.model_name}, {where})"
        )

    def encode_images(
        self,
        images: Sequence[Any],
        batch_size: int = 32,
        progress: bool = True,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> Any:
        """Paths, bytes or PIL images → (n, dim) float32 array.

        An image that cannot be decoded (or is over the pixel limit) raises
        ``ImageFailure`` naming its index; with ``on_error="skip"`` the
        result is ``EncodedImages`` (the vectors of the others, their indices
        and the failures) instead.
        """
        encoded = self.encoder.encode(
            images,
            side="image",
            batch_size=batch_size,
            max_pixels=self.max_image_pixels,
            on_error=on_error,
            progress=progress,
        )
        return encoded.vectors if on_error == "raise" else encoded

    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = True
    ) -> np.ndarray:
        """Strings → (n, dim) float32 array, as ``embed_text`` encodes captions."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings; wrap a single one: [text]")
        encoded = self.encoder.encode(texts, side="text", batch_size=batch_size, progress=progress)
        return encoded.vectors
