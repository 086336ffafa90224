"""The image pipeline through its CLI, on tiny random checkpoints and a local INQUIRE-shaped copy."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SAMPLE_PHOTOS, accelerate_two_ranks, venv_bin
from PIL import Image

from img_search.store import read_embeddings, read_metadata

FAMILIES = ["clip", "siglip", "siglip2"]


def inquire_images(root: Path) -> dict[str, Image.Image]:
    """file name → decoded image, straight from the fixture's Parquet files."""
    images = {}
    for file in sorted((root / "data").glob("*.parquet")):
        table = pq.read_table(file, columns=["image", "inat24_file_name"]).to_pylist()
        for row in table:
            images[row["inat24_file_name"]] = Image.open(io.BytesIO(row["image"]["bytes"])).convert(
                "RGB"
            )
    return images


def reference_vectors(checkpoint: Path, images: list[Image.Image]) -> np.ndarray:
    """What a user gets with plain transformers from the same checkpoint and processor."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        output = model.get_image_features(**inputs).pooler_output
    return torch.nn.functional.normalize(output, dim=-1).numpy()


def model_args(family: str, checkpoints: dict[str, Path]) -> list[str]:
    return [f"models={family}", f"models.{family}.model_name={checkpoints[family]}"]


def inquire_args(root: Path, out: Path, batch_size: int = 8, workers: int = 1) -> list[str]:
    return [
        "datasets=inquire",
        f"datasets.inquire.path={root}",
        f"output_path={out}",
        f"tasks.batch_size={batch_size}",
        f"tasks.num_workers={workers}",
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoint_matches_transformers(
    family, tiny_checkpoints, inquire_dir, tmp_path, run_embed
):
    root, expected_ids = inquire_dir
    out = tmp_path / f"{family}.parquet"
    result = run_embed(*model_args(family, tiny_checkpoints), *inquire_args(root, out))
    assert f"rows: {len(expected_ids)}" in result.stdout

    table = pq.read_table(out)
    assert table.num_rows == 41
    assert table.schema.field("embedding").type.list_size == 32
    assert str(table.schema.field("embedding").type.value_type) == "float"
    assert set(table.column("model_name").to_pylist()) == {family}
    assert set(table.column("dataset_name").to_pylist()) == {"inquire"}
    got = read_embeddings(out, model_name=family, dataset_name="inquire")
    assert sorted(got.ids) == sorted(expected_ids)
    assert len(set(got.ids)) == len(got.ids)
    np.testing.assert_allclose(np.linalg.norm(got.vectors, axis=1), 1.0, atol=1e-5)

    images = inquire_images(root)
    reference = reference_vectors(tiny_checkpoints[family], [images[i] for i in got.ids])
    cosine = np.sum(reference * got.vectors, axis=1)
    assert cosine.min() >= 0.9999, f"worst cosine {cosine.min()}"

    metadata = read_metadata(out)
    model_info = metadata["models"][family]
    assert model_info["checkpoint"] == str(tiny_checkpoints[family])
    assert model_info["dim"] == 32 and model_info["normalized"] is True
    assert metadata["output_dtype"] == "float32" and metadata["rows"] == 41
    assert metadata["datasets"]["inquire"]["path"] == str(root)
    assert metadata["config"]["tasks"]["batch_size"] == 8
    assert {"torch", "transformers", "pyarrow"} <= set(metadata["versions"])


@pytest.fixture(scope="module")
def two_model_run(tiny_checkpoints, inquire_dir, tmp_path_factory):
    """One process, ``models=[clip,siglip2]`` into one file: the reference for the multi-rank runs."""
    from conftest import built_once, run_module

    root, _ = inquire_dir

    def build(folder: Path) -> str:  # once per session: the launch tests interleave modules
        out = folder / "both.parquet"
        result = run_module(
            "img_search.pipeline.embed",
            "models=[clip,siglip2]",
            f"models.clip.model_name={tiny_checkpoints['clip']}",
            f"models.siglip2.model_name={tiny_checkpoints['siglip2']}",
            *inquire_args(root, out, batch_size=5, workers=0),
        )
        assert result.returncode == 0, result.stderr
        return str(out)

    return Path(built_once(tmp_path_factory, "embed-two-models", build))


def test_two_models_land_in_one_file(two_model_run, inquire_dir):
    _, expected_ids = inquire_dir
    table = pq.read_table(two_model_run)
    assert table.num_rows == 82
    for family in ("clip", "siglip2"):
        got = read_embeddings(two_model_run, model_name=family)
        assert sorted(got.ids) == sorted(expected_ids)
        assert got.vectors.dtype == np.float32 and got.vectors.shape == (41, 32)
    metadata = read_metadata(two_model_run)
    assert set(metadata["models"]) == {"clip", "siglip2"}
    assert metadata["models"]["clip"]["fingerprint"] != metadata["models"]["siglip2"]["fingerprint"]


def test_output_opens_in_common_readers(two_model_run):
    import datasets
    import pandas as pd

    frame = pd.read_parquet(two_model_run)
    assert list(frame.columns) == ["id", "model_name", "dataset_name", "embedding"]
    assert len(frame) == 82
    import duckdb
    import polars as pl

    polars_frame = pl.read_parquet(two_model_run)
    assert polars_frame.shape == (82, 4)
    assert polars_frame.schema["embedding"] == pl.Array(pl.Float32, 32)
    dims = duckdb.sql(
        f"select model_name, count(*), min(len(embedding)), max(len(embedding)) "
        f"from '{two_model_run}' group by model_name order by model_name"
    ).fetchall()
    assert dims == [("clip", 41, 32, 32), ("siglip2", 41, 32, 32)]
    loaded = datasets.load_dataset("parquet", data_files=str(two_model_run), split="train")
    assert loaded.num_rows == 82 and loaded[0]["id"] == frame["id"][0]
    np.testing.assert_allclose(np.asarray(loaded[0]["embedding"]), frame["embedding"][0], rtol=1e-6)


LAUNCHERS = {
    "accelerate": accelerate_two_ranks,
    "torchrun": lambda: [venv_bin("torchrun"), "--nproc_per_node", "2"],
}


@pytest.mark.slow
@pytest.mark.xdist_group("launch")
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_ranks_equal_one_rank(
    launcher, two_model_run, tiny_checkpoints, inquire_dir, tmp_path, run_embed
):
    """41 images (odd, uneven last batches) on 2 gloo ranks: each image once per model, same
    vectors; the progress lines (the log is not a terminal) count the job's items, not rank 0's."""
    root, expected_ids = inquire_dir
    out = tmp_path / "ranks.parquet"
    result = run_embed(
        "models=[clip,siglip2]",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        f"models.siglip2.model_name={tiny_checkpoints['siglip2']}",
        *inquire_args(root, out, batch_size=4, workers=1),
        "tasks.cpu=true",
        "tasks.shard_size=8",
        launcher=LAUNCHERS[launcher](),
    )
    for family in ("clip", "siglip2"):
        lines = [line for line in result.stderr.splitlines() if f" {family} × inquire: " in line]
        assert lines, result.stderr[-3000:]
        # one line from the main process only, ending at the job's 41 items and 6 shards
        assert lines[-1].split(f"{family} × inquire: ")[1].startswith("41/41 (100%)")
        assert lines[-1].endswith("; 6/6 shards committed, 0 errors")
        assert len(lines) == len(set(lines))
    assert "\x1b" not in result.stderr + result.stdout  # no ANSI code in a log
    metadata = read_metadata(out)
    assert metadata["num_processes"] == 2
    shards = [
        p["shards"].get(f"{m}/inquire", []) for p in metadata["run"]["processes"] for m in ("clip",)
    ]
    assert sorted(s for rank in shards for s in rank) == list(
        range(6)
    )  # 41 items, 6 shards, each once
    for family in ("clip", "siglip2"):
        ranks = read_embeddings(out, model_name=family)
        single = read_embeddings(two_model_run, model_name=family)
        assert len(ranks) == 41
        assert len(set(ranks.ids)) == 41
        assert sorted(ranks.ids) == sorted(expected_ids)
        order_r, order_s = np.argsort(ranks.ids), np.argsort(single.ids)
        np.testing.assert_allclose(ranks.vectors[order_r], single.vectors[order_s], atol=1e-5)


def test_demo_crop_is_nearest_to_its_photo(tmp_path, run_embed):
    """Real EfficientNet-Lite0 weights: a centre crop of each sample photo finds that photo first."""
    photos = tmp_path / "photos.parquet"
    result = run_embed(
        "models=efficientnet_lite0",
        "datasets=image_folder",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        f"output_path={photos}",
    )
    names = sorted(p.name for p in SAMPLE_PHOTOS.glob("*.jpg"))
    assert len(names) >= 8
    assert f"rows: {len(names)}" in result.stdout
    crops_dir = tmp_path / "crops"
    crops_dir.mkdir()
    for name in names:
        image = Image.open(SAMPLE_PHOTOS / name).convert("RGB")
        w, h = image.size
        image.crop((w // 6, h // 8, w - w // 5, h - h // 7)).save(crops_dir / name, quality=85)
    crops = tmp_path / "crops.parquet"
    run_embed(
        "datasets=image_folder", f"datasets.image_folder.path={crops_dir}", f"output_path={crops}"
    )
    table = read_embeddings(photos)
    queries = read_embeddings(crops)
    assert table.vectors.shape == (len(names), 1280)
    similarity = queries.vectors @ table.vectors.T
    nearest = table.ids[similarity.argmax(axis=1)]
    assert list(nearest) == list(queries.ids)


def test_finished_output_is_not_recomputed(tmp_path, run_embed):
    out = tmp_path / "demo.parquet"
    args = [
        "datasets=image_folder",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        f"output_path={out}",
    ]
    run_embed(*args)
    before = out.read_bytes()
    again = run_embed(*args)
    assert "already complete" in again.stderr
    assert "rows: 8" in again.stdout
    assert out.read_bytes() == before
    refused = run_embed(*args, "tasks.resume=false", expect_ok=False)
    assert refused.returncode == 2 and "tasks.overwrite=true" in refused.stderr
    assert out.read_bytes() == before
    inode = out.stat().st_ino
    run_embed(*args, "tasks.overwrite=true")
    assert out.stat().st_ino != inode  # a new file was renamed into place
    rewritten = read_embeddings(out)
    assert len(rewritten) == 8 and not out.with_name(out.name + ".partial").exists()


def test_cfg_job_shows_overrides(run_embed):
    result = run_embed(
        "models=[siglip2,clip]",
        "models.siglip2.model_name=/ckpt",
        "datasets=inquire",
        "datasets.inquire.path=/data/inquire",
        "--cfg",
        "job",
    )
    assert "model_name: /ckpt" in result.stdout
    assert "path: /data/inquire" in result.stdout
    assert "model_name: openai/clip-vit-base-patch32" in result.stdout


def test_help_lists_config_groups(run_embed):
    result = run_embed("--help")
    assert (
        "models: bioclip, bioclip2, clip, dfn5b_h14_378, efficientnet_lite0, jina_v4, minilm, "
        "open_clip, openclip_b32_laion2b, siglip, siglip2, simulated" in result.stdout
    )
    assert "datasets: flickr30k, hf_images, image_folder, inquire" in result.stdout


def test_multirun_sweeps_batch_size(tiny_checkpoints, inquire_dir, tmp_path, run_embed):
    """``-m tasks.batch_size=16,41``: two jobs, two tables, same vectors whatever the batching."""
    root, _ = inquire_dir
    run_embed(
        "-m",
        *model_args("clip", tiny_checkpoints),
        "datasets=inquire",
        f"datasets.inquire.path={root}",
        "tasks.batch_size=16,41",
        f"output_path={tmp_path}/clip-" + "${tasks.batch_size}.parquet",
        cwd=tmp_path,
    )
    small = read_embeddings(tmp_path / "clip-16.parquet")
    large = read_embeddings(tmp_path / "clip-41.parquet")
    assert len(small) == len(large) == 41
    np.testing.assert_allclose(
        small.vectors[np.argsort(small.ids)], large.vectors[np.argsort(large.ids)], atol=1e-5
    )
    # a sweep writes its tables and nothing else (Hydra's multirun.yaml went to a scratch folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-16.parquet", "clip-41.parquet"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["models=nope"],
            "unknown models option 'nope'; the options are: bioclip, bioclip2, clip,",
        ),
        (["datasets=nope"], "unknown datasets option 'nope'; the options are: flickr30k,"),
        (
            ["datasets=inquire", "datasets.inquire.path=/no/inquire/copy"],
            "dataset path not found: /no/inquire/copy",
        ),
        (["datasets=image_folder"], "datasets.image_folder.path"),
        (["datasets.image_folder.path=/does/not/exist"], "/does/not/exist"),
        (["datasets.image_folder.path=.", "tasks.batch_size=0"], "tasks.batch_size"),
        (  # the types of the tasks structured config are checked while composing
            ["datasets.image_folder.path=.", "tasks.num_workers=two"],
            "'two' of type 'str' could not be converted to Integer",
        ),
        (["datasets.image_folder.path=.", "tasks.part_rows=5"], "unknown key tasks.part_rows"),
        (["datasets.image_folder.path=.", "tasks.shard_size=0"], "tasks.shard_size must be"),
        (["datasets.image_folder.path=.", "tasks.precision=fp8"], "tasks.precision must be one of"),
        (
            ["datasets.image_folder.path=.", "models.efficientnet_lite0.model=nope"],
            "registered: clip",
        ),
    ],
)
def test_bad_configuration_fails_with_one_line(args, message, tmp_path, run_embed):
    result = run_embed(*args, f"output_path={tmp_path}/x.parquet", expect_ok=False)
    assert result.returncode == 2
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_metadata_records_the_resolved_config(tmp_path, run_embed):
    out = tmp_path / "demo.parquet"
    run_embed(
        "datasets=image_folder",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        f"output_path={out}",
        "tasks.output_dtype=float16",
    )
    metadata = read_metadata(out)
    assert metadata["config"]["datasets"]["image_folder"]["path"] == str(SAMPLE_PHOTOS)
    assert metadata["models"]["efficientnet_lite0"]["dim"] == 1280
    assert pq.read_schema(out).field("embedding").type.value_type.bit_width == 16
    assert json.loads(json.dumps(metadata)) == metadata
