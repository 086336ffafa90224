"""indexes=[milvus]: a real Milvus Lite in a temporary folder, built from tables written directly.

The tables are caption tables of a tiny (32-d) model written in the store's
format without running a model: clustered unit vectors, a few ids and
captions with quotes, backslashes and newlines. Command-line runs start a
fresh interpreter (``IMG_SEARCH_TEST_FRESH``): the client talks gRPC, which a
forked child of a process that used it must not.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import OFFLINE, REPO, cli_runner

from img_search.eval.ann import ann_benchmark, random_unit_vectors, recall_against
from img_search.search.indexes import FilterError, build_all, index_dir, load_index
from img_search.search.milvus.connection import MilvusError
from img_search.search.milvus.filters import Filter, parse_filter
from img_search.store import schema as S
from img_search.store.writer import table_schema, vectors_to_arrow, with_metadata

pytest.importorskip("pymilvus", reason="img_search[milvus] is not installed")

DIM, K = 32, 10
FIELDS = ["id", "model_name", "dataset_name", "caption", "image_id"]
AWKWARD_IDS = ['it\'s "quoted".jpg', "back\\slash.jpg", "new\nline.jpg", "tab\there.jpg", "ünï.jpg"]
FRESH = {"IMG_SEARCH_TEST_FRESH": "1"}


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    return random_unit_vectors(count, DIM, seed=seed, clusters=40, spread=0.8)


def caption_ids(count: int) -> list[str]:
    return [f"cap{i:05d}" for i in range(count - len(AWKWARD_IDS))] + AWKWARD_IDS


def write_captions(
    path: Path, ids: list[str], vectors: np.ndarray, fingerprint: str = "tiny-a"
) -> Path:
    """A caption table of model ``tiny`` (its identity: ``fingerprint``) and dataset ``caps``."""
    n, dim = vectors.shape
    extra = [pa.field(c, pa.string()) for c in ("image", "image_id", "caption")]
    metadata = {"kind": "caption", "models": {"tiny": {"fingerprint": fingerprint, "dim": dim}}}
    schema = with_metadata(table_schema(dim, "float32", extra), metadata)
    image_ids = [f"img{i // 4}" for i in range(n)]
    columns = {
        S.ID: ids,
        "image": [f"{i}.jpg" for i in image_ids],
        "image_id": image_ids,
        "caption": [f'caption {i} of "{item}" \\ {i % 7}' for i, item in enumerate(ids)],
        S.MODEL: ["tiny"] * n,
        S.DATASET: ["caps"] * n,
        S.EMBEDDING: vectors_to_arrow(vectors),
    }
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def run_build(*args: str, env: dict[str, str] | None = None, expect_ok: bool = True):
    return cli_runner("img_search.search.build")(
        *args, env={**FRESH, **(env or {})}, timeout=180, expect_ok=expect_ok
    )


def held_ids(table: Path, name: str = "milvus") -> tuple[list[str], int]:
    """Every id the collection holds (one query) and its own count, the index closed again."""
    saved = load_index(index_dir(table, "tiny", "caps", name))
    try:
        client, collection = saved.index.client, saved.index.collection
        rows = client.query(collection, filter="", output_fields=["id"], limit=16384)
        return [row["id"] for row in rows], saved.index.count
    finally:
        saved.close()


# -- 2,000 rows: exact for FLAT, recall for the graph kinds, fields round-trip -----------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    vectors = unit_vectors(2050)
    table = write_captions(
        tmp_path_factory.mktemp("milvus") / "caps.parquet", caption_ids(2000), vectors[:2000]
    )
    specs = {
        "milvus_flat": {"kind": "milvus", "index_type": "FLAT"},
        "milvus_hnsw": {"kind": "milvus", "index_type": "HNSW", "index_params": {"M": 16}},
        "milvus": {"kind": "milvus"},  # AUTOINDEX
    }
    saved = {s.meta["name"]: s for s in build_all(str(table), specs)}
    yield table, vectors[:2000], vectors[2000:], saved
    for index in saved.values():
        index.close()


def test_flat_equals_exact_search_and_the_graph_kinds_reach_the_recall_goal(built):
    _, vectors, queries, saved = built
    ids = np.array(caption_ids(2000), dtype=object)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    scores, positions = saved["milvus_flat"].search(queries, K)
    assert (positions == exact).all()
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, exact, 1), atol=1e-5)
    for name in ("milvus_hnsw", "milvus"):
        _, found = saved[name].search(queries, K)
        assert recall_against(found, exact) >= 0.95, name
    # the ids come back as the table has them, awkward ones included
    hits = saved["milvus"].top_k(vectors[-2], 3)
    assert hits[0][:2] == (1998, ids[1998]) and ids[1998] == "tab\there.jpg"
    assert saved["milvus"].top_k(vectors[-2], 3, exclude=ids[1998])[0][1] != ids[1998]


def test_ids_captions_and_vectors_round_trip(built):
    table, vectors, _, saved = built
    milvus = saved["milvus"]
    assert milvus.meta["kind"] == "milvus" and milvus.meta["count"] == 2000
    assert milvus.index.collection == "caps_tiny_caps" and milvus.index.fields == FIELDS
    assert (table.parent / "caps.milvus.db").is_dir()  # Milvus Lite, next to the table
    rows = milvus.index.client.query(
        milvus.index.collection, filter="", output_fields=FIELDS, limit=16384
    )
    stored = {row["id"]: {f: row[f] for f in FIELDS} for row in rows}
    expected = pq.read_table(table, columns=FIELDS).to_pylist()
    assert len(rows) == 2000 and stored == {row["id"]: row for row in expected}
    for position in (0, 1995, 1997):  # 'it\'s "quoted".jpg', "new\nline.jpg"
        np.testing.assert_allclose(milvus.vector(position), vectors[position], atol=1e-7)
    described = milvus.index.client.describe_collection(milvus.index.collection)["properties"]
    assert json.loads(described["img_search.identity"])["fingerprint"] == "tiny-a"


def test_filters_choose_rows(built):
    table, vectors, queries, saved = built
    milvus = saved["milvus_flat"]
    image_ids = pq.read_table(table, columns=["image_id"]).column("image_id").to_numpy()
    where = milvus.parse_filter('image_id in ["img3", "img7"] or id == "back\\\\slash.jpg"')
    hits = milvus.top_k(queries[0], 20, where=where)
    chosen = {p for p in range(2000) if image_ids[p] in ("img3", "img7")} | {1996}
    assert {p for p, _, _ in hits} == chosen  # 9 rows, all of them, best first
    expected = sorted(chosen, key=lambda p: -float(queries[0] @ vectors[p]))
    assert [p for p, _, _ in hits] == expected
    nothing = milvus.parse_filter('dataset_name == "inquire"')
    assert milvus.top_k(queries[0], 5, where=nothing) == []
    everything = milvus.parse_filter("dataset_name == 'caps' and not caption like \"zzz%\"")
    assert len(milvus.top_k(queries[0], 5, where=everything)) == 5


def test_a_table_of_another_model_replaces_the_collection(tmp_path):
    table = write_captions(tmp_path / "t.parquet", caption_ids(300), unit_vectors(300))
    first = build_all(str(table), {"milvus": {"kind": "milvus"}})[0]
    first.close()
    other = random_unit_vectors(200, 16, seed=5)
    write_captions(table, caption_ids(200), other, fingerprint="tiny-b")
    again = build_all(str(table), {"milvus": {"kind": "milvus"}})[0]
    try:
        assert again.index.count == 200 and again.meta["dim"] == 16
        _, positions = again.search(other[:5], 1)
        assert list(positions[:, 0]) == [0, 1, 2, 3, 4]
        properties = again.index.client.describe_collection("t_tiny_caps")["properties"]
        assert json.loads(properties["img_search.identity"])["fingerprint"] == "tiny-b"
    finally:
        again.close()


def test_a_collection_img_search_did_not_make_is_left_alone(tmp_path):
    from img_search.search.milvus.connection import connect, disconnect

    table = write_captions(tmp_path / "t.parquet", caption_ids(30), unit_vectors(30))
    lite = str(tmp_path / "t.milvus.db")
    client = connect(lite, None, 10)
    client.create_collection("t_tiny_caps", dimension=DIM, id_type="string", max_length=64)
    disconnect(client, lite)
    with pytest.raises(MilvusError, match="has a collection t_tiny_caps that img_search did not"):
        build_all(str(table), {"milvus": {"kind": "milvus"}})
    client = connect(lite, None, 10)
    assert client.has_collection("t_tiny_caps")
    disconnect(client, lite)


def test_ann_benchmark_measures_milvus_with_exact_recall_for_flat():
    vectors = unit_vectors(1100, seed=3)
    specs = {"flat": {"kind": "flat"}, "milvus": {"kind": "milvus", "index_type": "FLAT"}}
    results = ann_benchmark(vectors[100:], vectors[:100], specs, k=5, single_seconds=0.05)
    assert [r.name for r in results] == ["exact", "milvus"]
    milvus = results[1]
    assert milvus.kind == "milvus" and milvus.recall == 1.0 and milvus.rows == 1000
    assert "index_type=FLAT" in milvus.params and milvus.memory_mib == 1000 * DIM * 4 / 2**20
    timings = (milvus.build_s, milvus.batch_qps, milvus.single_qps)
    assert all(isinstance(t, float) and math.isfinite(t) for t in timings)


# -- filters are parsed against the fields, never pasted ---------------------------------------


def test_filters_become_templates_with_parameters():
    where = parse_filter(
        'dataset_name == "inquire" and (image_id in ["a", \'b"c\'] or not caption like "x%")',
        FIELDS,
    )
    assert where == Filter(
        "(dataset_name == {p0} and (image_id in {p1} or not (caption like {p2})))",
        {"p0": "inquire", "p1": ["a", 'b"c'], "p2": "x%"},
    )
    assert where.inline() == (
        '(dataset_name == "inquire" and (image_id in ["a", "b\\"c"] or not (caption like "x%")))'
    )
    assert parse_filter("id not in ['a'] && id != \"b\\n\"", FIELDS).inline() == (
        '(not (id in ["a"]) and id != "b\\n")'
    )
    assert parse_filter("  ", FIELDS) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('vector == "a"', "unknown field 'vector'; this index has id, model_name"),
        ("dataset_name == 3", "expected a quoted string, got '3'"),
        ('dataset_name == "inquire" or 1 == 1', "expected a field name, got '1'"),
        ('id == "a") or (id == "b"', "unexpected ')'"),
        ('id == "a"; drop', "cannot read ';"),
        ('id == "unterminated', "cannot read"),
        ('caption like "\\d"', "unknown escape \\d"),
        ('id in ["a" "b"]', "expected ']'"),
        ("id == {p0}", "cannot read '{p0}"),
        ("id", "expected one of == != < <= > >=, in or like after 'id'"),
    ],
)
def test_malformed_filters_are_refused_with_the_reason(text, message):
    with pytest.raises(FilterError, match=r"^filter ") as refused:
        parse_filter(text, FIELDS)
    assert message in str(refused.value)


# -- the command line ----------------------------------------------------------------------------


def test_building_again_upserts_only_the_new_ids(tmp_path):
    vectors, ids = unit_vectors(1500, seed=1), caption_ids(1500)
    table = tmp_path / "grow.parquet"
    write_captions(table, ids[:1000], vectors[:1000])
    first = run_build(f"table={table}", "indexes=[milvus]")
    assert "upserted 1000 rows" in first.stderr
    write_captions(table, ids, vectors)  # 500 more items embedded into the same table
    second = run_build(f"table={table}", "indexes=[milvus]")
    assert "upserted 500 rows" in second.stderr
    held, count = held_ids(table)
    assert count == 1500 and sorted(held) == sorted(ids)  # each id once
    third = run_build(f"table={table}", "indexes=[milvus]")
    assert "upserted" not in third.stderr and held_ids(table)[1] == 1500


def test_a_load_killed_midway_then_rerun_holds_each_id_once(tmp_path):
    ids = caption_ids(1000)
    table = write_captions(tmp_path / "t.parquet", ids, unit_vectors(1000, seed=2))
    args = (f"table={table}", "indexes=[milvus]", "indexes.milvus.batch_size=200")
    killed = run_build(*args, env={"IMG_SEARCH_FAULT": "milvus_batch:2"}, expect_ok=False)
    assert killed.returncode == -9, killed.stderr
    rerun = run_build(*args)
    loaded = int(rerun.stderr.split("upserted ")[1].split()[0])
    assert 600 <= loaded <= 1000  # at most the 400 rows of the two finished batches were kept
    held, count = held_ids(table)
    assert count == 1000 and sorted(held) == sorted(ids)


def test_the_query_cli_answers_from_milvus_with_a_filter(tmp_path):
    vectors, ids = unit_vectors(400, seed=4), caption_ids(400)
    table = write_captions(tmp_path / "q.parquet", ids, vectors)
    run_build(f"table={table}", "indexes=[milvus]", "indexes.milvus.index_type=FLAT")
    folder = index_dir(table, "tiny", "caps", "milvus")
    query = cli_runner("img_search.search.query")
    base = (f"index={folder}", "id=cap00010", "k=5", "json=true", "device=cpu")  # no torch
    hits = json.loads(query(*base, env=FRESH, timeout=180).stdout)["hits"]
    exact = [ids[p] for p in np.argsort(-(vectors @ vectors[10]))[1:6]]
    assert [h["id"] for h in hits] == exact
    assert all(h["caption"].startswith("caption ") for h in hits)  # read back from the table
    chosen = 'filter=\'image_id in ["img7", "img9"]\''
    hits = json.loads(query(*base, chosen, env=FRESH, timeout=180).stdout)["hits"]
    assert len(hits) == 5 and {h["image_id"] for h in hits} <= {"img7", "img9"}
    bad = query(*base, "filter='image == \"x\"'", env=FRESH, timeout=180, expect_ok=False)
    assert bad.returncode == 2 and "unknown field 'image'" in bad.stderr


def test_an_unreachable_server_fails_with_one_line_naming_it(tmp_path):
    table = write_captions(tmp_path / "t.parquet", caption_ids(20), unit_vectors(20))
    result = run_build(
        f"table={table}", "indexes=[milvus]", "indexes.milvus.uri=http://127.0.0.1:9",
        expect_ok=False,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "cannot reach Milvus within 10 s at http://127.0.0.1:9" in lines[0]


def test_without_pymilvus_one_line_says_how_to_install_it(tmp_path):
    table = write_captions(tmp_path / "t.parquet", caption_ids(20), unit_vectors(20))
    hidden = (  # the module as if it were not installed
        "import runpy, sys; sys.modules['pymilvus'] = None; "
        "runpy.run_module('img_search.search.build', run_name='__main__', alter_sys=True)"
    )
    result = subprocess.run(
        [sys.executable, "-c", hidden, f"table={table}", "indexes=[milvus]"],
        cwd=REPO,
        env={**os.environ, **OFFLINE},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "index kind milvus needs pymilvus: pip install 'img_search[milvus]'" in lines[0]


def test_a_lite_uri_must_end_in_db(tmp_path):
    with pytest.raises(MilvusError, match=r"neither a server .* nor a Milvus Lite file"):
        from img_search.search.indexes import make_index

        make_index("milvus", 8, uri=str(tmp_path / "vectors.sqlite"))
