"""Thumbnails of WebDataset items: the upload size limit, checked from the member's header."""

from __future__ import annotations

import io

from conftest import cli_runner
from fastapi.testclient import TestClient
from PIL import Image

from img_search.serve.app import ServeSettings, create_app
from img_search.serve.catalog import load_catalog
from img_search.testing.fixtures import jpeg_bytes, synthetic_image, write_img2dataset_tar


def test_a_tar_member_over_the_upload_limit_gets_no_thumbnail(tiny_checkpoints, tmp_path) -> None:
    """Before: a small JPEG followed by megabytes of padding was read whole for its thumbnail,
    outside the decode slots, by every request."""
    photo = jpeg_bytes(synthetic_image(1, (64, 48)))
    padded = jpeg_bytes(synthetic_image(2, (64, 48))) + bytes(600_000)  # embeds like any JPEG
    write_img2dataset_tar(
        tmp_path / "00000.tar", [{"key": "0000", "jpg": photo}, {"key": "0001", "jpg": padded}]
    )
    table = tmp_path / "laion.parquet"
    cli_runner("img_search.pipeline.embed")(
        "models=clip",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        "datasets=webdataset",
        f"datasets.webdataset.urls={tmp_path / '00000.tar'}",
        f"output_path={table}",
    )
    catalog = load_catalog({"laion": {"table": str(table)}})
    settings = ServeSettings(max_upload_bytes=400_000)
    with TestClient(create_app(catalog, settings)) as client:
        small = client.get("/api/thumbnail/laion/00000/0000")
        assert small.status_code == 200, small.text
        assert Image.open(io.BytesIO(small.content)).size == (64, 48)
        large = client.get("/api/thumbnail/laion/00000/0001")
        assert large.status_code == 422
        assert large.json()["error"] == (
            "the image of item '00000/0001' cannot be read: the image of 587.2 KiB is over the "
            "size limit of 400000 bytes (max_upload_bytes)"
        )
        assert client.app.state.thumbnails.made == 1
