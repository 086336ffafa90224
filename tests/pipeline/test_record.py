"""The completion record: what it vouches for, and each way a record or its parts can fail a check."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from img_search.pipeline.state.record import CompletionRecord, PartRef, load_record, part_name
from img_search.pipeline.state.verify import part_digest, part_problem
from img_search.store import PartWriter
from img_search.store.layout import TableLayout

PART = part_name("clip", "photos", 3, 0, 0)


def record(**changes) -> CompletionRecord:
    """Shard 3 (positions 24-32) of clip × photos: 6 rows, one error, one empty position."""
    base = CompletionRecord(
        "clip",
        "photos",
        3,
        24,
        32,
        done=[[24, 32]],
        final=True,
        rows=6,
        parts=[PartRef(PART, 6, 1234, "ab" * 32)],
        errors=[["photos/7.jpg", "truncated"]],
        skipped=1,
        owner="host-1-abc",
    )
    return replace(base, **changes)


def test_a_record_round_trips_and_accounts_for_every_position():
    again = CompletionRecord.from_json(json.loads(record().to_json()))
    assert again == record()
    assert again.positions_done == 8 == again.rows + len(again.errors) + again.skipped
    assert again.problem("clip", "photos", 3) is None


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"shard": 4}, "it is the record of shard 4 of clip × photos"),
        ({"parts": [PartRef("../../other/" + PART, 6, 1, "x")]}, "outside the job folder"),
        ({"parts": [PartRef("/etc/" + PART, 6, 1, "x")]}, "outside the job folder"),
        ({"parts": [PartRef("..", 6, 1, "x")]}, "outside the job folder"),
        ({"parts": [PartRef("." + PART, 6, 1, "x")]}, "outside the job folder"),
        ({"parts": [PartRef("a\\" + PART, 6, 1, "x")]}, "outside the job folder"),
        ({"parts": [PartRef(part_name("clip", "photos", 2, 0, 0), 6, 1, "x")]}, "another shard"),
        ({"parts": [PartRef(PART, 3, 1, "x")] * 2}, "names a part twice"),
        ({"done": [[16, 32]]}, "not within 24-32"),
        ({"rows": 7}, "it says 7 rows and its parts 6"),
        ({"skipped": 0}, "are not the 8 positions it says are done"),
    ],
)
def test_a_record_that_contradicts_itself_or_its_place_is_refused(changes, problem):
    assert problem in record(**changes).problem("clip", "photos", 3)


@pytest.mark.parametrize(
    "content",
    [b"[1, 2]", b'{"shard": 3}', b'{"shard": "3"', b"\xff\xfe", json.dumps({"x": 1}).encode()],
)
def test_a_file_that_is_not_a_record_is_named_once_and_read_as_absent(content, tmp_path, caplog):
    path = tmp_path / "000003.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert load_record(path, "clip", "photos", 3) is None
        assert load_record(path, "clip", "photos", 3) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ")
    assert lines[0].endswith("shard 3 of clip × photos is redone")
    path.write_text(record().to_json())
    assert load_record(path, "clip", "photos", 3) == record()
    assert load_record(tmp_path / "absent.json", "clip", "photos", 3) is None


def test_a_part_is_checked_by_size_digest_rows_and_model(tmp_path):
    layout = TableLayout.of(tmp_path / "out.parquet")
    layout.parts_dir.mkdir(parents=True)
    path = layout.parts_dir / PART
    writer = PartWriter(path, "clip", "photos")
    writer.write([f"photos/{i}.jpg" for i in range(6)], np.eye(6, 8, dtype=np.float32))
    writer.close()
    good = record(parts=[PartRef(PART, 6, path.stat().st_size, part_digest(path))])
    assert part_problem(layout, good) is None
    wrong_rows = replace(good, parts=[replace(good.parts[0], rows=5)])
    assert (
        part_problem(layout, wrong_rows)
        == f"part {PART} holds 6 rows, and the record vouches for 5"
    )
    other_model = replace(good, model="siglip")
    assert "holds rows of model_name 'clip', not 'siglip'" in part_problem(layout, other_model)
    wrong_digest = replace(good, parts=[replace(good.parts[0], sha256="0" * 64)])
    assert "other bytes than the record vouches for" in part_problem(layout, wrong_digest)
    moved = Path(tmp_path / "elsewhere.parquet")
    path.rename(moved)
    assert part_problem(layout, good) == f"part {PART} is missing"
    path.symlink_to(moved)
    assert part_problem(layout, good) == f"part {PART} is a link, not a file this job wrote"
