"""Bad items never stop the run: each is converted or skipped once, with its reason, and counted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_PHOTOS, run_module
from PIL import Image

from img_search.store import read_embeddings
from img_search.testing.address_space import address_space_for
from img_search.testing.fixtures import jpeg_bytes, synthetic_image

SKIPPED = {
    "missing.jpg": "file not found",
    "truncated.jpg": "cannot decode",
    "empty.jpg": "0 bytes",
    "not_an_image.jpg": "cannot decode",
    "bomb.png": "exceeds the limit",
    "strip.png": "would be resized to 5000000x32 by the model's preprocessing",
    # listing problems (issue 15.4): one row each, the rest is embedded
    "loop.jpg": "Too many levels of symbolic links",
    "caf\\xe9.jpg": "not valid UTF-8",
    "to_root": "a symlink to /, outside the folder: not followed (datasets.<name>.follow_links",
    "outside.jpg": "outside the folder: not followed",
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
    Image.new("L", (2_500_000, 16)).save(root / "strip.png")  # a shorter-side resize: 160 Mpx
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / "to_root").symlink_to("/")
    (root / "outside.jpg").symlink_to(SAMPLE_PHOTOS / "coffee.jpg")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.jpg"), "wb") as latin1:
        latin1.write(jpeg_bytes(synthetic_image(3)))
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
        *run_args(
            messy_folder, out, tiny_checkpoints["clip"], f"tasks.max_errors={len(SKIPPED) - 1}"
        ),
        expect_ok=False,
    )
    assert result.returncode == 1
    over = f"{len(SKIPPED)} items could not be embedded, over the budget of {len(SKIPPED) - 1}"
    assert over in result.stderr
    assert pq.read_metadata(out).num_rows == len(GOOD) + len(
        CONVERTED
    )  # the table is still complete
    within = run_embed(
        *run_args(
            messy_folder,
            tmp_path / "ok.parquet",
            tiny_checkpoints["clip"],
            f"tasks.max_errors={len(SKIPPED)}",
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


def under_the_limit() -> list[str]:
    """A launcher that runs the rest of its command line with 5.4 GiB of address space above its
    libraries' (a normal run fits; a resize to 40,000,000 x 256 pixels does not)."""
    limit = address_space_for(int(5.4 * 2**30))
    return [
        sys.executable,
        "-c",
        f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
    ]


