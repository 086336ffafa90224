"""``Encoder.encode``: items → vectors outside the pipeline, through the pipeline's own steps.

The demo tables are what the pipeline wrote (EfficientNet-Lite0 over the
sample photos, MiniLM over their captions); ``encode`` over the same items in
the same batches must give those rows bit for bit.
"""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_PHOTOS

from img_search.embedding import get_encoder
from img_search.embedding.encode import ItemFailure, UnsupportedSide
from img_search.images import ImageDecodeError
from img_search.store import read_embeddings
from img_search.store.selection import selection_info

#: The pipeline's batch (``tasks.batch_size``' default), with which the demo tables were written.
PIPELINE_BATCH = 32


def table_encoder(path):
    """The encoder the table records (its resolved spec), loaded on the CPU."""
    info = selection_info(path)
    return get_encoder(info.model_spec, name=info.model_name).load("cpu")


@pytest.fixture(scope="module")
def efficientnet(demo_tables):
    return table_encoder(demo_tables["images"])


@pytest.fixture(scope="module")
def minilm(demo_tables):
    return table_encoder(demo_tables["captions"])


def test_images_encode_to_the_demo_table_rows_bit_for_bit(efficientnet, demo_tables):
    table = read_embeddings(demo_tables["images"])
    paths = [SAMPLE_PHOTOS / item_id for item_id in table.ids]
    encoded = efficientnet.encode(paths, side="image", batch_size=PIPELINE_BATCH)
    assert encoded.vectors.dtype == np.float32 and encoded.vectors.shape == (8, 1280)
    np.testing.assert_array_equal(encoded.vectors, table.vectors)
    assert encoded.indices.tolist() == list(range(8)) and encoded.failures == []
    # the bytes of the files are the same images
    as_bytes = efficientnet.encode([p.read_bytes() for p in paths], side="image")
    np.testing.assert_array_equal(as_bytes.vectors, table.vectors)


def test_texts_encode_to_the_demo_caption_rows_bit_for_bit(minilm, demo_tables):
    table = read_embeddings(demo_tables["captions"])
    rows = pq.read_table(demo_tables["captions"], columns=["id", "caption"]).to_pydict()
    caption_of = dict(zip(rows["id"], rows["caption"], strict=True))
    texts = [caption_of[item_id] for item_id in table.ids]
    encoded = minilm.encode(texts, side="text", batch_size=PIPELINE_BATCH)
    assert encoded.vectors.shape == (len(texts), 384)
    np.testing.assert_array_equal(encoded.vectors, table.vectors)
    # smaller batches come back in input order (padding differs, so equal to float rounding)
    in_fives = minilm.encode(texts, side="text", batch_size=5)
    assert in_fives.indices.tolist() == list(range(len(texts)))
    np.testing.assert_allclose(in_fives.vectors, table.vectors, atol=1e-6)


def test_encode_prepares_items_with_the_pipeline_steps(efficientnet, minilm):
    """The preparers ``encode`` uses are the loader workers' (same class, same settings) and pickle."""
    from img_search.pipeline.modalities import CAPTIONS, IMAGES
    from img_search.pipeline.settings import TaskSettings

    settings = TaskSettings(max_image_pixels=1000)
    for encoder, modality, side in ((efficientnet, IMAGES, "image"), (minilm, CAPTIONS, "text")):
        step = pickle.loads(pickle.dumps(encoder.preparer(side, 1000, require_text=True)))
        pipeline_step = modality.make_prepare(encoder, settings)
        assert type(step) is type(pipeline_step)
        assert vars(step).keys() == vars(pipeline_step).keys()
    image_step = efficientnet.preparer("image", 1000)
    assert image_step.max_pixels == 1000
    assert image_step.transform.describe() == efficientnet.image_transform().describe()
    assert efficientnet.collate("image").__func__ is type(image_step.transform).collate
    assert CAPTIONS.make_prepare(minilm, settings).require_text  # an empty caption is an error
    assert not minilm.preparer("text").require_text  # an empty query is a query
    assert minilm.collate("text") is list


def test_a_bad_image_raises_its_index_or_is_skipped_with_its_reason(efficientnet, tmp_path):
    good = [SAMPLE_PHOTOS / "coffee.jpg", SAMPLE_PHOTOS / "rocket.jpg"]
    images = [good[0], b"not a jpeg", good[1], tmp_path / "missing.jpg"]
    with pytest.raises(ItemFailure, match=r"^image 1: bytes: ImageDecodeError: cannot") as caught:
        efficientnet.encode(images, side="image", batch_size=3)
    assert caught.value.index == 1 and isinstance(caught.value.__cause__, ImageDecodeError)
    skipped = efficientnet.encode(images, side="image", batch_size=3, on_error="skip")
    assert skipped.indices.tolist() == [0, 2]
    assert [(f.index, f.side, type(f.cause)) for f in skipped.failures] == [
        (1, "image", ImageDecodeError),
        (3, "image", ImageDecodeError),
    ]
    assert str(tmp_path / "missing.jpg") in skipped.failures[1].reason
    alone = efficientnet.encode(good, side="image")
    np.testing.assert_allclose(skipped.vectors, alone.vectors, atol=1e-6)


class Untouchable:
    """A sequence that fails the test as soon as anything reads it."""

    def __len__(self) -> int:
        raise AssertionError("the items were read")

    def __getitem__(self, index: int) -> str:
        raise AssertionError("the items were read")


def test_an_unsupported_side_is_refused_before_any_item_is_read(efficientnet, minilm):
    with pytest.raises(UnsupportedSide, match=r"model 'efficientnet_lite0' .* has no text side"):
        efficientnet.encode(Untouchable(), side="text")
    with pytest.raises(UnsupportedSide, match=r"model 'minilm' .* has no image side"):
        minilm.encode(Untouchable(), side="image")
    with pytest.raises(ValueError, match=r"side must be 'image' or 'text', not 'audio'"):
        minilm.encode(Untouchable(), side="audio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"on_error must be 'raise' or 'skip'"):
        minilm.encode(Untouchable(), side="text", on_error="ignore")  # type: ignore[arg-type]


def test_no_items_give_an_empty_matrix_of_the_model_dimension(minilm):
    encoded = minilm.encode([], side="text")
    assert encoded.vectors.shape == (0, 384) and encoded.indices.shape == (0,)
    with pytest.raises(TypeError, match=r"wrap a single one"):
        minilm.encode("one text", side="text")
