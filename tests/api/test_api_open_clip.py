"""``load_encoder("open_clip", model_name=<folder>)``: the CLI's table and open_clip's own vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from img_search import load_encoder
from img_search.store import read_embeddings
from img_search.testing.open_clip_checkpoint import open_clip_vectors


@pytest.fixture(scope="module")
def encoder(tiny_open_clip):
    return load_encoder("open_clip", device="cpu", model_name=str(tiny_open_clip))


def test_images_equal_the_table_and_open_clip(encoder, open_clip_tables, tiny_open_clip):
    table = read_embeddings(open_clip_tables["images"])
    paths = [Path(open_clip_tables["photos"]) / item_id for item_id in table.ids]
    vectors = encoder.encode_images(paths, batch_size=3, progress=False)
    assert vectors.dtype == np.float32 and vectors.shape == (8, 32)
    np.testing.assert_allclose(vectors, table.vectors, atol=1e-5)
    images = [Image.open(path).convert("RGB") for path in paths]
    cosine = np.sum(open_clip_vectors(tiny_open_clip, images=images) * vectors, axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_texts_equal_the_table_and_open_clip(encoder, open_clip_tables, tiny_open_clip):
    table = read_embeddings(open_clip_tables["captions"])
    texts = pq.read_table(open_clip_tables["captions"], columns=["caption"]).column(0).to_pylist()
    vectors = encoder.encode_texts(texts, batch_size=7, progress=False)
    np.testing.assert_allclose(vectors, table.vectors, atol=1e-5)
    cosine = np.sum(open_clip_vectors(tiny_open_clip, texts=texts) * vectors, axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert encoder.encoder.identity()["checkpoint"] == str(tiny_open_clip)
