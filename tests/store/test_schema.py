"""The caption table's own columns: one definition, their types whatever form the values come in."""

from __future__ import annotations

import pyarrow as pa

from img_search.store import schema as S


def test_caption_columns_take_lists_or_arrow_columns_and_give_the_table_types_in_order() -> None:
    from_lists = S.caption_columns(
        {"caption": ["a cat"], "image_id": ["1"], "image": ["1.jpg"], "index": [7]}
    )
    from_arrow = S.caption_columns(
        {
            "index": pa.array([7], pa.int32()),
            "image": pa.chunked_array([["1.jpg"]]),
            "image_id": pa.array(["1"], pa.large_string()),
            "caption": pa.array(["a cat"]),
        }
    )
    for columns in (from_lists, from_arrow):
        assert list(columns) == ["index", "image", "image_id", "caption"]
        assert pa.table(columns).schema == pa.schema(S.CAPTION_FIELDS)
        assert pa.table(columns).to_pylist() == [
            {"index": 7, "image": "1.jpg", "image_id": "1", "caption": "a cat"}
        ]
    assert set(S.CAPTION_COLUMNS) == {f.name for f in S.CAPTION_FIELDS} - {"index"}
