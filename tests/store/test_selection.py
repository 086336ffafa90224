"""The one reader of a (model, dataset) selection (``store.selection``), on real tables of both forms:
the rows without a usable vector left out of every column, one item's vector, the captions of given
ids aligned with them, caption and image tables, the rows as stored and their counts; and
``read_embeddings`` (public, exported from ``img_search.store``) with either filter or none.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from table_fixtures import (
    Group,
    _no_fault_injection,
    ids_for,
    make_file,
    make_folder,
    mixed_dims,
    two_groups,
    unit_rows,
)

from img_search.store import PartWriter, TableLayout, read_embeddings, read_metadata
from img_search.store import schema as S
from img_search.store import selection as selection_module
from img_search.store.layout import COMMON_METADATA
from img_search.store.reader import table_files
from img_search.store.selection import (
    UnknownItem,
    captions_of,
    load_selection,
    pair_rows,
    row_count,
    selection_rows,
    table_contents,
    vector_of,
)
from img_search.store.vectors import NOT_FINITE, NULL, NoUsableRows
from img_search.store.writer import assemble_file, publish_folder, table_schema, with_metadata

__all__ = ["_no_fault_injection", "mixed_dims", "two_groups"]  # fixtures of table_fixtures

CAPTION_IDS = [f"c{i}" for i in range(8)]
OTHER_IDS = ["o0", "o1", "o2"]
CAPTION_VECTORS = unit_rows(8, 6, 5)
CAPTION_VECTORS[2, 1] = np.nan  # c2: not finite
OTHER_VECTORS = unit_rows(3, 6, 6)
#: c2's vector holds a NaN, c5's is null: both are left out of search
KEPT = [item for item in CAPTION_IDS if item not in ("c2", "c5")]


def caption_of(item: str) -> dict[str, object]:
    """Two captions per photo: ``c0`` and ``c1`` describe ``c/0.jpg`` (image id ``c0``)."""
    number = int(item[1:])
    return {
        "index": number,
        "image": f"{item[0]}/{number // 2}.jpg",
        "image_id": f"{item[0]}{number // 2}",
        "caption": f"caption of {item}",
    }


def null_vector(path: Path, item: str) -> None:
    """Make one row's vector null in the file that holds it, as another tool could write it."""
    for file in table_files(path):
        table = pq.read_table(file)
        ids = table.column(S.ID).to_pylist()
        if item in ids:
            at = table.schema.get_field_index(S.EMBEDDING)
            vectors = table.column(at).to_pylist()
            vectors[ids.index(item)] = None
            column = pa.array(vectors, table.schema.field(at).type)
            pq.write_table(table.set_column(at, table.schema.field(at), column), file)


def caption_table(path: Path) -> Path:
    """clip × captions (``CAPTION_IDS``, c5's vector made null), then clip × other (``OTHER_IDS``),
    with the caption columns, as a file or (no ``.parquet``) a folder table."""
    layout = TableLayout.of(path)
    layout.parts_dir.mkdir(parents=True)
    parts = []
    for number, (dataset, ids, vectors) in enumerate(
        [("captions", CAPTION_IDS, CAPTION_VECTORS), ("other", OTHER_IDS, OTHER_VECTORS)]
    ):
        file = layout.parts_dir / f"part-{number:05d}.parquet"
        part = PartWriter(
            file, "clip", dataset, extra_fields=S.CAPTION_FIELDS, fixed_size=not layout.is_folder
        )
        rows = [caption_of(item) for item in ids]
        part.write(ids, vectors, {f.name: [r[f.name] for r in rows] for f in S.CAPTION_FIELDS})
        part.close()
        parts.append(file)
    if layout.is_folder:
        schema = table_schema(None, "float32", S.CAPTION_FIELDS)
        metadata = {"kind": "caption", "parts": [p.name for p in parts]}
        publish_folder(layout, with_metadata(schema, metadata), parts)
    else:
        schema = with_metadata(table_schema(6, "float32", S.CAPTION_FIELDS), {"kind": "caption"})
        assemble_file(path, schema, parts)
    null_vector(path, "c5")
    return path