def test_a_strip_png_and_a_dying_loader_worker_cost_only_their_items(tmp_path):
    """Issue 15.2: a 2,500,000 x 16 PNG (a few dozen KB) is refused from its header, before a
    shorter-side resize asks for 40,000,000 x 256 pixels; a loader worker killed while preparing
    coffee.jpg costs the two items of its batch, named, and the run goes on."""
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE_PHOTOS, folder)
    Image.new("L", (2_500_000, 16)).save(folder / "strip.png")
    out = tmp_path / "out.parquet"
    result = run_module(
        "img_search.pipeline.embed",
        "models=efficientnet_lite0",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=2",
        "tasks.num_workers=2",
        launcher=under_the_limit(),
        env={"IMG_SEARCH_FAULT": "prepare/coffee.jpg"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows: 6" in result.stdout and "errors: 3" in result.stdout
    errors = {
        e["id"]: e["reason"] for e in pq.read_table(out.with_suffix(".errors.parquet")).to_pylist()
    }
    assert sorted(errors) == ["chelsea.jpg", "coffee.jpg", "strip.png"]
    assert "would be resized to 40000000x256 by the model's preprocessing" in errors["strip.png"]
    for name in ("chelsea.jpg", "coffee.jpg"):
        assert "the loader worker was killed by SIGKILL" in errors[name], errors[name]
    assert "Traceback" not in result.stderr


def test_an_empty_folder_fails_with_one_line_and_leaves_nothing(tmp_path, run_embed):
    """Issues 15.6 and 15.7: exit 2 naming the folder and the extensions; no ``.partial`` left."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image\n")
    out = tmp_path / "out.parquet"
    result = run_embed(
        "models=simulated",
        "datasets=image_folder",
        f"datasets.image_folder.path={empty}",
        f"output_path={out}",
        expect_ok=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"no images under {empty} (extensions .jpg .jpeg .png" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_failed_start_leaves_nothing_that_blocks_another_job(tmp_path):
    """Issue 15.7: a run that fails before committing anything removes its job state."""
    from img_search.api.jobs import compose
    from img_search.pipeline.launch import run_job
    from img_search.pipeline.modalities import IMAGES, image_dataset_specs
    from img_search.pipeline.plan import plan_job

    out = tmp_path / "out.parquet"

    def job(folder, *extra):
        cfg = compose(
            "embed_config",
            [
                "models=simulated",
                "models.simulated.batch_seconds=0",
                "datasets=image_folder",
                f"datasets.image_folder.path={folder}",
                f"output_path={out}",
                "tasks.num_workers=0",
                *extra,
            ],
        )
        return plan_job(cfg, IMAGES, image_dataset_specs(cfg))

    with pytest.raises(Exception, match="image folder not found"):
        run_job(job(tmp_path / "missing"))
    assert not out.with_name("out.parquet.partial").exists()
    assert run_job(job(SAMPLE_PHOTOS, "models.simulated.dim=8")) == 0  # another job: not refused
    assert len(read_embeddings(out).ids) == 8


FULL_DISK = """
set -u
mount -t tmpfs -o size=2m tmpfs "$OUT"
embed() {
  "$PY" -m img_search.pipeline.embed models=simulated models.simulated.batch_seconds=0 \\
    models.simulated.dim=8192 datasets=image_folder datasets.image_folder.path="$PHOTOS" \\
    output_path="$OUT/t.parquet" tasks.shard_size=8 tasks.batch_size=8 tasks.num_workers=0
}
embed >"$LOG/1.out" 2>"$LOG/1.err"; echo $? >"$LOG/1.rc"
find "$OUT/t.parquet.partial/records" -name '*.json' | wc -l >"$LOG/committed"
mount -o remount,size=64m "$OUT"
embed >"$LOG/2.out" 2>"$LOG/2.err"; echo $? >"$LOG/2.rc"
cp "$OUT/t.parquet" "$LOG/t.parquet"
"""


def test_a_full_disk_mid_run_fails_with_one_line_and_a_rerun_resumes(tmp_path):
    """Issue 15.5: a 2 MiB filesystem (a private tmpfs) fills after a few shards of 96 rows of
    32 KiB; the run says where and how much space is left, keeps its commits, and resumes."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a private tmpfs")
    photos, out, log = tmp_path / "photos", tmp_path / "out", tmp_path / "log"
    for folder in (photos, out, log):
        folder.mkdir()
    for i in range(96):
        (photos / f"{i:03d}.jpg").write_bytes(jpeg_bytes(synthetic_image(i, (24, 24))))
    env = {**os.environ, "PY": sys.executable, "PHOTOS": str(photos), "OUT": str(out)}
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", FULL_DISK],
        env={**env, "LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if not (log / "1.rc").exists():
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()[:200]}")
    first_err = (log / "1.err").read_text()
    assert (log / "1.rc").read_text().strip() == "2", first_err[-3000:]
    line = [ln for ln in first_err.splitlines() if "ERROR" in ln][-1]
    assert f"cannot write {out / 't.parquet'}" in line, line
    assert "No space left on device (" in line and " free there)" in line, line
    assert "rerun the same command to resume" in line
    assert "Traceback" not in first_err
    committed = int((log / "committed").read_text())
    assert 0 < committed < 12
    assert (log / "2.rc").read_text().strip() == "0", (log / "2.err").read_text()[-3000:]
    assert f"resumed: {committed * 8} rows" in (log / "2.out").read_text()
    table = read_embeddings(log / "t.parquet")
    assert sorted(table.ids) == [f"{i:03d}.jpg" for i in range(96)]


def test_workers_that_die_on_every_batch_stop_the_run_instead_of_reporting_items(
    tmp_path, run_embed
):
    """When each batch in flight dies alone too, no item is to blame: nothing becomes an error row."""
    out = tmp_path / "out.parquet"
    result = run_embed(
        "models=simulated",
        "models.simulated.batch_seconds=0",
        "datasets=image_folder",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        f"output_path={out}",
        "tasks.batch_size=2",
        "tasks.num_workers=2",
        env={"IMG_SEARCH_FAULT": "prepare/*"},
        expect_ok=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "and so did every batch it may have held, each alone: not an item's fault" in (
        result.stderr
    )
    assert not out.exists() and not out.with_suffix(".errors.parquet").exists()
