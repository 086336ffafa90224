"""Jina v4 adapter logic around a STAND-IN model object.

The real weights (jinaai/jina-embeddings-v4, ~3.8B parameters, remote code)
cannot be fetched on a machine without Hub access, so these tests replace
``AutoModel.from_pretrained`` with a recorder that returns a stand-in exposing
the same ``encode_image`` / ``encode_text`` API. They check what we send to the
model and what we make of its answers, not the model itself.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SAMPLE_PHOTOS
from PIL import Image

from img_search.api.jobs import compose
from img_search.embedding import JinaV4Encoder, get_encoder
from img_search.embedding.base import RemoteCodeRefused
from img_search.testing.jina_stand_in import DIM, StandInJina


@pytest.fixture
def stand_in(monkeypatch):
    import transformers

    recorded: dict = {}
    model = StandInJina()

    def from_pretrained(name, **kwargs):
        recorded["name"], recorded["kwargs"] = name, kwargs
        return model

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", from_pretrained)
    return model, recorded


def test_jina_v4_stand_in_loading_arguments(stand_in):
    model, recorded = stand_in
    encoder = get_encoder(
        {"model": "jina_v4", "model_name": "jinaai/jina-embeddings-v4"}, name="jina_v4"
    )
    encoder.load("cpu", precision="bf16", trust_remote_code=True)
    assert recorded["name"] == "jinaai/jina-embeddings-v4"
    assert recorded["kwargs"]["trust_remote_code"] is True
    assert recorded["kwargs"]["dtype"] is torch.bfloat16
    assert "device_map" not in recorded["kwargs"]
    assert model.device == torch.device("cpu")


def test_jina_v4_is_not_loaded_without_the_users_consent(stand_in):
    """Its checkpoint ships code: loading it without trust_remote_code=true is refused, untouched."""
    _, recorded = stand_in
    with pytest.raises(RemoteCodeRefused, match="add trust_remote_code=true to the command line"):
        JinaV4Encoder("j", model_name="/tmp/evil").load("cpu")
    assert recorded == {}


def test_jina_v4_stand_in_device_map_skips_to(stand_in):
    model, recorded = stand_in
    JinaV4Encoder("j", device_map="auto").load("cpu", trust_remote_code=True)
    assert recorded["kwargs"]["device_map"] == "auto"
    assert model.device is None


def test_jina_v4_stand_in_texts_and_images_are_normalised(stand_in):
    model, _ = stand_in
    encoder = JinaV4Encoder("j", task="retrieval", prompt_name="passage", truncate_dim=8)
    encoder.load("cpu", trust_remote_code=True)
    texts = encoder.encode_texts(["a", "bbb"])
    assert texts.shape == (2, 8)
    np.testing.assert_allclose(texts.norm(dim=1).numpy(), 1.0, atol=1e-6)
    assert model.calls[-1] == ("text", {"task": "retrieval", "prompt_name": "passage", "n": 2})
    transform = encoder.image_transform()
    batch = transform.collate([transform(Image.new("RGB", (9, 9), "white"))])
    images = encoder.encode_images(batch)
    assert images.shape == (1, 8)
    assert model.calls[-1][1]["truncate_dim"] == 8
    assert encoder.identity()["prompt_name"] == "passage"


def test_jina_v4_stand_in_through_the_pipeline(stand_in, tmp_path, monkeypatch):
    """Decoded PIL images travel through a loader worker into ``encode_image``; one row per photo."""
    from img_search.pipeline.launch import run_job
    from img_search.pipeline.modalities import IMAGES, image_dataset_specs
    from img_search.pipeline.plan import plan_job

    model, _ = stand_in
    out = tmp_path / "jina.parquet"
    cfg = compose(
        "embed_config",
        [
            "models=jina_v4",
            "trust_remote_code=true",
            "datasets=image_folder",
            f"datasets.image_folder.path={SAMPLE_PHOTOS}",
            f"output_path={out}",
            "tasks.batch_size=3",
            "tasks.num_workers=1",
        ],
    )
    job = plan_job(cfg, IMAGES, image_dataset_specs(cfg))
    assert run_job(job) == 0
    table = pq.read_table(out)
    assert table.num_rows == 8
    assert table.schema.field("embedding").type.list_size == DIM
    assert sum(call[1]["n"] for call in model.calls if call[0] == "image") == 8
    assert {call[1]["task"] for call in model.calls} == {"retrieval"}


def test_the_pipeline_refuses_jina_v4_without_trust_remote_code(tmp_path):
    """Checked while planning, before any dataset is listed or model fetched."""
    from img_search.pipeline.modalities import IMAGES, image_dataset_specs
    from img_search.pipeline.plan import plan_job
    from img_search.pipeline.settings import ConfigError

    cfg = compose(
        "embed_config",
        [
            "models=jina_v4",
            f"datasets.image_folder.path={tmp_path}",
            f"output_path={tmp_path / 'x.parquet'}",
        ],
    )
    with pytest.raises(ConfigError, match="add trust_remote_code=true to the command line"):
        plan_job(cfg, IMAGES, image_dataset_specs(cfg))
