"""The open_clip encoder against open_clip's own usage: ``encode_image(preprocess(image))`` and
``encode_text(tokenizer(texts))`` of the same checkpoint, and what it refuses before loading."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from img_search.embedding import get_encoder
from img_search.embedding.open_clip import Checkpoint, parse_checkpoint
from img_search.testing.fixtures import synthetic_image

#: (width, height): square, landscape, portrait, a thin strip, smaller than the model's 64 px
SIZES = [(64, 64), (120, 50), (40, 130), (300, 20), (17, 23)]
TEXTS = [
    "a red fox in the snow",
    "café in Zürich, 東京 at night",
    "a caterpillar " * 40,  # longer than the 77-token context: truncated as open_clip does
    "",
]


def load(folder, **options):
    spec = {"model": "open_clip", "model_name": str(folder), **options}
    return get_encoder(spec, name="open_clip").load("cpu")


def open_clip_reference(folder):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def test_vectors_are_open_clips_own(tiny_open_clip):
    encoder = load(tiny_open_clip)
    model, preprocess, tokenizer = open_clip_reference(tiny_open_clip)
    images = [synthetic_image(i, size) for i, size in enumerate(SIZES)]
    transform = pickle.loads(pickle.dumps(encoder.image_transform()))  # as loader workers get it
    got = encoder.encode_images(transform.collate([transform(image) for image in images]))
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(image) for image in images]))
        expected_texts = model.encode_text(tokenizer(TEXTS))
    cosine = (got * torch.nn.functional.normalize(expected, dim=-1)).sum(dim=1)
    assert got.shape == (5, 32) and got.dtype == torch.float32
    np.testing.assert_allclose(got.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert cosine.min() >= 0.9999, cosine
    texts = encoder.encode_texts(TEXTS)
    cosine = (texts * torch.nn.functional.normalize(expected_texts, dim=-1)).sum(dim=1)
    assert texts.shape == (4, 32) and cosine.min() >= 0.9999, cosine


def test_identity_names_checkpoint_pretrained_and_the_checkpoints_preprocessing(tiny_open_clip):
    identity = load(tiny_open_clip).identity()
    assert identity["encoder"] == "open_clip" and identity["checkpoint"] == str(tiny_open_clip)
    assert identity["pretrained"] is None and identity["dim"] == 32
    assert identity["image_preprocessing"] == {
        "transform": "open_clip",
        "size": [64, 64],
        "mode": "RGB",
        "mean": [0.5, 0.45, 0.4],
        "std": [0.25, 0.25, 0.3],
        "interpolation": "bilinear",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    assert identity["text_preprocessing"] == {"tokenizer": "SimpleTokenizer", "context_length": 77}


def test_a_changed_preprocessing_or_pretrained_tag_is_another_model(tiny_open_clip, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_open_clip, copy)
    before = load(copy)
    config = json.loads((copy / "open_clip_config.json").read_text())
    config["preprocess_cfg"]["resize_mode"] = "squash"
    (copy / "open_clip_config.json").write_text(json.dumps(config))
    after = load(copy)
    assert before.identity()["fingerprint"] != after.identity()["fingerprint"]
    # a squash resize has a fixed size; a shortest-side resize grows with the image's aspect ratio
    assert after.image_transform().resize_target(5000, 10) is None
    assert before.image_transform().resize_target(5000, 10) == (32000, 64)
    tags = [
        get_encoder({"model": "open_clip", "model_name": "RN50", "pretrained": tag}, name="m")
        for tag in ("openai", "yfcc15m")
    ]
    assert tags[0].source() == {
        "encoder": "open_clip",
        "checkpoint": "RN50",
        "revision": None,
        "pretrained": "openai",
    }
    assert tags[0].source() != tags[1].source()


@pytest.mark.parametrize(
    ("model_name", "expected"),
    [
        ("hf-hub:imageomics/bioclip", Checkpoint("hub", "imageomics/bioclip")),
        ("imageomics/bioclip", Checkpoint("hub", "imageomics/bioclip")),  # as the other kinds
        ("/models/bioclip", Checkpoint("folder", "/models/bioclip")),
        ("./bioclip", Checkpoint("folder", "./bioclip")),
        ("local-dir:/models/x", Checkpoint("folder", "/models/x")),
        ("ViT-B-32", Checkpoint("architecture", "ViT-B-32")),
    ],
)
def test_model_name_forms(model_name, expected):
    assert parse_checkpoint(model_name) == expected


def test_what_cannot_be_loaded_is_named_before_anything_loads(tiny_open_clip, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"no open_clip checkpoint at {tmp_path}/none"):
        load(tmp_path / "none")
    empty = tmp_path / "no_weights"
    empty.mkdir()
    shutil.copy(tiny_open_clip / "open_clip_config.json", empty)
    with pytest.raises(FileNotFoundError, match=r"no weights in .*no_weights \(\*\.safetensors"):
        load(empty)
    with pytest.raises(ValueError, match=r"pretrained=openai applies to an open_clip architecture"):
        load(tiny_open_clip, pretrained="openai")
    with pytest.raises(ValueError, match=r"weights of ViT-B-32: a tag \(.*laion2b_s34b_b79k.*none"):
        load("ViT-B-32")
    with pytest.raises(ValueError, match=r"'laion9b' is not one of them"):
        load("ViT-B-32", pretrained="laion9b")
    with pytest.raises(ValueError, match=r"ViT-Q-99 is neither a folder, a Hub id"):
        load("ViT-Q-99", pretrained="openai")
