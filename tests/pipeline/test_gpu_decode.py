"""``tasks.decode=gpu`` on the CPU: the same code as on a GPU, with ``device=cpu``.

A folder of photos of several sizes as JPEGs, plus the images the device path
must hand to the CPU (a PNG, a CMYK JPEG, a JPEG rotated by its EXIF) and two
it cannot decode (a truncated JPEG, which PIL refuses too, and bytes that are
no image), is embedded twice, ``tasks.decode=cpu`` (PIL, the reference) and
``tasks.decode=gpu``, with the tiny open_clip, CLIP and SigLIP2 (NaFlex)
checkpoints and EfficientNet-Lite0's real weights. The vectors must agree to
``COSINE``, the same items must be rows and errors with the same reasons, and
the identity must record the decode path.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from img_search.data import ImageItem
from img_search.embedding import get_encoder
from img_search.embedding.prepare import DecodeAndTransform
from img_search.pipeline.gpu_decode import (
    DeviceBatch,
    DeviceJpeg,
    JpegOrDecode,
    MixedCollate,
    decode_on_device,
)
from img_search.pipeline.reader.stream import Batch
from img_search.store import TableLayout, read_embeddings, read_metadata
from img_search.store.writer import read_errors
from img_search.testing.fixtures import jpeg_bytes, synthetic_image

#: The least cosine between a vector of the device path and PIL's, stated before measuring.
#: Measured here: open_clip 0.9999999, CLIP 0.9999999, SigLIP2 0.9999999 (tiny random
#: checkpoints), EfficientNet-Lite0 (real weights) 0.999996: a grey level differs here and there.
COSINE = 0.9999
MODELS = ["open_clip", "clip", "siglip2", "efficientnet_lite0"]
SIZES = [(640, 480), (480, 640), (300, 200), (1024, 300), (96, 95), (50, 70)]


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    buffer = io.BytesIO()
    synthetic_image(40, (120, 80)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    synthetic_image(41, (90, 60)).convert("CMYK").save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpu-decode") / "photos"
    folder.mkdir()
    for number, size in enumerate(SIZES):
        (folder / f"j{number}.jpg").write_bytes(jpeg_bytes(synthetic_image(number, size)))
    synthetic_image(30, (200, 150)).save(folder / "p.png")
    (folder / "rotated.jpg").write_bytes(rotated_jpeg())
    (folder / "cmyk.jpg").write_bytes(cmyk_jpeg())
    whole = jpeg_bytes(synthetic_image(42, (400, 300)))
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "noise.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    return folder


@pytest.mark.parametrize("model", MODELS)
def test_device_path_matches_pil_and_accounts_for_every_item(
    model, photos, tiny_open_clip, tiny_checkpoints, tmp_path, run_embed
) -> None:
    checkpoints = {"open_clip": tiny_open_clip, "efficientnet_lite0": "efficientnet-lite0"}
    checkpoint = checkpoints.get(model) or tiny_checkpoints[model]
    tables = {}
    for decode in ("cpu", "gpu"):
        tables[decode] = tmp_path / f"{decode}.parquet"
        run_embed(
            f"models={model}",
            f"models.{model}.model_name={checkpoint}",
            "datasets=image_folder",
            f"datasets.image_folder.path={photos}",
            f"output_path={tables[decode]}",
            f"tasks.decode={decode}",
            "tasks.batch_size=4",
            "tasks.num_workers=2",
        )
    cpu, gpu = (read_embeddings(tables[d]) for d in ("cpu", "gpu"))
    items = sorted(p.name for p in photos.iterdir())
    errors = {
        d: {e[0]: e[3] for e in read_errors(TableLayout.of(t).errors_path)}
        for d, t in tables.items()
    }
    assert sorted(errors["gpu"]) == ["noise.jpg", "truncated.jpg"]
    assert errors["gpu"] == errors["cpu"]  # the same reasons: PIL's, on both paths
    assert sorted(gpu.ids.tolist() + list(errors["gpu"])) == items
    assert gpu.ids.tolist() == cpu.ids.tolist()
    cosines = np.sum(cpu.vectors * gpu.vectors, axis=1)
    assert cosines.min() >= COSINE, dict(zip(gpu.ids, cosines, strict=True))
    for decode in tables:
        assert read_metadata(tables[decode])["job"]["tasks"]["decode"] == decode


def test_a_changed_decode_path_is_refused_on_resume(photos, tiny_open_clip, tmp_path, run_embed):
    args = [
        "models=open_clip",
        f"models.open_clip.model_name={tiny_open_clip}",
        "datasets=image_folder",
        f"datasets.image_folder.path={photos}",
        f"output_path={tmp_path / 't.parquet'}",
        "tasks.batch_size=4",
    ]
    run_embed(*args)
    refused = run_embed(*args, "tasks.decode=gpu", expect_ok=False)
    assert refused.returncode == 2
    assert "decode" in refused.stderr


def test_worker_step_passes_plain_jpegs_and_decodes_the_rest(photos, tiny_open_clip) -> None:
    encoder = get_encoder({"model": "open_clip", "model_name": str(tiny_open_clip)}, name="oc")
    transform = encoder.load("cpu").image_transform()
    limit = 400_000
    step = JpegOrDecode(DecodeAndTransform(transform, limit), limit, transform.resize_target)
    routed = {
        name: step(ImageItem(name, str(photos / name)))
        for name in ("j0.jpg", "p.png", "rotated.jpg", "cmyk.jpg")
    }
    assert isinstance(routed["j0.jpg"], DeviceJpeg)
    assert bytes(routed["j0.jpg"].data.numpy()) == (photos / "j0.jpg").read_bytes()
    for name in ("p.png", "rotated.jpg", "cmyk.jpg"):  # the CPU path's features
        assert isinstance(routed[name], torch.Tensor) and routed[name].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="exceeds the limit of 400000 pixels"):  # from the header
        step(ImageItem("big", jpeg_bytes(synthetic_image(1, (1000, 500)))))

    collate = MixedCollate(transform.collate)
    plain = collate([routed["p.png"], routed["cmyk.jpg"]])
    assert isinstance(plain, torch.Tensor) and plain.shape == (2, 3, 64, 64)  # as without it
    # two JPEGs of one size (resized in one call) and one of another, between CPU-path items
    twin = jpeg_bytes(synthetic_image(50, SIZES[0]))
    jpegs = {
        "j0": (photos / "j0.jpg").read_bytes(),
        "twin": twin,
        "j2": (photos / "j2.jpg").read_bytes(),
    }
    routed.update({name: step(ImageItem(name, data)) for name, data in jpegs.items()})
    order = ["p.png", "j0", "cmyk.jpg", "twin", "j2"]
    mixed = collate([routed[name] for name in order])
    assert isinstance(mixed, DeviceBatch)
    assert (mixed.jpeg_slots, mixed.cpu_slots) == ([1, 3, 4], [0, 2])
    assert mixed.sizes == [len(jpegs[n]) for n in ("j0", "twin", "j2")]  # in one tensor
    batch = Batch(ids=order, positions=list(range(5)), features=mixed)
    decode_on_device(batch, encoder, None)
    assert batch.ids == order and batch.failures == []
    assert batch.features.shape == (5, 3, 64, 64)
    torch.testing.assert_close(batch.features[[0, 2]], plain)
    for slot, name in ((1, "j0"), (3, "twin"), (4, "j2")):
        pil = transform(Image.open(io.BytesIO(jpegs[name])).convert("RGB"))
        assert (batch.features[slot] - pil).abs().max() <= 1 / 255 / 0.25 + 1e-6, (
            name
        )  # a grey level
