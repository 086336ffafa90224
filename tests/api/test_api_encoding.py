"""``load_encoder``: the registry's models from Python, with the pipeline's preprocessing, bit for bit."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import SAMPLE_CAPTIONS, SAMPLE_PHOTOS
from PIL import Image

from img_search import ImageFailure, load_encoder
from img_search.registry import UnknownNameError
from img_search.store import read_embeddings


@pytest.fixture(scope="module")
def efficientnet():
    return load_encoder("efficientnet_lite0", device="cpu")


def test_images_equal_the_demo_table_bit_for_bit(efficientnet, demo_tables) -> None:
    table = read_embeddings(demo_tables["images"])
    paths = [SAMPLE_PHOTOS / item_id for item_id in table.ids]
    vectors = efficientnet.encode_images(paths, progress=False)  # one batch, as in the pipeline
    assert vectors.dtype == np.float32 and vectors.shape == table.vectors.shape
    np.testing.assert_array_equal(vectors, table.vectors)
    # bytes and PIL images are the same images
    as_bytes = efficientnet.encode_images([p.read_bytes() for p in paths], progress=False)
    np.testing.assert_array_equal(as_bytes, vectors)
    pil = [Image.open(io.BytesIO(p.read_bytes())) for p in paths[:3]]
    np.testing.assert_allclose(
        efficientnet.encode_images(pil, progress=False), vectors[:3], atol=1e-6
    )


def test_a_bad_image_names_its_index_or_is_skipped(efficientnet, tmp_path) -> None:
    good = sorted(SAMPLE_PHOTOS.glob("*.jpg"))[:2]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    images = [good[0], tmp_path / "broken.jpg", good[1], tmp_path / "missing.jpg"]
    with pytest.raises(ImageFailure, match=r"^image 1: .*broken\.jpg.*cannot decode") as caught:
        efficientnet.encode_images(images, progress=False)
    assert caught.value.index == 1
    result = efficientnet.encode_images(images, batch_size=3, progress=False, on_error="skip")
    assert result.indices.tolist() == [0, 2]
    assert [(f.index, "missing.jpg" in f.reason) for f in result.failures] == [
        (1, False),
        (3, True),
    ]
    alone = efficientnet.encode_images(good, progress=False)
    np.testing.assert_allclose(result.vectors, alone, atol=1e-6)


def test_texts_equal_sentence_transformers(tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    minilm = load_encoder("minilm", device="cpu")
    records = [
        json.loads(line)["caption"] for line in SAMPLE_CAPTIONS.read_text().splitlines() if line
    ]
    texts = [text for r in records for text in ([r] if isinstance(r, str) else r)]
    got = minilm.encode_texts(texts, batch_size=4, progress=False)
    reference = SentenceTransformer(minilm.encoder.model_name, device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert got.shape == (len(texts), 384)
    np.testing.assert_allclose(got, reference, atol=1e-6)
    with pytest.raises(TypeError, match=r"wrap a single one"):
        minilm.encode_texts("one string")
    with pytest.raises(ValueError, match="has no image side"):
        minilm.encode_images([SAMPLE_PHOTOS / "coffee.jpg"])


def test_names_specs_and_overrides(tiny_checkpoints) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown model 'clipp'; the models are: .*clip"):
        load_encoder("clipp")
    by_name = load_encoder("clip", device="cpu", model_name=str(tiny_checkpoints["clip"]))
    by_spec = load_encoder({"model": "clip", "model_name": str(tiny_checkpoints["clip"])}, "cpu")
    assert by_name.encoder.identity()["fingerprint"] == by_spec.encoder.identity()["fingerprint"]
    texts = ["a red fox", "a cup of coffee", "snow"]
    np.testing.assert_array_equal(
        by_name.encode_texts(texts, progress=False), by_spec.encode_texts(texts, progress=False)
    )
    assert by_name.encode_texts(texts, progress=False).shape == (3, 32)
