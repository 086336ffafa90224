"""models=open_clip through img-search embed / embed-text: the vectors open_clip gives for the same
checkpoint, on one process and on two; the registry's open_clip entries; the Hub offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_PHOTOS, run_module, venv_bin
from PIL import Image

from img_search.store import read_embeddings, read_metadata
from img_search.testing.open_clip_checkpoint import open_clip_vectors, write_photos

REGISTRY = {
    "bioclip": "hf-hub:imageomics/bioclip",
    "bioclip2": "hf-hub:imageomics/bioclip-2",
    "dfn5b_h14_378": "hf-hub:apple/DFN5B-CLIP-ViT-H-14-378",
    "openclip_b32_laion2b": "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
}


def model_args(folder: Path) -> list[str]:
    return ["models=open_clip", f"models.open_clip.model_name={folder}"]


def photo_args(folder: Path, out: Path, datasets: str = "image_folder") -> list[str]:
    return [
        f"datasets={datasets}",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=3",  # 8 photos: batches of 3, 3, 2
        "tasks.num_workers=1",
    ]


def test_embed_gives_open_clips_own_image_vectors(open_clip_tables, tiny_open_clip):
    table = read_embeddings(open_clip_tables["images"])
    assert sorted(table.ids) == sorted(f"p{n}.{'png' if n % 2 else 'jpg'}" for n in range(8))
    assert table.vectors.shape == (8, 32) and table.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(table.vectors, axis=1), 1.0, atol=1e-5)
    photos = Path(open_clip_tables["photos"])
    images = [Image.open(photos / item_id).convert("RGB") for item_id in table.ids]
    cosine = np.sum(open_clip_vectors(tiny_open_clip, images=images) * table.vectors, axis=1)
    assert cosine.min() >= 0.9999, cosine
    metadata = read_metadata(open_clip_tables["images"])
    model = metadata["models"]["open_clip"]
    assert model["checkpoint"] == str(tiny_open_clip) and model["pretrained"] is None
    assert model["image_preprocessing"]["interpolation"] == "bilinear" and model["dim"] == 32
    assert {"torch", "torchvision", "open_clip_torch"} <= set(metadata["versions"])


def test_embed_text_gives_open_clips_own_text_vectors(open_clip_tables, tiny_open_clip):
    table = read_embeddings(open_clip_tables["captions"])
    texts = pq.read_table(open_clip_tables["captions"], columns=["caption"]).column(0).to_pylist()
    assert table.vectors.shape == (32, 32)
    cosine = np.sum(open_clip_vectors(tiny_open_clip, texts=texts) * table.vectors, axis=1)
    assert cosine.min() >= 0.9999, cosine


@pytest.mark.slow
@pytest.mark.xdist_group("launch")
def test_two_ranks_give_the_one_process_table(
    open_clip_tables, tiny_open_clip, tmp_path, run_embed
):
    out = tmp_path / "ranks.parquet"
    run_embed(
        *model_args(tiny_open_clip),
        *photo_args(Path(open_clip_tables["photos"]), out),
        "tasks.cpu=true",
        "tasks.shard_size=2",
        launcher=[venv_bin("torchrun"), "--standalone", "--nproc_per_node", "2"],
    )
    assert read_metadata(out)["num_processes"] == 2
    ranks, single = read_embeddings(out), read_embeddings(open_clip_tables["images"])
    assert sorted(ranks.ids) == sorted(single.ids) and len(set(ranks.ids)) == 8
    order_r, order_s = np.argsort(ranks.ids), np.argsort(single.ids)
    np.testing.assert_allclose(ranks.vectors[order_r], single.vectors[order_s], atol=1e-5)


def test_another_preprocessing_of_the_same_checkpoint_is_refused(
    tiny_open_clip, inquire_dir, tmp_path, run_embed
):
    """Appending a dataset loads the model again: its identity must be the table's."""
    model = tmp_path / "model"
    shutil.copytree(tiny_open_clip, model)
    write_photos(tmp_path / "photos")
    out = tmp_path / "t.parquet"
    run_embed(*model_args(model), *photo_args(tmp_path / "photos", out))
    config = json.loads((model / "open_clip_config.json").read_text())
    config["preprocess_cfg"]["interpolation"] = "bicubic"
    (model / "open_clip_config.json").write_text(json.dumps(config))
    result = run_embed(
        *model_args(model),
        *photo_args(tmp_path / "photos", out, datasets="[image_folder,inquire]"),
        f"datasets.inquire.path={inquire_dir[0]}",
        expect_ok=False,
    )
    assert result.returncode == 2
    assert "model open_clip differs from the one that started this output" in result.stderr
    assert "(image_preprocessing changed)" in result.stderr


def test_an_offline_hub_checkpoint_is_one_line_naming_the_override(tmp_path):
    for model, extra in (
        ("bioclip", []),
        (
            "open_clip",
            ["models.open_clip.model_name=ViT-B-32", "models.open_clip.pretrained=openai"],
        ),
    ):
        result = run_module(
            "img_search.pipeline.embed",
            f"models={model}",
            *extra,
            "datasets=image_folder",
            f"datasets.image_folder.path={SAMPLE_PHOTOS}",
            f"output_path={tmp_path}/x.parquet",
        )
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2
        assert len(lines) == 1, lines
        assert "the Hugging Face Hub is off (HF_HUB_OFFLINE=1)" in lines[0]
        assert lines[0].endswith(f"use a local copy: models.{model}.model_name=<local folder>")


def test_cfg_job_shows_each_registry_entry(run_embed):
    result = run_embed(f"models=[{','.join(REGISTRY)},open_clip]", "--cfg", "job")
    for name, checkpoint in REGISTRY.items():
        assert f"  {name}:\n    model: open_clip\n    model_name: {checkpoint}\n" in result.stdout
    assert "pretrained: null" in result.stdout


def test_query_and_serve_answer_with_open_clips_text_vectors(
    open_clip_tables, tiny_open_clip, tmp_path, run_query
):
    from fastapi.testclient import TestClient

    from img_search.serve.app import ServeSettings, create_app
    from img_search.serve.catalog import load_catalog

    table = tmp_path / "images.parquet"  # the query saves its index next to the table
    shutil.copy(open_clip_tables["images"], table)
    vectors = read_embeddings(table)
    text = "a grey strip"
    scores = vectors.vectors @ open_clip_vectors(tiny_open_clip, texts=[text])[0]
    expected = [str(vectors.ids[i]) for i in np.argsort(-scores, kind="stable")]
    hits = json.loads(run_query(f"index={table}", f"text={text}", "k=8", "json=true").stdout)
    assert [h["id"] for h in hits["hits"]] == expected
    np.testing.assert_allclose([h["score"] for h in hits["hits"]], np.sort(scores)[::-1], atol=1e-5)
    refused = run_query(
        f"index={table}", "text=x", "+model_overrides.pretrained=openai", expect_ok=False
    )
    assert refused.returncode == 2
    assert "pretrained: index None, query 'openai'" in refused.stderr
    catalog = load_catalog({"images": {"table": str(table)}})
    with TestClient(create_app(catalog, ServeSettings(default_k=8))) as client:
        body = client.get("/api/search/text", params={"q": text, "table": "images"}).json()
        assert [h["id"] for h in body["results"]] == expected
        photo = Path(open_clip_tables["photos"]) / expected[-1]
        found = client.post(
            "/api/search/image", files={"file": ("p.png", photo.read_bytes(), "image/png")}
        ).json()
        assert found["results"][0]["id"] == expected[-1]
