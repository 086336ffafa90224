"""What the server loads at start-up: tables checked before they are served, image sources for thumbnails.

Each test serves a copy of the demo image table changed the way a hostile or
damaged table would be: other vectors, ids or metadata, same everything else.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_PHOTOS, cli_runner
from fastapi.testclient import TestClient

from img_search.serve.app import create_app
from img_search.serve.catalog import LoadedTable, load_catalog
from img_search.serve.thumbnails import ItemImages
from img_search.store import schema as S
from img_search.store.writer import vectors_to_arrow
from img_search.testing.tables import expected_hits, table_with_left_out_rows


def rewritten(
    source: Path,
    target: Path,
    metadata: Callable[[dict], None] | None = None,
    rows: int | None = None,
    **columns: pa.Array,
) -> Path:
    """A copy of the table ``source`` with ``columns`` replaced, ``metadata`` edited, ``rows`` kept."""
    table = pq.read_table(source)
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    if rows is not None:
        table = table.slice(0, rows)
    if metadata is not None:
        meta = json.loads(table.schema.metadata[S.METADATA_KEY])
        metadata(meta)
        encoded = {**table.schema.metadata, S.METADATA_KEY: json.dumps(meta).encode()}
        table = table.replace_schema_metadata(encoded)
    pq.write_table(table, target)
    return target


def vectors_of(path: Path) -> np.ndarray:
    column = pq.read_table(path, columns=[S.EMBEDDING]).column(S.EMBEDDING).combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1).copy()


def serve(path: Path) -> TestClient:
    return TestClient(create_app(load_catalog({"images": {"table": str(path)}})))


def test_vectors_of_another_dimension_are_refused(demo_tables, tmp_path):
    """Before: a text/plain 500 with a faiss AssertionError on image queries, scores of 3.99 by id."""
    rows = pq.read_metadata(demo_tables["images"]).num_rows
    other = np.random.default_rng(0).standard_normal((rows, 512)).astype(np.float32)
    table = rewritten(
        demo_tables["images"], tmp_path / "t.parquet", embedding=vectors_to_arrow(other)
    )
    with pytest.raises(ValueError) as refused:
        load_catalog({"images": {"table": str(table)}})
    assert str(refused.value) == (
        "table images: its vectors have 512 dimensions, but model efficientnet_lite0 makes 1280: "
        "they were not made by this model; embed the table again"
    )


def test_a_table_without_rows_gets_a_clear_message(demo_tables, tmp_path):
    """Before: "holds several values of model_name ()"."""
    table = rewritten(demo_tables["images"], tmp_path / "empty.parquet", rows=0)
    with pytest.raises(ValueError, match=r"^table images: .*empty.parquet holds no rows"):
        load_catalog({"images": {"table": str(table)}})


def test_duplicate_ids_are_refused(demo_tables, tmp_path):
    ids = pq.read_table(demo_tables["images"], columns=[S.ID]).column(S.ID).to_pylist()
    ids[5] = ids[2]
    table = rewritten(demo_tables["images"], tmp_path / "t.parquet", id=pa.array(ids))
    with pytest.raises(
        ValueError, match=rf"^table images: some ids appear more than once .*'{ids[2]}'"
    ):
        load_catalog({"images": {"table": str(table)}})


@pytest.mark.parametrize("damage", ["nan", "null"])
def test_rows_with_nan_inf_or_null_vectors_are_listed_and_left_out(
    demo_tables, tmp_path, caplog, damage
):
    """Before: NaN rows vanished from results silently, Inf rows came back with "score": null,
    and a null row misaligned every later vector. The hits are numpy's over the other rows,
    as every index and exact search give them (tests/search/test_left_out_rows.py)."""
    table = tmp_path / "t.parquet"
    ids, vectors, bad = table_with_left_out_rows(demo_tables["images"], table, damage)
    query = ids[0]
    with caplog.at_level(logging.WARNING), serve(table) as client:
        warned = f"{len(bad)} rows with null or non-finite vectors are left out"
        assert f"table images: {warned}" in caplog.text
        described = client.get("/api/tables").json()["tables"][0]
        assert described["left_out"] == sorted(bad) and described["rows"] == len(ids) - len(bad)
        hits = client.get("/api/similar", params={"id": query, "k": 10}).json()["results"]
        assert [h["id"] for h in hits] == expected_hits(ids, vectors, bad, 0, 10)
        assert all(np.isfinite(h["score"]) for h in hits)
        for item, reason in bad.items():
            response = client.get("/api/similar", params={"id": item})
            assert response.status_code == 422
            assert response.json() == {
                "error": f"item {item!r} of table images is left out: {reason}"
            }


def test_a_table_of_nothing_but_nan_is_refused(demo_tables, tmp_path):
    vectors = np.full_like(vectors_of(demo_tables["images"]), np.nan)
    table = rewritten(
        demo_tables["images"], tmp_path / "t.parquet", embedding=vectors_to_arrow(vectors)
    )
    with pytest.raises(
        ValueError, match=r"^table images: .* none of its 8 vectors can be searched"
    ):
        load_catalog({"images": {"table": str(table)}})


def moved_to(folder: Path) -> Callable[[dict], None]:
    """Metadata edit: the image folder the table was embedded from is now ``folder``."""

    def edit(meta: dict) -> None:
        meta["datasets"]["image_folder"]["path"] = str(folder)
        meta["config"]["datasets"]["image_folder"]["path"] = str(folder)

    return edit


@pytest.mark.parametrize("source", ["moved", "loop"])
def test_thumbnails_of_a_source_that_cannot_be_built_get_503_once_built(
    demo_tables, tmp_path, source
):
    """Before: the build ran again under a lock on every thumbnail request, failing each time."""
    folder = tmp_path / source
    if source == "loop":
        folder.symlink_to(folder)
    table = rewritten(demo_tables["images"], tmp_path / "t.parquet", metadata=moved_to(folder))
    with serve(table) as client:
        response = client.get("/api/thumbnail/images/coffee.jpg")
        assert response.status_code == 503
        assert response.json() == {
            "error": "the images of table images cannot be read on this server (its log says "
            "why); thumbnails of this table are off until the server restarts"
        }
        folder.unlink() if source == "loop" else None
        shutil.copytree(SAMPLE_PHOTOS, folder)  # back in place: not looked at again
        assert client.get("/api/thumbnail/images/coffee.jpg").status_code == 503
        assert client.app.state.thumbnails.made == 0
        assert client.get("/api/similar", params={"id": "coffee.jpg"}).status_code == 200


class GatedFolder:
    """A dataset whose build waits for ``gate``: a Hub download still in progress."""

    def __init__(self, dataset, gate: threading.Event) -> None:
        self.dataset, self.gate, self.name = dataset, gate, dataset.name

    def build(self) -> None:
        self.gate.wait(60)
        self.dataset.build()

    def item_ids(self):
        return self.dataset.item_ids()

    def get(self, position: int):
        return self.dataset.get(position)

    def image_bytes(self, position: int):
        return self.dataset.image_bytes(position)


def test_requests_never_wait_for_an_image_source_still_building(demo_tables):
    catalog = load_catalog({"images": {"table": str(demo_tables["images"])}})
    table: LoadedTable = catalog.tables["images"]
    gate = threading.Event()
    table.images = ItemImages("images", GatedFolder(table.images.dataset, gate))
    table.images.start()
    with TestClient(create_app(catalog)) as client:
        response = client.get("/api/thumbnail/images/coffee.jpg")
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert "the images of table images are still being prepared" in response.json()["error"]
        gate.set()
        assert table.images.ready.wait(60)
        assert client.get("/api/thumbnail/images/coffee.jpg").status_code == 200


def test_an_unreadable_image_is_422_without_the_server_path(demo_tables, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE_PHOTOS, folder)
    table = rewritten(demo_tables["images"], tmp_path / "t.parquet", metadata=moved_to(folder))
    with serve(table) as client:
        (folder / "coins.jpg").write_bytes(b"not a jpeg")
        (folder / "coffee.jpg").unlink()
        for item in ("coins.jpg", "coffee.jpg"):
            response = client.get(f"/api/thumbnail/images/{item}")
            assert response.status_code == 422, response.text
            assert f"the image of item {item!r} cannot be read: " in response.json()["error"]
            assert str(tmp_path) not in response.text and item in response.json()["error"]


def test_trust_remote_code_comes_from_the_serve_config_only(demo_tables, tmp_path, monkeypatch):
    """Issue 15.1: a table naming jina_v4 at a folder with code is refused, even with the user's
    trust_remote_code=true, which covers only the configured checkpoint."""
    folder, marker = tmp_path / "evil", tmp_path / "code-ran"  # a checkpoint whose config runs code
    folder.mkdir()
    (folder / "config.json").write_text('{"auto_map": {"AutoModel": "evil_code.EvilModel"}}')
    (folder / "evil_code.py").write_text(f"open({str(marker)!r}, 'w')\n")

    def jina(meta: dict) -> None:
        meta["job"]["models"]["efficientnet_lite0"] = {
            "model": "jina_v4",
            "model_name": str(folder),
        }
        meta["models"]["efficientnet_lite0"].update(encoder="jina_v4", checkpoint=str(folder))

    table = rewritten(demo_tables["images"], tmp_path / "t.parquet", metadata=jina)
    result = cli_runner("img_search.serve")(
        f"tables.images.table={table}", "tables.captions.table=null", expect_ok=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (
        "add trust_remote_code=true to the command line (or to the serve config)" in result.stderr
    )
    assert not marker.exists()

    # the consent covers the checkpoint the user configured, not one a table names
    import transformers

    def from_pretrained(name: str, **kwargs):
        raise AssertionError(f"loaded {name}")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", from_pretrained)
    with pytest.raises(
        ValueError, match="trust_remote_code=true covers only jinaai/jina-embeddings-v4"
    ):
        load_catalog({"images": {"table": str(table)}}, trust_remote_code=True)
    assert not marker.exists()
