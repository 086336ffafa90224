"""CLIP / SigLIP / SigLIP2 encoders against plain transformers usage, including each family's text rules."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from img_search.embedding import get_encoder
from img_search.testing.fixtures import synthetic_image

TEXTS = ["a red fox in the snow", "café in Zürich", 'a "quoted" word', "東京 at night"]


def load(family, checkpoints):
    return get_encoder({"model": family, "model_name": str(checkpoints[family])}, name=family).load(
        "cpu"
    )


def reference_text(checkpoint, texts, **tokenizer_kwargs):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    tokens = processor(text=texts, return_tensors="pt", **tokenizer_kwargs)
    with torch.no_grad():
        output = model.get_text_features(**tokens).pooler_output
    return torch.nn.functional.normalize(output, dim=-1).numpy()


@pytest.mark.parametrize(
    ("family", "kwargs"),
    [
        ("clip", {"padding": True, "truncation": True}),
        ("siglip", {"padding": "max_length", "max_length": 64, "truncation": True}),
        ("siglip2", {"padding": "max_length", "max_length": 64, "truncation": True}),
    ],
)
def test_text_tower_matches_model_card_usage(family, kwargs, tiny_checkpoints):
    encoder = load(family, tiny_checkpoints)
    got = encoder.encode_texts(TEXTS).numpy()
    expected = reference_text(tiny_checkpoints[family], TEXTS, **kwargs)
    assert got.shape == (4, 32)
    assert np.sum(got * expected, axis=1).min() >= 0.9999


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_siglip_padding_rule_changes_the_vectors(family, tiny_checkpoints):
    """Why the rule matters: SigLIP pools the last position, so padding="longest" gives other vectors."""
    encoder = load(family, tiny_checkpoints)
    got = encoder.encode_texts(TEXTS).numpy()
    longest = reference_text(tiny_checkpoints[family], TEXTS, padding="longest")
    assert np.sum(got * longest, axis=1).min() < 0.999


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2"])
def test_image_transform_is_picklable_and_batches(family, tiny_checkpoints):
    encoder = load(family, tiny_checkpoints)
    transform = pickle.loads(pickle.dumps(encoder.image_transform()))
    images = [synthetic_image(i) for i in range(3)]
    batch = transform.collate([transform(image) for image in images])
    vectors = encoder.encode_images(batch)
    assert vectors.shape == (3, 32) and vectors.dtype == torch.float32
    np.testing.assert_allclose(vectors.norm(dim=1).numpy(), 1.0, atol=1e-5)
    identity = encoder.identity()
    assert identity["checkpoint"] == str(tiny_checkpoints[family])
    assert identity["image_preprocessing"]["transform"].endswith("ImageProcessorPil")
    assert len(identity["fingerprint"]) == 16


def test_siglip2_patch_settings_come_from_the_checkpoint(tiny_checkpoints):
    encoder = load("siglip2", tiny_checkpoints)
    saved = encoder.processor.image_processor
    kwargs = encoder.image_transform().call_kwargs
    assert kwargs == {"patch_size": saved.patch_size, "max_num_patches": saved.max_num_patches}
    features = encoder.image_transform()(Image.new("RGB", (50, 30), "red"))
    assert features["pixel_values"].shape[0] == saved.max_num_patches


def test_half_precision_output_is_still_float32_unit_vectors(tiny_checkpoints):
    encoder = get_encoder(
        {"model": "clip", "model_name": str(tiny_checkpoints["clip"])}, name="clip"
    )
    encoder.load("cpu", precision="bf16")
    transform = encoder.image_transform()
    vectors = encoder.encode_images(transform.collate([transform(synthetic_image(1))]))
    assert vectors.dtype == torch.float32
    assert abs(float(vectors.norm()) - 1.0) < 1e-4
