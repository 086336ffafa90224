"""What differs between the image and the caption pipelines, found by kind wherever a job is run."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
import torch
from conftest import SAMPLE_PHOTOS

from img_search.api.jobs import compose
from img_search.embedding import get_encoder
from img_search.pipeline.modalities import CAPTIONS, IMAGES, MODALITIES
from img_search.pipeline.settings import TaskSettings


def test_modalities_are_found_by_the_kind_their_tables_record() -> None:
    assert MODALITIES == {"image": IMAGES, "caption": CAPTIONS}
    assert (IMAGES.config_name, CAPTIONS.config_name) == ("embed_config", "embed_text_config")


def test_image_specs_are_the_chosen_datasets_by_name() -> None:
    cfg = compose(
        IMAGES.config_name,
        [
            "datasets=[image_folder,flickr30k]",
            "datasets.image_folder.path=/photos",
            "output_path=x",
        ],
    )
    specs = IMAGES.dataset_specs(cfg)
    assert sorted(specs) == ["flickr30k", "image_folder"]
    assert specs["image_folder"]["path"] == "/photos"


def test_the_text_dataset_is_keyed_by_its_name_or_its_config_choice() -> None:
    args = ["text_dataset=captions_jsonl", "text_dataset.path=c.jsonl", "output_path=x"]
    named = CAPTIONS.dataset_specs(compose(CAPTIONS.config_name, [*args, "text_dataset.name=mine"]))
    assert list(named) == ["mine"] and "name" not in named["mine"]
    unnamed = CAPTIONS.dataset_specs(compose(CAPTIONS.config_name, args))
    assert list(unnamed) == ["captions_jsonl"]
    assert unnamed["captions_jsonl"]["path"] == "c.jsonl"


def test_the_caption_step_pickles_for_loader_workers_and_refuses_empty_captions() -> None:
    prepare = pickle.loads(pickle.dumps(CAPTIONS.make_prepare(None, None)))  # type: ignore[arg-type]
    assert prepare(SimpleNamespace(text="a cat")) == "a cat"
    with pytest.raises(ValueError, match="empty caption"):
        prepare(SimpleNamespace(text="  "))


def test_the_image_step_and_collate_pickle_for_loader_workers_and_keep_the_pixel_limit() -> None:
    encoder = get_encoder({"model": "simulated"}, name="simulated")
    prepare = IMAGES.make_prepare(encoder, TaskSettings())
    collate = IMAGES.make_collate(encoder)
    photos = [SimpleNamespace(source=p) for p in sorted(SAMPLE_PHOTOS.glob("*.jpg"))[:2]]
    copied = pickle.loads(pickle.dumps(prepare))
    features = [copied(photo) for photo in photos]
    assert all(torch.equal(f, prepare(photo)) for f, photo in zip(features, photos, strict=True))
    assert pickle.loads(pickle.dumps(collate))(features).shape == (2, 48)  # 4×4 RGB thumbnails
    limited = pickle.loads(
        pickle.dumps(IMAGES.make_prepare(encoder, TaskSettings(max_image_pixels=100)))
    )
    with pytest.raises(ValueError, match="exceeds the limit of 100 pixels"):
        limited(photos[0])
