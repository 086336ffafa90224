"""Caption embedding pipeline: ``python -m img_search.pipeline.embed_text models=... text_dataset=... output_path=...``.

Same run machinery as the image pipeline; only what an item is differs: a
caption string, encoded by the model's text tower, written with its
``CaptionRecord`` columns (index, image, image_id, caption).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from omegaconf import DictConfig

from img_search.command_line import hydra_entry
from img_search.pipeline.cli import run_cli
from img_search.pipeline.modality import Modality

if TYPE_CHECKING:  # imported when a job runs: --help and config errors never wait for torch
    import torch

    from img_search.data import TextDataset
    from img_search.embedding import Encoder
    from img_search.pipeline.settings import TaskSettings


class CaptionText:
    """Loader step for captions: the raw text; an empty caption is an item error, not a vector."""

    def __call__(self, item: Any) -> str:
        if not item.text or not item.text.strip():
            raise ValueError("empty caption")
        return item.text


def _prepare(encoder: Encoder, settings: TaskSettings) -> CaptionText:
    return CaptionText()


def _collate(encoder: Encoder) -> Any:
    return list


def _forward(encoder: Encoder, texts: list[str]) -> torch.Tensor:
    return encoder.encode_texts(texts)


def _source(name: str, spec: Mapping[str, Any]) -> TextDataset:
    from img_search.data import get_text_dataset

    return get_text_dataset(spec, name=name)


CAPTIONS = Modality(
    kind="caption",
    make_source=_source,
    make_prepare=_prepare,
    make_collate=_collate,
    forward=_forward,
    supports=lambda encoder: encoder.supports_texts,
    extra_fields=[
        pa.field("index", pa.int64()),
        pa.field("image", pa.string()),
        pa.field("image_id", pa.string()),
        pa.field("caption", pa.string()),
    ],
    extra_columns=lambda source, positions: source.columns(positions),
    cpu_heavy_prepare=False,
    local_copy=lambda name: "text_dataset.path=<local copy in the Hub layout>",
)


def text_dataset_specs(cfg: DictConfig) -> Mapping[str, Any]:
    """The single ``text_dataset`` entry, keyed by its ``name`` (the config choice by default)."""
    spec = cfg.get("text_dataset")
    if not spec:
        return {}
    spec = dict(spec)
    name = str(spec.pop("name", None) or spec.get("dataset"))
    return {name: spec}


@hydra_entry(config_path="pkg://img_search.config", config_name="embed_text_config")
def main(cfg: DictConfig) -> None:
    run_cli(cfg, CAPTIONS, text_dataset_specs(cfg))


if __name__ == "__main__":
    main()
