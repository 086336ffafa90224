"""The server with ``tables.<name>.index=milvus``: the same answers as exact search, and filters.

Copies of the demo tables get their Milvus Lite file next to them on first
load (as ``python -m img_search.serve tables.images.index=milvus`` does);
both catalogs share the loaded models.
"""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient
from test_api import crop_of

from img_search.serve.app import ServeSettings, create_app
from img_search.serve.catalog import Catalog, load_table

pytest.importorskip("pymilvus", reason="img_search[milvus] is not installed")


@pytest.fixture(scope="module")
def clients(demo_tables, tmp_path_factory):
    """(milvus, flat): one server over each index kind, of the same copies of the demo tables."""
    folder = tmp_path_factory.mktemp("milvus-serve")
    tables = {name: folder / path.name for name, path in demo_tables.items()}
    for name, path in demo_tables.items():
        shutil.copy(path, tables[name])
    encoders: dict = {}
    catalogs = [
        Catalog(
            {
                name: load_table(name, {"table": str(path), "index": kind}, encoders=encoders)
                for name, path in tables.items()
            }
        )
        for kind in ("milvus", "flat")
    ]
    settings = ServeSettings(default_k=5)
    with (
        TestClient(create_app(catalogs[0], settings)) as milvus,
        TestClient(create_app(catalogs[1], settings)) as flat,
    ):
        yield milvus, flat
    for catalog in catalogs:
        catalog.close()
    assert (folder / "captions.milvus.db").is_dir() and (folder / "images.milvus.db").is_dir()


def top(response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(hit["id"], round(hit["score"], 4)) for hit in response.json()["results"]]


def test_text_image_and_similar_answer_like_exact_search(clients):
    milvus, flat = clients
    described = {
        t["name"]: (t["index"], t["filters"]) for t in milvus.get("/api/tables").json()["tables"]
    }
    assert described == {"images": ("milvus", True), "captions": ("milvus", True)}
    text = {"q": "a striped cat", "table": "captions", "k": 8}
    assert top(milvus.get("/api/search/text", params=text)) == top(
        flat.get("/api/search/text", params=text)
    )
    files = {"file": ("crop.jpg", crop_of("coffee.jpg"), "image/jpeg")}
    found = top(milvus.post("/api/search/image", files=files, data={"table": "images"}))
    assert found == top(flat.post("/api/search/image", files=files, data={"table": "images"}))
    assert found[0][0] == "coffee.jpg"
    for params in (
        {"table": "images", "id": "rocket.jpg", "k": 7},
        {"table": "captions", "id": "coins#0"},
    ):
        same = top(milvus.get("/api/similar", params=params))
        assert same == top(flat.get("/api/similar", params=params))
        assert len(same) == params.get("k", 5) and params["id"] not in dict(same)


def test_the_filter_parameter_chooses_items(clients):
    milvus, flat = clients
    params = {"q": "a striped cat", "table": "captions", "k": 10}
    chosen = 'image_id in ["coffee", "rocket"]'
    body = milvus.get("/api/search/text", params={**params, "filter": chosen}).json()
    assert body["query"] == {"text": "a striped cat", "filter": chosen}
    everything = flat.get("/api/search/text", params={**params, "k": 32}).json()["results"]
    expected = [h["id"] for h in everything if h["image_id"] in ("coffee", "rocket")]
    assert [h["id"] for h in body["results"]] == expected and len(expected) == 8
    none = milvus.get("/api/search/text", params={**params, "filter": 'dataset_name == "other"'})
    assert none.status_code == 200 and none.json()["results"] == []
    files = {"file": ("crop.jpg", crop_of("coffee.jpg"), "image/jpeg")}
    image = milvus.post(
        "/api/search/image",
        files=files,
        data={"table": "images", "filter": 'not id in ["coffee.jpg"]'},
    )
    assert "coffee.jpg" not in {h["id"] for h in image.json()["results"]}
    similar = milvus.get(
        "/api/similar", params={"table": "images", "id": "rocket.jpg", "filter": 'id like "c%"'}
    ).json()["results"]
    assert {h["id"] for h in similar} == {"camera.jpg", "chelsea.jpg", "coffee.jpg", "coins.jpg"}


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ('image_id = "coffee"', 'cannot read \'= "coffee"'),
        ("image_id == coffee", "expected a quoted string, got 'coffee'"),
        ('path == "/etc/passwd"', "unknown field 'path'"),
        ('image_id == "a" or true', "unknown field 'true'"),
    ],
)
def test_a_malformed_filter_gets_422(clients, filter_, message):
    milvus, _ = clients
    response = milvus.get(
        "/api/search/text", params={"q": "cat", "table": "captions", "filter": filter_}
    )
    assert response.status_code == 422
    body = response.json()
    assert list(body) == ["error"] and message in body["error"]


def test_a_flat_index_says_it_cannot_filter(clients):
    _, flat = clients
    response = flat.get("/api/similar", params={"id": "rocket.jpg", "filter": 'id == "a"'})
    assert response.status_code == 422
    assert response.json()["error"] == (
        "table images is served from a flat index, which cannot filter: serve it from a milvus "
        "index (tables.images.index=milvus)"
    )
