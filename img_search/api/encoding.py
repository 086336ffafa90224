"""``load_encoder``: a model of the registry, in a notebook, with the pipeline's own preprocessing.

The same YAML specs and the same registry as ``models=<name>`` on the
command line, and the same steps as a loader worker and the forward pass
(decode with the pixel limit, the encoder's transform, its collate, its
encoder), so a batch gives the vectors the pipeline writes for that batch.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from img_search.failures import first_line
from img_search.images import DEFAULT_MAX_PIXELS  # tasks.max_image_pixels' default
from img_search.registry import UnknownNameError

if TYPE_CHECKING:
    from img_search.embedding import Encoder


class ImageFailure(ValueError):
    """An image that cannot be embedded: its index in the input, and why."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"image {index}: {reason}")
        self.index, self.reason = index, reason


@dataclass
class EncodedImages:
    """``encode_images(..., on_error="skip")``: the vectors of the images that worked, and the others.

    ``vectors[j]`` is the image ``indices[j]`` of the input; ``failures`` name the rest.
    """

    vectors: np.ndarray
    indices: np.ndarray
    failures: list[ImageFailure] = field(default_factory=list)


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
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if not self.encoder.supports_images:
            raise ValueError(f"model {self.name!r} ({self.encoder.kind}) has no image side")
        from img_search.embedding.prepare import DecodeAndTransform

        prepare = DecodeAndTransform(self.encoder.image_transform(), self.max_image_pixels)
        collate = self.encoder.image_transform().collate
        done: list[np.ndarray] = []
        kept: list[int] = []
        failures: list[ImageFailure] = []
        for batch in self._batches(len(images), batch_size, progress, "images"):
            features, ok = [], []
            for i in batch:
                try:
                    features.append(prepare(_Item(images[i])))
                    ok.append(i)
                except Exception as exc:  # decode errors come in many types (PIL, OSError, limits)
                    failure = ImageFailure(i, _reason(images[i], exc))
                    if on_error == "raise":
                        raise failure from exc
                    failures.append(failure)
            if ok:
                done.append(
                    self._forward(lambda f=features: self.encoder.encode_images(collate(f)))
                )
                kept += ok
        vectors = self._stack(done)
        if on_error == "raise":
            return vectors
        return EncodedImages(vectors, np.asarray(kept, np.int64), failures)

    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = True
    ) -> np.ndarray:
        """Strings → (n, dim) float32 array, as ``embed_text`` encodes captions."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings; wrap a single one: [text]")
        if not self.encoder.supports_texts:
            raise ValueError(f"model {self.name!r} ({self.encoder.kind}) has no text side")
        done = [
            self._forward(lambda b=batch: self.encoder.encode_texts([str(texts[i]) for i in b]))
            for batch in self._batches(len(texts), batch_size, progress, "texts")
        ]
        return self._stack(done)

    def _forward(self, run: Any) -> np.ndarray:
        return run().float().cpu().numpy()

    def _stack(self, done: list[np.ndarray]) -> np.ndarray:
        if done:
            return np.concatenate(done).astype(np.float32, copy=False)
        return np.zeros((0, self.encoder.dim or 0), np.float32)

    def _batches(self, n: int, size: int, progress: bool, what: str) -> Iterator[range]:
        if size <= 0:
            raise ValueError(f"batch_size must be positive, got {size}")
        from img_search.console import make_progress

        with make_progress(enabled=progress and n > size) as bar:
            task = bar.add_task(f"{self.name} × {what}", total=n, rate="")
            for start in range(0, n, size):
                yield range(start, min(start + size, n))
                done = min(start + size, n)
                rate = done / max(bar.tasks[task].elapsed or 1e-9, 1e-9)
                bar.update(task, completed=done, rate=f"{rate:.1f} it/s")


@dataclass(frozen=True)
class _Item:
    """What a loader worker gets from a dataset (``ImageItem``), for ``DecodeAndTransform``."""

    source: Any


def _reason(image: Any, exc: BaseException) -> str:
    label = os.fspath(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__
    first = first_line(str(exc))
    return f"{label}: {type(exc).__name__}: {first}" if first else f"{label}: {type(exc).__name__}"
