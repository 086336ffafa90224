"""Bad items never stop the run: each is converted or skipped once, with its reason, and counted."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from img_search.store import read_embeddings
from img_search.testing.fixtures import jpeg_bytes, synthetic_image

SKIPPED = {
    "missing.jpg": "file not found",
    "truncated.jpg": "cannot decode",
    "empty.jpg": "0 bytes",
    "not_an_image.jpg": "cannot decode",
    "bomb.png": "exceeds the limit",
}
CONVERTED = ["cmyk.jpg", "gray16.png", "palette.png", "rgba.png", "gray.png", "one_pixel.png"]
GOOD = [f"good/{i}.jpg" for i in range(5)]


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    (root / "good").mkdir()
    for i, name in enumerate(GOOD):
        (root / name).write_bytes(jpeg_bytes(synthetic_image(i)))
    (root / "missing.jpg").symlink_to(root / "gone.jpg")
    whole = jpeg_bytes(synthetic_image(99, (120, 90)))
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "not_an_image.jpg").write_text("this is a text file with an image extension\n")
    Image.new("L", (8000, 8000)).save(root / "bomb.png")  # 64 Mpx, a few kB on disk
    synthetic_image(5).convert("CMYK").save(root / "cmyk.jpg")
    ramp = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(ramp).save(root / "gray16.png")
    palette = synthetic_image(6).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(root / "palette.png", transparency=0)
    rgba = synthetic_image(7).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "rgba.png")
    synthetic_image(8).convert("L").save(root / "gray.png")
    Image.new("RGB", (1, 1), (200, 30, 60)).save(root / "one_pixel.png")
    return root


def run_args(folder, out, checkpoint, *extra):
    return [
        "models=clip",
        f"models.clip.model_name={checkpoint}",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.max_image_pixels=50000000",
        "tasks.batch_size=4",
        "tasks.num_workers=1",
        *extra,
    ]


def test_every_bad_kind_is_reported_once_and_good_items_embed(
    messy_folder, tiny_checkpoints, tmp_path, run_embed
):
    out = tmp_path / "messy.parquet"
    result = run_embed(*run_args(messy_folder, out, tiny_checkpoints["clip"]))
    assert f"rows: {len(GOOD) + len(CONVERTED)}" in result.stdout
    assert f"errors: {len(SKIPPED)}" in result.stdout

    table = read_embeddings(out)
    assert sorted(table.ids) == sorted(GOOD + CONVERTED)
    assert np.isfinite(table.vectors).all()

    errors = pq.read_table(out.with_name("messy.errors.parquet")).to_pylist()
    assert sorted(e["id"] for e in errors) == sorted(SKIPPED)
    for error in errors:
        assert SKIPPED[error["id"]] in error["reason"], error
        assert error["model_name"] == "clip" and error["dataset_name"] == "image_folder"


def test_converted_images_embed_as_their_rgb_version(
    messy_folder, tiny_checkpoints, tmp_path, run_embed
):
    """16-bit and alpha inputs give the vector of the 8-bit RGB picture a viewer would show."""
    from img_search.embedding import get_encoder

    out = tmp_path / "messy.parquet"
    run_embed(*run_args(messy_folder, out, tiny_checkpoints["clip"]))
    table = read_embeddings(out)
    vectors = dict(zip(table.ids, table.vectors, strict=True))
    encoder = get_encoder(
        {"model": "clip", "model_name": str(tiny_checkpoints["clip"])}, name="clip"
    ).load()
    transform = encoder.image_transform()

    ramp = np.asarray(Image.open(messy_folder / "gray16.png"), dtype=np.float64)
    gray8 = Image.fromarray(np.clip(ramp / 65535 * 255 + 0.5, 0, 255).astype(np.uint8)).convert(
        "RGB"
    )
    rgba = Image.open(messy_folder / "rgba.png")
    flattened = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    for name, expected_image in (("gray16.png", gray8), ("rgba.png", flattened)):
        expected = encoder.encode_images(transform.collate([transform(expected_image)]))[0].numpy()
        assert float(expected @ vectors[name]) >= 0.9999, name


def test_error_budget_turns_errors_into_a_failing_exit(
    messy_folder, tiny_checkpoints, tmp_path, run_embed
):
    out = tmp_path / "budget.parquet"
    result = run_embed(
        *run_args(messy_folder, out, tiny_checkpoints["clip"], "tasks.max_errors=4"),
        expect_ok=False,
    )
    assert result.returncode == 1
    assert "5 items could not be embedded, over the budget of 4" in result.stderr
    assert pq.read_metadata(out).num_rows == len(GOOD) + len(
        CONVERTED
    )  # the table is still complete
    within = run_embed(
        *run_args(
            messy_folder, tmp_path / "ok.parquet", tiny_checkpoints["clip"], "tasks.max_errors=5"
        )
    )
    assert within.returncode == 0


def test_unwritable_output_directory_fails_before_any_model(tmp_path, run_embed):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_embed(
        "datasets=image_folder",
        f"datasets.image_folder.path={tmp_path}",
        f"output_path={blocker}/out.parquet",
        "models.efficientnet_lite0.model_name=/nonexistent/weights.pth",  # would fail if loaded
        expect_ok=False,
    )
    assert result.returncode == 2
    assert "output directory is not writable" in result.stderr
    assert "Traceback" not in result.stderr
