"""Hostile tars (issue 24): every sample ends as a row or an error row, headers cost bounded memory,
a tar that changed since it was listed is never read as other bytes, a kept listing is checked."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest

from img_search.data import WebDatasetImages, get_dataset, get_text_dataset
from img_search.data.base import BuildContext
from img_search.data.tar_headers import MAX_CHAIN
from img_search.data.tar_listing import META_KEY, TarListing, digest
from img_search.data.tar_reading import TarWalk
from img_search.images import ItemUnreadable, Unreadable, open_image
from img_search.testing.fixtures import write_img2dataset_tar
from img_search.testing.hostile_tars import (
    HostileTar,
    member,
    ordinary,
    sample_bytes,
    truncate_tar,
    write_hostile_tars,
)

END = bytes(2 * tarfile.BLOCKSIZE)
#: The cases whose tars a unit test lists (the gzip bomb decompresses 2 GiB: the CLI test's).
LISTED = ["sparse", "non_utf8", "links", "oversize", "surrogate", "nested", "pax_bomb"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostileTar]:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar makes the sparse member (tar --sparse --format=gnu)")
    return write_hostile_tars(tmp_path_factory.mktemp("hostile"))


def images_of(*tars: HostileTar | Path, **options) -> WebDatasetImages:
    urls = [str(t.path if isinstance(t, HostileTar) else t) for t in tars]
    dataset = get_dataset({"dataset": "webdataset", "urls": urls, **options}, name="laion")
    dataset.build()
    return dataset


def test_every_sample_is_a_row_or_an_error_row_with_its_reason(hostile) -> None:
    dataset = images_of(*(hostile[case] for case in LISTED))
    rows, errors = set(dataset.item_ids()), dict(dataset.problems())
    for case in LISTED:
        tar = hostile[case]
        held = set(tar.ids)
        assert held == {i for i in rows | set(errors) if i.split("/")[0] == tar.path.stem}, case
        assert {i for i in errors if i in held} == tar.image_errors, case
    assert not rows & set(errors)
    assert errors["h-non_utf8/caf\\xe9"] == (
        "the member name 'caf\\xe9.jpg' is not UTF-8 (item ids are text): not read"
    )
    assert errors["h-links/0001"] == (
        "0001.jpg is a hard link to '0000.jpg': link and device members are not read"
    )
    assert errors["h-links/0002"].startswith("0002.jpg is a symbolic link to '0000.jpg'")
    assert errors["h-oversize/0001"] == (
        "member 0001.jpg of 2.4 GiB is over the size limit of 64 MiB "
        "(datasets.laion.max_member_bytes)"
    )
    assert errors["h-pax_bomb/0005"].startswith("0005.jpg: a PAX extended header of 2.0 MiB")
    assert "over the 1 MiB a header may take" in errors["h-pax_bomb/0005"]


def test_a_sparse_member_is_read_with_its_holes_filled(hostile) -> None:
    with tarfile.open(hostile["sparse"].path) as archive:
        assert archive.getmember("0001.jpg").issparse()  # tar --sparse made it so
    jpeg = ordinary("0001", 101)["jpg"]
    file = jpeg + bytes(1 << 20) + b"middle" + bytes(1 << 20) + b"end"
    dataset = images_of(hostile["sparse"])
    assert dataset.item_ids() == hostile["sparse"].ids and dataset.problems() == []
    assert dataset.get(1).source == file
    assert open_image(dataset.get(1).source).size == (40, 30)


def test_a_smaller_member_limit_refuses_from_the_header(hostile) -> None:
    dataset = images_of(hostile["links"], max_member_bytes=600)
    reasons = dict(dataset.problems())
    assert all(
        "over the size limit of 600 bytes (datasets.laion.max_member_bytes)" in reasons[i]
        for i in ("h-links/0000", "h-links/0003")
    )
    with pytest.raises(ValueError, match=r"max_member_bytes must be a whole number of bytes"):
        images_of(hostile["links"], max_member_bytes=2**31)


def test_captions_of_hostile_tars_are_rows_or_error_rows(hostile) -> None:
    tars = [hostile[case] for case in LISTED]
    dataset = get_text_dataset(
        {
            "dataset": "webdataset_captions",
            "urls": [str(t.path) for t in tars],
            "caption_key": "json:caption",
        },
        name="c",
    )
    dataset.build()
    rows = {dataset.get_record(i).image_id for i in range(dataset.length())}
    errors = dict(dataset.problems())
    for tar in tars:
        assert rows | set(errors) >= set(tar.ids) and not rows & tar.caption_errors, tar.path
        assert {i for i in errors if i in tar.ids} == tar.caption_errors, tar.path
    assert errors["h-surrogate/0001"] == (
        "0001.json: the caption holds a lone surrogate (\\ud83d at character 6), half of a "
        "character: not text; text_dataset.caption_key=json:caption"
    )
    assert errors["h-nested/0001"].startswith("0001.json: JSON nested too deeply to read")
    assert errors["h-links/0002"].startswith("0002.json is a symbolic link to '0000.json'")


def test_a_caption_member_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    write_img2dataset_tar(
        tmp_path / "t.tar", [ordinary("0000", 1), {"key": "0001", "txt": "x" * 5000}]
    )
    dataset = get_text_dataset(
        {
            "dataset": "webdataset_captions",
            "urls": str(tmp_path / "t.tar"),
            "max_caption_bytes": 4096,
        },
        name="c",
    )
    dataset.build()
    assert [dataset.get_record(i).caption_id for i in range(dataset.length())] == ["t/0000#0"]
    assert dataset.problems() == [
        (
            "t/0001",
            "member 0001.txt of 4.9 KiB is over the size limit of 4 KiB "
            "(text_dataset.max_caption_bytes)",
        )
    ]


def test_a_tar_cut_after_listing_gives_error_rows_naming_the_tar_and_the_byte(
    hostile, tmp_path: Path
) -> None:
    tar = HostileTar(tmp_path / "h-truncated.tar", hostile["to_truncate"].ids)
    shutil.copy(hostile["to_truncate"].path, tar.path)
    shutil.copy(hostile["to_truncate"].path.with_suffix(".parquet"), tmp_path)
    dataset = images_of(tar)
    lost = truncate_tar(tar)
    shard = dataset.shards(100)[0]
    got = list(dataset.items(shard, 0, shard.stop))
    assert [item.id for _, item in got] == tar.ids  # every listed item, read or not
    for _, item in got:
        if item.id in lost:
            assert isinstance(item.source, Unreadable)
            assert item.source.reason.startswith(f"{tar.path} ends before byte ")
            assert item.source.reason.endswith("the tar was cut since it was listed")
            with pytest.raises(ItemUnreadable):
                open_image(item.source)
        else:
            assert open_image(item.source).size == (40, 30)
    # listed again, the cut tar gives the samples it holds and names what it lost
    again = images_of(tar)
    assert again.item_ids() == tar.ids[:2]
    assert sorted(i for i, _ in again.problems()) == lost


def test_a_tar_rewritten_after_listing_is_never_read_as_other_bytes(tmp_path: Path) -> None:
    path = tmp_path / "t.tar"
    write_img2dataset_tar(path, [ordinary(f"{i:04d}", i) for i in range(3)])
    dataset = images_of(path)
    write_img2dataset_tar(path, [ordinary(f"{i:04d}", 10 + i) for i in range(3)])  # other photos
    for _, item in dataset.items(dataset.shards(10)[0], 0, 3):
        assert isinstance(item.source, Unreadable)
        assert "is not the one listed there: the tar changed since it was listed" in (
            item.source.reason
        )


def pax(records: dict[str, str], kind: bytes = tarfile.XHDTYPE) -> bytes:
    payload = b""
    for keyword, value in records.items():
        record = f" {keyword}={value}\n".encode()
        size = len(record) + len(str(len(record)))
        size += len(str(size)) - len(str(len(record)))
        payload += str(size).encode() + record
    return member("PaxHeader", payload, type=kind)


def test_header_bounds_refuse_a_member_or_end_the_walk(tmp_path: Path) -> None:
    path = tmp_path / "t.tar"
    long_name = member("././@LongLink", b"a" * (2 << 20), type=tarfile.GNUTYPE_LONGNAME)
    path.write_bytes(
        sample_bytes(ordinary("0000", 0))
        + long_name
        + member("0001.jpg", b"not read")
        + sample_bytes(ordinary("0002", 2))
        + pax({"comment": "x"}) * (MAX_CHAIN + 2)
        + sample_bytes(ordinary("0003", 3))
        + END
    )
    walk = TarWalk(str(path))
    seen = [(sample.key, sample.members["jpg"].refused) for _, sample in walk]
    assert [key for key, _ in seen] == ["0000", "0001", "0002"]
    assert seen[1][1].startswith("a GNU long name of 2 MiB at byte 3584, over the 1 MiB")
    ((where, why),) = walk.problems
    assert where == "t.tar" and f"more than {MAX_CHAIN} extended headers in a row" in why


def test_a_global_pax_header_over_the_keyword_bound_is_ignored_and_logged(hostile, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        walk = TarWalk(str(hostile["pax_bomb"].path))
        assert sum(1 for _ in walk) == len(hostile["pax_bomb"].ids)
    (note,) = [r.getMessage() for r in caplog.records if "global PAX" in r.getMessage()]
    assert "set 20000 keywords, over the 1000 read: ignored from byte 0 on" in note


# -- kept listings (section 3): checked, named, listed again ---------------------------
def tamper(path: Path, change, keep_digest: bool = True) -> None:
    """Rewrite a kept listing with ``change(table, meta)``; the digest kept as it was, or made anew."""
    with pa.OSFile(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    meta = json.loads(table.schema.metadata[META_KEY])
    table, meta = change(table.replace_schema_metadata(None), meta)
    if not keep_digest:
        meta["digest"] = digest(table, {k: v for k, v in meta.items() if k != "digest"})
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def reordered(table: pa.Table, meta: dict) -> tuple[pa.Table, dict]:
    positions = table.column("position").to_pylist()
    column = pa.array(positions[::-1], pa.int32())
    return table.set_column(table.schema.get_field_index("position"), "position", column), meta


def negative_size(table: pa.Table, meta: dict) -> tuple[pa.Table, dict]:
    sizes = [-1, *table.column("size").to_pylist()[1:]]
    column = pa.array(sizes, pa.int32())
    return table.set_column(table.schema.get_field_index("size"), "size", column), meta


def samples(count: int):
    return lambda table, meta: (table, {**meta, "samples": count})


@pytest.mark.parametrize(
    ("change", "keep_digest", "why"),
    [
        (reordered, True, "its digest does not match its content"),
        (samples(0), True, "its digest does not match its content"),
        (samples(10**12), True, "its digest does not match its content"),
        (negative_size, True, "its digest does not match its content"),
        (reordered, False, "its positions are not increasing within its samples"),
        (samples(0), False, "0 samples cannot hold its 5 rows"),
        (samples(10**12), False, "1000000000000 samples cannot fit in the tar"),
        (negative_size, False, "a member it lists lies outside the tar"),
        (None, True, "Not an Arrow file"),
    ],
)
def test_a_kept_listing_that_fails_a_check_is_named_and_listed_again(
    hostile, tmp_path: Path, caplog, change, keep_digest, why
) -> None:
    url = str(hostile["to_truncate"].path)
    clean = images_of(Path(url))
    first = WebDatasetImages("laion", url)
    first.context = BuildContext(tmp_path / "built")
    first.build()
    (kept,) = (tmp_path / "built").iterdir()
    if change is None:  # a listing cut short
        kept.write_bytes(kept.read_bytes()[:300])
    else:
        tamper(kept, change, keep_digest)
    again = WebDatasetImages("laion", url)
    again.context = BuildContext(tmp_path / "built")
    with caplog.at_level(logging.WARNING):
        again.build()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{url}: the kept listing {kept} fails its check (")
    assert why in warning and warning.endswith("): listing the tar again")
    assert again.listing() == clean.listing() and again.shards(10) == clean.shards(10)
    assert [i.source for i in again] == [i.source for i in clean]
    with pa.OSFile(str(kept)) as source:  # kept anew, and it passes its checks
        TarListing.from_arrow(pa.ipc.open_file(source).read_all(), Path(url).stat().st_size)


def test_a_compressed_tar_reads_forward_as_a_stream(tmp_path: Path) -> None:
    raw = b"".join(sample_bytes(ordinary(f"{i:04d}", i)) for i in range(4)) + END
    path = tmp_path / "t.tar.gz"
    path.write_bytes(gzip.compress(raw))
    dataset = images_of(path)
    assert dataset.item_ids() == [f"t/{i:04d}" for i in range(4)]
    assert [item.source for item in dataset] == [ordinary(f"{i:04d}", i)["jpg"] for i in range(4)]
    captions = get_text_dataset({"dataset": "webdataset_captions", "urls": str(path)}, name="c")
    captions.build()
    assert captions.length() == 4 and captions.problems() == []