@pytest.fixture(params=["file", "folder"])
def captions(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return caption_table(tmp_path / ("emb.parquet" if request.param == "file" else "emb"))


# -- the selection and its left-out rows ----------------------------------------------------


def test_load_selection_leaves_rows_without_a_usable_vector_out_of_every_column(
    captions: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        selection = load_selection(captions, "clip", "captions")
    assert "2 rows with null or non-finite vectors are left out" in caplog.text
    assert "1 null, 1 not finite: 'c5', 'c2'" in caplog.text
    assert selection.kind == "caption" and selection.ids.tolist() == KEPT
    rows = [CAPTION_IDS.index(item) for item in KEPT]
    np.testing.assert_array_equal(selection.vectors, CAPTION_VECTORS[rows])
    flags = selection.vectors.flags
    assert selection.vectors.dtype == np.float32 and flags.c_contiguous and flags.writeable
    assert list(selection.extra) == ["caption", "image_id", "image"]
    for column, values in selection.extra.items():
        assert values.tolist() == [caption_of(item)[column] for item in KEPT], column
    assert selection.left_out.reasons() == {"c5": NULL, "c2": NOT_FINITE}


def test_read_embeddings_gives_the_rows_of_load_selection(captions: Path) -> None:
    matrix = read_embeddings(captions, "clip", "captions", memory_map=False)
    selection = load_selection(captions, "clip", "captions")
    assert matrix.ids.tolist() == KEPT and matrix.left_out.reasons() == {
        "c5": NULL,
        "c2": NOT_FINITE,
    }
    np.testing.assert_array_equal(matrix.vectors, selection.vectors)
    everything = read_embeddings(captions)  # no filter: both selections, in table order
    assert everything.ids.tolist() == KEPT + OTHER_IDS
    np.testing.assert_array_equal(everything.vectors[len(KEPT) :], OTHER_VECTORS)


def test_vector_of_gives_the_stored_vector_and_refuses_left_out_and_unknown_ids(
    captions: Path,
) -> None:
    np.testing.assert_array_equal(vector_of(captions, "clip", "captions", "c3"), CAPTION_VECTORS[3])
    with pytest.raises(ValueError, match=r"item 'c5' .* is left out of search: its vector is null"):
        vector_of(captions, "clip", "captions", "c5")
    with pytest.raises(
        ValueError, match=r"item 'c2' .* left out of search: its vector is not finite"
    ):
        vector_of(captions, "clip", "captions", "c2")
    with pytest.raises(UnknownItem, match="no item with id 'o0' for clip × captions"):
        vector_of(captions, "clip", "captions", "o0")  # another selection's item


def test_a_selection_without_rows_or_without_usable_vectors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "emb.parquet"
    broken = np.full((4, 8), np.nan, np.float32)
    make_file(
        path,
        [
            ("clip", "inquire", ids_for("inq", 4), broken),
            ("siglip", "flickr30k", ["f"], unit_rows(1, 8, 0)),
        ],
    )
    with pytest.raises(NoUsableRows, match="none of its 4 vectors can be searched"):
        load_selection(path, "clip", "inquire")
    with pytest.raises(ValueError, match="holds no rows for model 'clip' and dataset 'flickr30k'"):
        load_selection(path, "clip", "flickr30k")
    nothing = read_embeddings(path, "clip", "inquire")  # read_embeddings does not refuse
    assert len(nothing) == 0 and len(nothing.left_out) == 4 and nothing.vectors.shape == (0, 8)


# -- captions by id -------------------------------------------------------------------------


@pytest.mark.parametrize("read", ["filtered", "whole"])
def test_captions_of_are_aligned_with_the_ids_given(
    captions: Path, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    """Few ids are filtered in the scan, many picked from the whole selection: the same answer. An
    id of another selection, or of none, has None; a left-out row keeps its caption."""
    if read == "whole":
        monkeypatch.setattr(selection_module, "FILTERED_IDS", 0)
    ids = ["c7", "o1", "c0", "nope", "c5"]
    found = captions_of(captions, "clip", "captions", ids)
    assert list(found) == ["caption", "image_id", "image"]
    for column, values in found.items():
        assert values.dtype == object
        expected = [
            caption_of(i)[column] if i.startswith("c") else None for i in ids
        ]  # o1: other's
        assert values.tolist() == expected, column
    assert [len(v) for v in captions_of(captions, "clip", "captions", []).values()] == [0, 0, 0]


def test_captions_of_without_ids_are_every_row_in_table_order(captions: Path) -> None:
    found = captions_of(captions, "clip", "other")
    assert list(found) == ["id", "caption", "image_id", "image"]
    assert found["id"].tolist() == OTHER_IDS
    assert found["caption"].tolist() == [f"caption of {item}" for item in OTHER_IDS]


def test_image_tables_have_no_captions(tmp_path: Path, two_groups: list[Group]) -> None:
    path = make_folder(tmp_path / "emb", two_groups).path
    assert captions_of(path, "clip", "inquire", ids_for("inq", 2)) == {}
    assert captions_of(path, "clip", "inquire") == {}
    selection = load_selection(path, "clip", "inquire")
    assert selection.kind == "image" and selection.extra == {}
    assert selection.ids.tolist() == two_groups[0][2]


# -- rows as stored, and counts -------------------------------------------------------------


def test_selection_rows_and_counts_keep_the_left_out_rows(captions: Path) -> None:
    rows = selection_rows(captions, "clip", "captions")
    assert rows.column_names == [
        "id",
        "index",
        "image",
        "image_id",
        "caption",
        "model_name",
        "dataset_name",
        "embedding",
    ]
    assert rows.column("id").to_pylist() == CAPTION_IDS
    assert rows.column("embedding").null_count == 1  # c5, as stored
    assert selection_rows(captions, None, None).num_rows == 11
    assert (row_count(captions), row_count(captions, "clip", "captions")) == (11, 8)
    assert row_count(captions, "clip", "other") == 3
    assert pair_rows(captions) == {("clip", "captions"): 8, ("clip", "other"): 3}
    assert table_contents(captions) == {"models": ["clip"], "datasets": ["captions", "other"]}


# -- read_embeddings: filters, dtypes, dimensions -------------------------------------------


def test_read_embeddings_filters_by_model_dataset_both_or_neither(
    tmp_path: Path, two_groups: list[Group]
) -> None:
    path = tmp_path / "emb.parquet"
    groups = [*two_groups, ("siglip", "inquire", ids_for("inq", 5), unit_rows(5, 8, 2))]
    make_file(path, groups)

    by_both = read_embeddings(path, model_name="clip", dataset_name="flickr30k")
    assert list(by_both.ids) == groups[1][2]
    np.testing.assert_array_equal(by_both.vectors, groups[1][3])

    by_dataset = read_embeddings(path, dataset_name="inquire")
    assert list(by_dataset.ids) == groups[0][2] + groups[2][2]
    np.testing.assert_array_equal(by_dataset.vectors, np.concatenate([groups[0][3], groups[2][3]]))

    by_model = read_embeddings(path, model_name="siglip")
    assert list(by_model.ids) == groups[2][2]
    np.testing.assert_array_equal(by_model.vectors, groups[2][3])

    clip = read_embeddings(path, model_name="clip", memory_map=False)
    assert clip.vectors.shape == (15, 8)

    assert len(read_embeddings(path, model_name="absent")) == 0


def test_float16_file_reads_back_as_float32_of_the_stored_values(
    tmp_path: Path, two_groups: list[Group]
) -> None:
    path = tmp_path / "emb16.parquet"
    make_file(path, two_groups, output_dtype="float16", metadata={"output_dtype": "float16"})
    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float16(), 8)
    matrix = read_embeddings(path, dataset_name="inquire")
    assert matrix.vectors.dtype == np.float32
    np.testing.assert_allclose(matrix.vectors, two_groups[0][3], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(matrix.vectors, two_groups[0][3].astype(np.float16))
    assert read_metadata(path)["output_dtype"] == "float16"


def test_models_of_different_dims_in_one_file_read_per_model_not_together(
    tmp_path: Path, mixed_dims: list[Group]
) -> None:
    path = tmp_path / "mixed.parquet"
    make_file(path, mixed_dims)
    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float32())

    for model, _, ids, vectors in mixed_dims:
        matrix = read_embeddings(path, model_name=model, dataset_name="inquire")
        assert matrix.vectors.shape == vectors.shape
        assert list(matrix.ids) == ids
        np.testing.assert_array_equal(matrix.vectors, vectors)
    with pytest.raises(ValueError, match="different dimensions"):
        read_embeddings(path)


def test_models_of_different_dims_in_a_folder_read_per_model_not_together(
    tmp_path: Path, mixed_dims: list[Group]
) -> None:
    path = tmp_path / "emb"
    make_folder(path, mixed_dims)
    for model, _, ids, vectors in mixed_dims:
        matrix = read_embeddings(path, model_name=model)
        assert matrix.vectors.dtype == np.float32
        assert matrix.ids.tolist() == ids
        np.testing.assert_array_equal(matrix.vectors, vectors)
    with pytest.raises(ValueError, match="different dimensions"):
        read_embeddings(path)
    assert len(read_embeddings(path, model_name="absent")) == 0


def test_float16_folder_reads_back_as_float32_of_the_stored_values(
    tmp_path: Path, two_groups: list[Group]
) -> None:
    path = tmp_path / "emb16"
    make_folder(path, two_groups, output_dtype="float16")
    assert pq.read_schema(path / COMMON_METADATA).field("embedding").type == pa.list_(pa.float16())
    matrix = read_embeddings(path, dataset_name="inquire")
    assert matrix.vectors.dtype == np.float32
    np.testing.assert_array_equal(matrix.vectors, two_groups[0][3].astype(np.float16))


def test_empty_selection_keeps_the_dimension(tmp_path: Path, two_groups: list[Group]) -> None:
    path = tmp_path / "emb.parquet"
    make_file(path, two_groups)
    nothing = read_embeddings(path, model_name="absent")
    assert nothing.vectors.shape == (0, 8)
    assert nothing.vectors.dtype == np.float32
    assert nothing.ids.tolist() == []
