"""The HTTP API over the demo tables: every endpoint, good and bad input, status codes and bodies."""

from __future__ import annotations

import io
import itertools
import re

import numpy as np
import pytest
from conftest import SAMPLE_PHOTOS
from fastapi.testclient import TestClient
from PIL import Image

from img_search.serve.app import ServeSettings, create_app
from img_search.serve.catalog import LoadedTable, load_catalog


@pytest.fixture(scope="module")
def catalog(demo_tables):
    return load_catalog(
        {
            "images": {"table": str(demo_tables["images"])},
            "captions": {"table": str(demo_tables["captions"])},
        }
    )


@pytest.fixture(scope="module")
def client(catalog):
    settings = ServeSettings(default_k=5, max_upload_bytes=400_000, max_upload_pixels=4_000_000)
    with TestClient(create_app(catalog, settings)) as client:
        yield client


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def crop_of(name: str) -> bytes:
    image = Image.open(SAMPLE_PHOTOS / name).convert("RGB")
    w, h = image.size
    return jpeg(image.crop((w // 6, h // 8, w - w // 5, h - h // 7)))


def test_health_counts_the_tables_and_tables_describes_each(client):
    assert client.get("/api/health").json() == {"status": "ok", "tables": 2}
    tables = {t["name"]: t for t in client.get("/api/tables").json()["tables"]}
    assert tables["images"] == {
        "name": "images",
        "kind": "image",
        "model_name": "efficientnet_lite0",
        "dataset_name": "image_folder",
        "rows": 8,
        "dim": 1280,
        "index": "flat",
        "filters": False,
        "text_search": False,
        "image_search": True,
        "image_table": None,
        "left_out": [],
    }
    assert tables["captions"]["rows"] == 32 and tables["captions"]["dim"] == 384
    assert tables["captions"]["text_search"] and tables["captions"]["image_table"] == "images"


def test_text_search_over_captions_shows_their_images(client):
    body = client.get("/api/search/text", params={"q": "a striped cat", "table": "captions"}).json()
    assert body["table"] == "captions" and body["query"] == {"text": "a striped cat"}
    hits = body["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["image_id"] == "chelsea" and "cat" in hits[0]["caption"]
    assert hits[0]["thumbnail"] == "/api/thumbnail/images/chelsea.jpg"
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(hits))
    took = body["took_ms"]
    assert set(took) == {"encode", "search"} and all(type(v) is float for v in took.values())


def test_grouped_caption_hits_hold_each_image_once_at_its_best_caption(client):
    params = {"q": "a striped cat", "table": "captions"}
    every = client.get("/api/search/text", params={**params, "k": 32}).json()["results"]
    body = client.get("/api/search/text", params={**params, "k": 5, "group": "image"}).json()
    assert body["query"] == {"text": "a striped cat", "group": "image"}
    hits = body["results"]
    best: dict[str, dict] = {}
    for hit in every:  # best first: an image's first caption is its best
        best.setdefault(hit["image_id"], hit)
    assert [h["image_id"] for h in hits] == list(best)[:5]  # each once, by its best score
    assert [(h["id"], h["score"]) for h in hits] == [
        (best[h["image_id"]]["id"], best[h["image_id"]]["score"]) for h in hits
    ]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    for hit in hits:  # its captions among the hits searched, best first, the shown one first
        of_image = [h["caption"] for h in every if h["image_id"] == hit["image_id"]]
        assert (
            hit["captions"] == of_image[: len(hit["captions"])]
            and hit["captions"][0] == hit["caption"]
        )
    assert hits[0]["thumbnail"] == "/api/thumbnail/images/chelsea.jpg"
    eight = client.get("/api/search/text", params={**params, "k": 8, "group": "image"}).json()
    assert sorted(h["image_id"] for h in eight["results"]) == sorted(best)  # all 8 images
    images = client.get(
        "/api/similar", params={"table": "images", "id": "rocket.jpg", "group": "image"}
    ).json()
    assert "captions" not in images["results"][0]  # an image table: every hit is one image


def test_the_start_up_log_describes_tables_as_the_api_does(catalog, client, monkeypatch, caplog):
    """Before: each table was logged before caption tables were linked to their image table."""
    from dataclasses import replace

    from img_search.serve import catalog as catalogs

    unlinked = {name: replace(table, image_table=None) for name, table in catalog.tables.items()}
    monkeypatch.setattr(catalogs, "load_table", lambda name, *_: unlinked[name])
    caplog.set_level("INFO", logger="img_search.serve.catalog")
    catalogs.load_catalog({name: {"table": "t"} for name in unlinked}, image_wait=0)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
    described = client.get("/api/tables").json()["tables"]
    assert logged == [f"loaded {t['name']}: {t}" for t in described]
    assert "'image_table': 'images'" in logged[1]


def test_without_a_table_each_search_goes_to_the_first_table_that_can_answer_it(client):
    """Before: a text search without table= went to the first table, images, and got 400."""
    body = client.get("/api/search/text", params={"q": "a striped cat"}).json()
    assert body["table"] == "captions" and body["results"][0]["image_id"] == "chelsea"
    response = client.post(
        "/api/search/image", files={"file": ("crop.jpg", crop_of("coffee.jpg"), "image/jpeg")}
    )
    assert response.json()["table"] == "images"


def test_image_search_finds_the_photo_of_a_crop_first(client):
    response = client.post(
        "/api/search/image",
        files={"file": ("crop.jpg", crop_of("coffee.jpg"), "image/jpeg")},
        data={"table": "images", "k": "3"},
    )
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert len(hits) == 3 and hits[0]["id"] == "coffee.jpg"


def test_more_like_this_leaves_the_item_out(client):
    hits = client.get(
        "/api/similar", params={"table": "images", "id": "rocket.jpg", "k": 7}
    ).json()["results"]
    assert len(hits) == 7 and "rocket.jpg" not in {h["id"] for h in hits}
    captions = client.get("/api/similar", params={"table": "captions", "id": "coins#0"}).json()
    assert captions["results"][0]["image_id"] == "coins"  # another caption of the same photo


def test_thumbnail_is_a_small_jpeg_and_cached(client):
    first = client.get("/api/thumbnail/images/astronaut.jpg")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "JPEG" and max(image.size) == 256
    made = client.app.state.thumbnails.made
    again = client.get("/api/thumbnail/images/astronaut.jpg")
    assert again.content == first.content and client.app.state.thumbnails.made == made


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/api/thumbnail/images/../../../etc/passwd", 404, "Not Found"),  # normalised: no route
        ("/api/thumbnail/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404, "no item"),
        ("/api/thumbnail/images//etc/passwd", 404, "no item"),
        ("/api/thumbnail/nope/astronaut.jpg", 404, "unknown table 'nope'"),
        ("/api/thumbnail/captions/coins%230", 404, "no readable image source"),
        ("/api/similar?table=images&id=nope.jpg", 404, "no item 'nope.jpg'"),
        ("/api/similar?table=images", 422, "query parameter 'id': Field required"),
        (
            "/api/search/text?q=cat&table=nope",
            404,
            "unknown table 'nope'; loaded: images, captions",
        ),
        ("/api/search/text?q=cat&table=images", 400, "has no text model"),
        ("/api/search/text?q=%20&table=captions", 422, "empty"),
        ("/api/search/text?q=cat&table=captions&k=0", 422, "k must be between 1 and 200"),
        (
            "/api/search/text?q=cat&table=captions&k=abc",
            422,
            "query parameter 'k': Input should be",
        ),
        (f"/api/search/text?q={'x' * 1001}&table=captions", 422, "longer than 1000"),
        ("/api/search/text?table=captions", 422, "query parameter 'q': Field required"),
    ],
)
def test_bad_requests_get_json_errors(client, url, status, message):
    response = client.get(url)
    assert response.status_code == status, response.text
    assert "root:" not in response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    if message:
        assert message in body["error"]


def post_image(client, data: bytes, name: str = "q.jpg", table: str = "images"):
    return client.post(
        "/api/search/image", files={"file": (name, data, "image/jpeg")}, data={"table": table}
    )


def test_upload_limits_and_bad_images(client):
    too_big = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    response = post_image(client, jpeg(Image.fromarray(too_big), quality=100))  # > 400 kB
    assert response.status_code == 413 and "larger than 400000 bytes" in response.json()["error"]
    bomb = io.BytesIO()
    Image.new("L", (3000, 2000)).save(bomb, format="PNG")  # 6 MP in a few kB
    response = post_image(client, bomb.getvalue(), "bomb.png")
    assert (
        response.status_code == 413 and "more than the limit of 4000000" in response.json()["error"]
    )
    response = post_image(client, b"this is not an image", "fake.jpg")
    assert response.status_code == 422 and "not an image" in response.json()["error"]
    whole = jpeg(Image.fromarray(too_big[:256, :256]))
    response = post_image(client, whole[: len(whole) // 2], "truncated.jpg")
    assert response.status_code == 422 and "not a readable image" in response.json()["error"]
    response = post_image(client, b"", "empty.jpg")
    assert response.status_code == 422
    response = client.post("/api/search/image", data={"table": "images"})
    assert response.status_code == 422  # no file at all
    response = post_image(client, crop_of("coins.jpg"), table="captions")
    assert response.status_code == 400 and "has no image model" in response.json()["error"]


def test_page_needs_no_cdn_openapi_lists_the_routes_and_static_stays_in_its_folder(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>img_search</title>" in page.text
    assert "https://" not in page.text  # no CDN: works offline
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/search/text",
        "/api/search/image",
        "/api/similar",
        "/api/health",
        "/api/tables",
    } <= set(paths)
    assert client.get("/static/../../pyproject.toml").status_code == 404


def test_docs_work_offline(client):
    """Before: /docs loaded Swagger UI from a CDN, a blank page without the internet."""
    docs = client.get("/docs")
    assert docs.status_code == 200 and "http" not in docs.text
    assets = re.findall(r"""(?:src=|href=|url: )['"]([^'"]+)['"]""", docs.text)
    assert {"/openapi.json"} < set(assets) and any(
        a.endswith("swagger-ui-bundle.js") for a in assets
    )
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "SwaggerUIBundle" in client.get(next(a for a in assets if a.endswith(".js"))).text


def test_an_unexpected_failure_is_json_without_internals(catalog, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("/srv/secret/index.faiss is corrupt")

    monkeypatch.setattr(LoadedTable, "top_k", fail)
    with TestClient(create_app(catalog), raise_server_exceptions=False) as client:
        response = client.get("/api/similar", params={"table": "images", "id": "coffee.jpg"})
    assert response.status_code == 500 and "secret" not in response.text
    assert response.json() == {
        "error": "internal server error (RuntimeError); the server log has the details"
    }


def test_server_without_tables_or_with_a_missing_one_fails_with_one_line(tmp_path):
    from conftest import cli_runner

    serve = cli_runner("img_search.serve")
    result = serve("tables.images.table=null", "tables.captions.table=null", expect_ok=False)
    assert result.returncode == 2 and "no table to serve" in result.stderr
    missing = tmp_path / "none.parquet"
    result = serve(f"tables.images.table={missing}", "tables.captions.table=null", expect_ok=False)
    assert result.returncode == 2
    assert f"no saved index or embedding table at {missing}" in result.stderr


def test_bodies_over_the_limit_are_refused_while_they_stream(client):
    body = b"x" * 2_000_000
    response = client.post(
        "/api/search/image",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413 and "larger than 400000 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"--b\r\n" + b"y" * 50_000

    response = client.post(
        "/api/search/image",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413 and "larger than 400000 bytes" in response.json()["error"]


def test_ids_with_url_characters_get_working_thumbnail_links(tiny_checkpoints, tmp_path):
    """Before: an id holding a newline got a link that no route matched (404)."""
    from conftest import cli_runner

    from img_search.testing.fixtures import synthetic_image

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    names = ["photo #1.jpg", "what?.jpg", "sub/100%.jpg", "new\nline.jpg", "plain.jpg"]
    for i, name in enumerate(names):
        synthetic_image(i, (64, 48)).save(folder / name)
    table = tmp_path / "photos.parquet"
    cli_runner("img_search.pipeline.embed")(
        "models=clip",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={table}",
    )
    with TestClient(create_app(load_catalog({"photos": {"table": str(table)}}))) as client:
        hits = client.get("/api/similar", params={"id": "plain.jpg", "k": 9}).json()["results"]
        assert sorted(h["id"] for h in hits) == sorted(names[:-1])
        assert "/api/thumbnail/photos/new%0Aline.jpg" in {h["thumbnail"] for h in hits}
        for hit in hits:
            response = client.get(hit["thumbnail"])
            assert response.status_code == 200, (hit, response.text)
            expected = Image.open(folder / hit["id"]).convert("RGB")
            got = Image.open(io.BytesIO(response.content))
            assert got.size == expected.size  # the item's own image (smaller than 256 px)


def test_tables_of_one_model_share_its_encoder(demo_tables):
    catalog = load_catalog(
        {
            "a": {"table": str(demo_tables["captions"])},
            "b": {"table": str(demo_tables["captions"])},
            "photos": {"table": str(demo_tables["images"])},
        }
    )
    assert catalog.tables["a"].encoder is catalog.tables["b"].encoder
    assert catalog.tables["photos"].encoder is not catalog.tables["a"].encoder
    assert catalog.tables["a"].image_table == "photos"
