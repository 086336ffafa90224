"""Caption datasets: JSONL parsing, stable ids, error reporting, and the Flickr30k route."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from img_search.data import TEXT_DATASETS, CaptionRecord, get_text_dataset
from img_search.registry import UnknownNameError
from img_search.store.schema import CAPTION_FIELDS, caption_columns
from img_search.testing.fixtures import write_flickr30k_like


def jsonl(tmp_path, lines, name="caps.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build(path, **options):
    dataset = get_text_dataset(
        {"dataset": "captions_jsonl", "path": str(path), **options}, name="caps"
    )
    dataset.build()
    return dataset


def records(dataset):
    return [dataset.get_record(i) for i in range(dataset.length())]


def test_ids_number_captions_per_image_across_lines(tmp_path):
    path = jsonl(
        tmp_path,
        [
            json.dumps({"image": "dir/1000.jpg", "caption": ["a dog", "un café «noir»"]}),
            "",
            "   ",
            json.dumps({"image": "2000.png", "caption": 'a "quoted" cat'}),
            json.dumps({"image": "1000.jpg", "caption": "東京の犬"}),
        ],
    )
    got = records(build(path))
    assert got == [
        CaptionRecord(0, "1000#0", "a dog", "dir/1000.jpg", "1000"),
        CaptionRecord(1, "1000#1", "un café «noir»", "dir/1000.jpg", "1000"),
        CaptionRecord(2, "2000#0", 'a "quoted" cat', "2000.png", "2000"),
        CaptionRecord(3, "1000#2", "東京の犬", "1000.jpg", "1000"),
    ]
    assert records(build(path)) == got  # stable across runs


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"image": "a.jpg", "caption": ', "malformed JSON"),
        ('{"image": "a.jpg"}', "no caption"),
        ('{"caption": "x"}', "no image"),
        ('["a.jpg", "x"]', "expected a JSON object"),
        ('{"image": "a.jpg", "caption": 3}', "must be a string or a list"),
    ],
)
def test_bad_line_is_reported_with_its_number_and_skipped(tmp_path, bad_line, reason):
    good = json.dumps({"image": "b.jpg", "caption": "fine"})
    dataset = build(jsonl(tmp_path, [good, "", bad_line, good]))
    assert [r.caption_id for r in records(dataset)] == ["b#0", "b#1"]
    ((where, why),) = dataset.problems()
    assert where == "caps.jsonl:3"
    assert why.startswith("line 3:") and reason in why


def test_on_error_fail_stops_at_the_line(tmp_path):
    path = jsonl(tmp_path, [json.dumps({"image": "b.jpg", "caption": "x"}), "{oops"])
    with pytest.raises(ValueError, match="line 2: malformed JSON"):
        build(path, on_error="fail")


def test_a_missing_caption_file_is_named_and_an_unknown_on_error_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        build(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="on_error"):
        build(tmp_path / "x.jsonl", on_error="ignore")


def test_columns_for_gathered_positions_in_the_caption_table_schema(tmp_path):
    lines = [json.dumps({"image": f"{i}.jpg", "caption": [f"c{i}a", f"c{i}b"]}) for i in range(3)]
    dataset = build(jsonl(tmp_path, lines))
    columns = caption_columns(dataset.columns([5, 0, 3]))
    assert [(name, array.type) for name, array in columns.items()] == [
        (field.name, field.type) for field in CAPTION_FIELDS
    ]
    assert columns["index"].to_pylist() == [5, 0, 3]
    assert columns["image_id"].to_pylist() == ["2", "0", "1"]
    assert columns["caption"].to_pylist() == ["c2b", "c0a", "c1b"]
    assert columns["image"].to_pylist() == ["2.jpg", "0.jpg", "1.jpg"]


def test_flickr30k_route_gives_the_jsonl_ids(tmp_path):
    stems = write_flickr30k_like(tmp_path / "f30k", n_images=5)
    hub = get_text_dataset(
        {"dataset": "flickr30k_captions", "path": str(tmp_path / "f30k")}, name="f"
    )
    hub.build()
    table = pq.read_table(
        next((tmp_path / "f30k" / "data").glob("*.parquet")), columns=["filename", "caption"]
    )
    lines = [
        json.dumps({"image": r["filename"], "caption": r["caption"]}) for r in table.to_pylist()
    ]
    local = build(jsonl(tmp_path, lines))
    assert records(hub) == records(local)
    assert hub.length() == 25
    assert {r.image_id for r in records(hub)} == set(stems)
    subset = get_text_dataset(
        {"dataset": "flickr30k_captions", "path": str(tmp_path / "f30k"), "ids": stems[:2]},
        name="f",
    )
    subset.build()
    assert {r.image_id for r in records(subset)} == set(stems[:2]) and subset.length() == 10


def test_unknown_text_dataset_lists_registered_names():
    with pytest.raises(UnknownNameError) as error:
        get_text_dataset({"dataset": "coco"}, name="x")
    for name in TEXT_DATASETS:
        assert name in str(error.value)


def test_lines_that_are_not_records_are_skipped_with_their_number(tmp_path):
    """A lone surrogate, bytes not in the encoding, JSON nested past the recursion limit and a line
    over max_line_bytes: each one line-numbered skip, never the end of the dataset."""
    good = json.dumps({"image": "b.jpg", "caption": "fine"}).encode()
    lines = [
        good,
        b'{"image": "a.jpg", "caption": "smile \\ud83d"}',
        b'{"image": "a.jpg", "caption": "caf\xe9"}',
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"image": "c.jpg", "caption": "x" * 3000}).encode(),
        good,
    ]
    path = tmp_path / "caps.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    dataset = build(path, max_line_bytes=2048)
    assert [r.caption_id for r in records(dataset)] == ["b#0", "b#1"]
    assert dataset.problems() == [
        (
            "caps.jsonl:2",
            "line 2: the caption holds a lone surrogate (\\ud83d at character 6), half of a "
            "character: not text",
        ),
        (
            "caps.jsonl:3",
            "line 3: not utf-8 text (byte 0xe9 at column 35); text_dataset.encoding names the "
            "file's encoding",
        ),
        (
            "caps.jsonl:4",
            "line 4: the line is over the size limit of 2 KiB (text_dataset.max_line_bytes)",
        ),
        (
            "caps.jsonl:5",
            "line 5: the line is over the size limit of 2 KiB (text_dataset.max_line_bytes)",
        ),
    ]
    nested = tmp_path / "nested.jsonl"
    nested.write_bytes(lines[3] + b"\n" + good + b"\n")
    assert build(nested).problems() == [
        ("nested.jsonl:1", "line 1: JSON nested too deeply to read")
    ]
    latin = build(path, max_line_bytes=2048, encoding="latin-1")
    assert [r.caption for r in records(latin)][1] == "café"


def test_an_encoding_that_is_not_read_line_by_line_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"encoding=utf-16 is not read line by line"):
        build(tmp_path / "x.jsonl", encoding="utf-16")
