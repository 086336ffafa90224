"""img2dataset tars through the CLI: images, errors and captions, against the same images in a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import cli_runner, run_module, venv_bin

from img_search.store import read_embeddings, read_metadata
from img_search.testing.fixtures import Img2datasetLike, write_img2dataset_like


@pytest.fixture(scope="module")
def runs(tiny_checkpoints, tmp_path_factory) -> tuple[Img2datasetLike, Path, Path]:
    """One image run (the tars and a folder of the same JPEGs) and one caption run."""
    root = tmp_path_factory.mktemp("webdataset")
    tars = write_img2dataset_like(root / "tars")
    for item_id, data in tars.images.items():  # the folder's ids: <tar stem>/<key>.jpg
        (root / "folder" / f"{item_id}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (root / "folder" / f"{item_id}.jpg").write_bytes(data)
    images, captions = root / "images.parquet", root / "captions.parquet"
    clip = ["models=clip", f"models.clip.model_name={tiny_checkpoints['clip']}", "tasks.cpu=true"]
    cli_runner("img_search.pipeline.embed")(
        *clip,
        "datasets=[webdataset,image_folder]",
        f'datasets.webdataset.urls="{tars.root}/{{00000..00005}}.tar"',
        f"datasets.image_folder.path={root / 'folder'}",
        "tasks.batch_size=4",
        "tasks.num_workers=2",
        f"output_path={images}",
    )
    cli_runner("img_search.pipeline.embed_text")(
        *clip,
        "text_dataset=webdataset_captions",
        f"text_dataset.urls={tars.root}",
        f"output_path={captions}",
    )
    return tars, images, captions


def test_vectors_equal_the_same_images_from_a_folder(runs) -> None:
    tars, images, _ = runs
    got = read_embeddings(images, dataset_name="webdataset")
    assert sorted(got.ids) == sorted(tars.images)  # the corrupt JPEG is not a row
    folder = read_embeddings(images, dataset_name="image_folder")
    by_id = dict(zip([i.removesuffix(".jpg") for i in folder.ids], folder.vectors, strict=True))
    np.testing.assert_allclose(got.vectors, np.stack([by_id[i] for i in got.ids]), atol=1e-6)
    listing = read_metadata(images)["listings"]["webdataset"]
    assert (listing["items"], listing["shards"]) == (len(tars.images) + 1, 6)


def test_errors_name_the_corrupt_jpeg_the_sample_without_image_and_what_the_cut_lost(runs) -> None:
    tars, images, _ = runs
    errors = pq.read_table(images.with_suffix(".errors.parquet")).to_pylist()
    reasons = {e["id"]: e["reason"] for e in errors if e["dataset_name"] == "webdataset"}
    assert set(reasons) == {tars.corrupt, tars.no_image, *tars.lost}
    assert reasons[tars.corrupt].startswith("ImageDecodeError: cannot decode image")
    assert reasons[tars.no_image].startswith("no image (has: txt); datasets.webdataset.image_keys=")
    for lost in tars.lost:
        assert reasons[lost].startswith("tar truncated/corrupt at byte ")
        assert "000040003.jpg: unexpected end of data" in reasons[lost]
    assert not [e for e in errors if e["dataset_name"] == "image_folder"]


def test_captions_join_the_image_table(runs) -> None:
    tars, images, captions = runs
    table = pq.read_table(captions)
    rows = table.select(["id", "image_id", "caption"]).to_pylist()
    assert sorted((r["id"], r["image_id"], r["caption"]) for r in rows) == sorted(
        (f"{i}#0", i, text) for i, text in tars.captions.items()
    )
    image_ids = pq.read_table(images).filter(pc.field("dataset_name") == "webdataset")
    joined = set(image_ids.column("id").to_pylist()) & set(table.column("image_id").to_pylist())
    assert joined == set(tars.images)
    errors = pq.read_table(captions.with_suffix(".errors.parquet")).column("id").to_pylist()
    assert sorted(errors) == sorted(tars.lost)


def test_a_missing_tar_is_one_line_and_exit_2(tiny_checkpoints, tmp_path, run_embed) -> None:
    write_img2dataset_like(tmp_path / "tars")
    out = tmp_path / "out.parquet"
    result = run_embed(
        "models=clip",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        "datasets=webdataset",
        f'datasets.webdataset.urls="{tmp_path}/tars/{{00004..00007}}.tar"',
        f"output_path={out}",
        expect_ok=False,
    )
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(error) == 1 and "webdataset tar not found: " in error[0]
    assert f"{tmp_path}/tars/00006.tar (and 1 more of 4)" in error[0]
    assert not out.exists() and not out.with_name("out.parquet.partial").exists()


@pytest.mark.slow
def test_two_ranks_list_the_tars_together_and_give_the_same_table(
    runs, tiny_checkpoints, tmp_path
) -> None:
    """Both ranks build at once, each starting on its own tars and reading what the other listed."""
    tars, images, _ = runs
    out = tmp_path / "ranks.parquet"
    ranks = [venv_bin("torchrun"), "--standalone", "--nproc_per_node", "2"]
    result = run_module(
        "img_search.pipeline.embed",
        "models=clip",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        "tasks.cpu=true",
        "datasets=webdataset",
        f"datasets.webdataset.urls={tars.root}",
        "tasks.batch_size=4",
        f"output_path={out}",
        launcher=ranks,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got, alone = read_embeddings(out), read_embeddings(images, dataset_name="webdataset")
    assert sorted(got.ids) == sorted(alone.ids) and len(got.ids) == len(set(got.ids))
    by_id = dict(zip(alone.ids, alone.vectors, strict=True))
    np.testing.assert_allclose(got.vectors, np.stack([by_id[i] for i in got.ids]), atol=1e-6)
    errors = pq.read_table(out.with_suffix(".errors.parquet")).column("id").to_pylist()
    assert sorted(errors) == sorted([tars.corrupt, tars.no_image, *tars.lost])
