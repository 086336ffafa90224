"""WebDataset tars (img2dataset layout): which tars, their samples, and what a damaged tar lost."""

from __future__ import annotations

import io
import logging
import pickle
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from img_search.data import (
    DATASETS,
    TEXT_DATASETS,
    WebDatasetCaptions,
    WebDatasetImages,
    get_dataset,
    get_text_dataset,
)
from img_search.data.base import BuildContext, EmptyDataset, fingerprint_arrays
from img_search.data.tar_listing import TarListing, list_tars
from img_search.data.tar_reading import TarWalk, span_of
from img_search.data.tar_urls import expand_urls
from img_search.data.webdataset import DEFAULT_IMAGE_KEYS, ImageListing
from img_search.data.webdataset_captions import CaptionListing
from img_search.testing.fixtures import (
    Img2datasetLike,
    jpeg_bytes,
    synthetic_image,
    write_img2dataset_like,
    write_img2dataset_tar,
)


@pytest.fixture(scope="module")
def tars(tmp_path_factory: pytest.TempPathFactory) -> Img2datasetLike:
    return write_img2dataset_like(tmp_path_factory.mktemp("img2dataset"))


def built(urls, **options) -> WebDatasetImages:
    dataset = get_dataset({"dataset": "webdataset", "urls": urls, **options}, name="laion")
    dataset.build()
    return dataset


def sample(key: str, **members) -> dict:
    return {"key": key, **members}


def image(seed: int) -> bytes:
    return jpeg_bytes(synthetic_image(seed, (16, 12)))


# -- urls ------------------------------------------------------------------------------
def test_urls_of_a_brace_pattern_a_list_a_folder_and_a_list_file_expand_in_order(
    tars: Img2datasetLike, tmp_path: Path
) -> None:
    root = tars.root
    every = [str(root / f"{i:05d}.tar") for i in range(6)]
    where = "datasets.x.urls"
    assert expand_urls(f"{root}/{{00000..00005}}.tar", where) == every
    assert expand_urls(str(root), where) == every  # a folder: its *.tar, sorted
    assert expand_urls([every[3], f"{root}/{{00000..00001}}.tar"], where) == [
        every[3],
        every[0],
        every[1],
    ]
    listing = root / "shards.txt"
    listing.write_text(f"# two of them\n00002.tar\n\n{every[0]}\n")
    assert expand_urls(str(listing), where) == [every[2], every[0]]  # relative to the list


def test_missing_tar_is_named(tars: Img2datasetLike) -> None:
    pattern = f"{tars.root}/{{00004..00007}}.tar"
    with pytest.raises(FileNotFoundError, match=r"00006\.tar \(and 1 more of 4\)"):
        expand_urls(pattern, "datasets.laion.urls")
    with pytest.raises(FileNotFoundError, match=r"datasets\.laion\.urls"):
        built([str(tars.root / "nope.tar")])


def test_a_folder_without_tars_colliding_tar_names_and_no_urls_are_refused(
    tars: Img2datasetLike, tmp_path: Path
) -> None:
    with pytest.raises(EmptyDataset, match=r"no \.tar files"):
        expand_urls(str(tmp_path), "datasets.x.urls")
    (tmp_path / "other").mkdir()
    shutil.copy(tars.root / "00000.tar", tmp_path / "other" / "00000.tar")
    with pytest.raises(ValueError, match="share the name '00000'"):
        expand_urls([str(tars.root / "00000.tar"), str(tmp_path / "other")], "datasets.x.urls")
    with pytest.raises(ValueError, match="urls is empty"):
        get_dataset({"dataset": "webdataset", "urls": []}, name="x")


def test_unknown_protocol_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read nosuchprotocol://x/00000\.tar") as error:
        expand_urls("nosuchprotocol://x/00000.tar", "datasets.x.urls")
    assert "\n" not in str(error.value)


def test_remote_tars_are_read_through_fsspec(tars: Img2datasetLike) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    for name in ("00000.tar", "00003.tar"):
        memory.pipe(f"/wds/{name}", (tars.root / name).read_bytes())
    dataset = built("memory://wds/{00000,00003}.tar")
    items = list(dataset)
    assert [i.id for i in items] == [f"{s:05d}/{s:05d}{i:04d}" for s in (0, 3) for i in range(5)]
    assert all(i.source == tars.images[i.id] for i in items)


# -- the image dataset ------------------------------------------------------------------
def test_webdataset_lists_ids_one_shard_per_tar_and_names_each_problem(
    tars: Img2datasetLike,
) -> None:
    dataset = built(f"{tars.root}/{{00000..00005}}.tar")
    expected = sorted([*tars.images, tars.corrupt])
    assert dataset.item_ids() == expected  # tar order, then sample order
    assert dataset.listing() == (len(expected), fingerprint_arrays(pa.array(expected)))
    assert dataset.length() == len(expected)
    shards = dataset.shards(1000, 4)
    assert [(s.label, s.start, s.stop) for s in shards] == [
        (f"{i:05d}.tar", 0, 3 if i == 4 else 5) for i in range(6)
    ]
    assert WebDatasetImages.random_access is False
    problems = dict(dataset.problems())
    assert set(problems) == {tars.no_image, *tars.lost}
    assert problems[tars.no_image] == (
        "no image (has: txt); datasets.laion.image_keys=[jpg, jpeg, png, webp]"
    )
    for lost in tars.lost:
        assert problems[lost].startswith("tar truncated/corrupt at byte ")
        assert "00004.parquet lists this sample" in problems[lost]
    assert dataset.describe() == {
        "kind": "webdataset",
        "urls": f"{tars.root}/{{00000..00005}}.tar",
        "tars": 6,
        "image_keys": ["jpg", "jpeg", "png", "webp"],
        "max_member_bytes": 64 * 2**20,
    }


def test_items_of_a_window_and_get_give_the_tars_images_and_survive_pickling(
    tars: Img2datasetLike,
) -> None:
    dataset = built(str(tars.root))
    shard = dataset.shards(1000)[2]  # its sample 3 has no image
    window = list(dataset.items(shard, 1, 4))
    assert [(p, i.id) for p, i in window] == [(1, "00002/000020001"), (2, "00002/000020002")]
    assert all(i.source == tars.images[i.id] for _, i in window)
    assert list(dataset.items(shard, 3, 4)) == []
    ids = dataset.item_ids()
    for position in (0, 12, len(ids) - 1):
        item = dataset.get(position)
        assert item.id == ids[position] and item.source == tars.images[item.id]
    copy = pickle.loads(pickle.dumps(dataset))  # what a loader worker gets
    assert [i.id for i in copy] == ids


def test_truncated_tar_without_its_parquet_is_one_row(
    tars: Img2datasetLike, tmp_path: Path
) -> None:
    shutil.copy(tars.truncated, tmp_path / "00004.tar")
    dataset = built(str(tmp_path))
    assert dataset.item_ids() == ["00004/000040000", "00004/000040001", "00004/000040002"]
    ((where, reason),) = dataset.problems()
    assert where == "00004.tar"
    assert reason.startswith("tar truncated/corrupt at byte ")
    assert "000040003.jpg: unexpected end of data" in reason and "no 00004.parquet" in reason


def test_every_cut_keeps_whole_samples_and_names_the_rest(tmp_path: Path) -> None:
    samples = [
        sample(f"{i:09d}", jpg=image(i), txt=f"caption {i}" * i, json={"i": i}) for i in range(4)
    ]
    write_img2dataset_tar(tmp_path / "00000.tar", samples)
    whole = (tmp_path / "00000.tar").read_bytes()
    keys = [s["key"] for s in samples]
    logging.disable(logging.WARNING)  # a cut in the end marker loses nothing, and says so
    try:
        for cut in [*range(0, len(whole), 101), *range(500, 530), len(whole) - 1]:
            (tmp_path / "00000.tar").write_bytes(whole[:cut])
            walk = TarWalk(str(tmp_path / "00000.tar"))
            read = {s.key: {e: r.read(span_of(m)) for e, m in s.members.items()} for r, s in walk}
            lost = [where.split("/")[1] for where, _ in walk.problems]
            assert sorted([*read, *lost]) == keys, cut
            for key, members in read.items():
                assert members.get("jpg", samples[int(key)]["jpg"]) == samples[int(key)]["jpg"]
    finally:
        logging.disable(logging.NOTSET)


def test_image_keys_pick_in_order_a_repeated_key_and_meta_members_are_no_items(
    tmp_path: Path,
) -> None:
    png, jpg = image(1), image(2)
    samples = [
        sample("a", jpg=jpg, png=png),
        sample("b", jpg=jpg),
        sample("a", png=png),  # the key again, later: not a second item
        sample("c", txt="only text"),
    ]
    write_img2dataset_tar(tmp_path / "x.tar", samples)
    dataset = built(str(tmp_path / "x.tar"), image_keys=["PNG", ".jpg"])
    assert [(i.id, i.source) for i in dataset] == [("x/a", png), ("x/b", jpg)]
    problems = dict(dataset.problems())
    assert "samples 0 and 2" in problems["x/a"]
    assert problems["x/c"] == "no image (has: txt); datasets.laion.image_keys=[png, jpg]"
    assert dataset.shards(10)[0].stop == 4

    with tarfile.open(tmp_path / "y.tar.gz", "w:gz") as archive:
        for name, data in [("__index__", b"meta"), ("k1.jpg", jpg), ("README", b"no key")]:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    dataset = built(str(tmp_path / "y.tar.gz"))
    assert [(i.id, i.source) for i in dataset] == [("y/k1", jpg)]
    assert dataset.problems() == []


def test_registry_names_the_webdataset_images_and_captions() -> None:
    assert DATASETS["webdataset"] is WebDatasetImages
    assert TEXT_DATASETS["webdataset_captions"] is WebDatasetCaptions


# -- captions ---------------------------------------------------------------------------
def captions(urls, **options) -> WebDatasetCaptions:
    dataset = get_text_dataset({"dataset": "webdataset_captions", "urls": urls, **options})
    dataset.build()
    return dataset


def records(dataset: WebDatasetCaptions) -> list[tuple[str, str, str, str]]:
    rows = [dataset.get_record(i) for i in range(dataset.length())]
    return [(r.caption_id, r.image_id, r.image, r.caption) for r in rows]


def test_captions_from_txt_join_the_image_ids(tars: Img2datasetLike) -> None:
    dataset = captions(str(tars.root))
    got = records(dataset)
    assert [(c, i, t) for c, i, _, t in got] == [
        (f"{i}#0", i, text) for i, text in sorted(tars.captions.items())
    ]
    members = {i: member for _, i, member, _ in got}
    assert members["00000/000000001"] == "00000.tar/000000001.jpg"
    assert members[tars.no_image] == ""
    assert set(built(str(tars.root)).item_ids()) <= set(members)  # every image has its caption
    assert dict(dataset.problems()).keys() == set(tars.lost)
    assert dataset.listing()[0] == len(tars.captions)


def test_captions_from_a_json_field(tars: Img2datasetLike, tmp_path: Path) -> None:
    dataset = captions(str(tars.root), caption_key="json:caption")
    problems = dict(dataset.problems())
    assert problems[tars.no_image] == "no caption (has: txt); text_dataset.caption_key=json:caption"
    assert {i for _, i, _, _ in records(dataset)} == set(tars.captions) - {tars.no_image}

    samples = [
        sample("a", json={"caption": ["one", "two"]}),
        sample("b", json={"caption": None}),
        sample("c", json="not json {"),
        sample("d", json={"caption": 3}),
    ]
    write_img2dataset_tar(tmp_path / "s.tar", samples)
    dataset = captions(str(tmp_path / "s.tar"), caption_key="json:caption")
    assert records(dataset) == [("s/a#0", "s/a", "", "one"), ("s/a#1", "s/a", "", "two")]
    problems = dict(dataset.problems())
    assert "field 'caption' is missing or null" in problems["s/b"]
    assert "b.json" in problems["s/b"]
    assert "malformed JSON" in problems["s/c"]
    assert "is of type int" in problems["s/d"]
    with pytest.raises(ValueError, match="caption_key must name a member"):
        get_text_dataset({"dataset": "webdataset_captions", "urls": "x", "caption_key": ":x"})


# -- the listing, made once and shared ------------------------------------------------------
@dataclass(frozen=True)
class LoggedListing:
    """Lists like ``ImageListing`` and appends each tar's name to ``log`` (a file: it runs in a pool)."""

    log: str

    def __call__(self, url: str) -> TarListing:
        stop = Path(
            self.log + ".stop"
        )  # tars listed in all, after which it fails (the process stops)
        if stop.exists() and len(listed(Path(self.log))) >= int(stop.read_text()):
            raise RuntimeError("stopped")
        with open(self.log, "a", encoding="utf-8") as out:
            out.write(url.rsplit("/", 1)[-1] + "\n")
        return ImageListing(DEFAULT_IMAGE_KEYS, "datasets.laion")(url)


def listed(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_a_pool_lists_each_tar_once_into_the_job_folder(tars: Img2datasetLike, tmp_path) -> None:
    alone = built(str(tars.root))  # no context: one process, nothing kept
    shared = WebDatasetImages("laion", str(tars.root))
    shared.context = BuildContext(tmp_path / "built", workers=3)
    shared.build()
    assert shared.listing() == alone.listing()
    assert shared.problems() == alone.problems()
    assert [(s.index, s.stop, s.label) for s in shared.shards(4)] == [
        (s.index, s.stop, s.label) for s in alone.shards(4)
    ]
    assert [(i.id, i.source) for i in shared] == [(i.id, i.source) for i in alone]
    kept = sorted(p.name.split(".")[0] for p in (tmp_path / "built").iterdir())
    assert kept == [f"{i:05d}" for i in range(6)]

    # another process of the job (or a rerun) reads them: a listing that would list fails here
    again = WebDatasetImages("laion", str(tars.root))
    again.context = BuildContext(tmp_path / "built", slot=1, slots=2, workers=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ImageListing, "__call__", lambda *_: pytest.fail("listed again"))
        again.build()
    assert again.listing() == alone.listing() and again.problems() == alone.problems()


def test_processes_start_on_their_own_tars_and_a_changed_tar_is_listed_again(
    tars: Img2datasetLike, tmp_path: Path
) -> None:
    root = tmp_path / "tars"
    shutil.copytree(tars.root, root)
    urls = expand_urls(str(root), "datasets.laion.urls")
    log, folder = tmp_path / "listed.log", tmp_path / "built"
    second = BuildContext(folder, slot=1, slots=2)  # the second of two processes: from tar 3 on
    (tmp_path / "listed.log.stop").write_text("2")
    with pytest.raises(RuntimeError, match="stopped"):
        list_tars(urls, LoggedListing(str(log)), second, "laion")
    (tmp_path / "listed.log.stop").unlink()
    assert listed(log) == ["00003.tar", "00004.tar"]
    first = BuildContext(folder, slot=0, slots=2)
    got = list_tars(urls, LoggedListing(str(log)), first, "laion")
    assert listed(log)[2:] == ["00000.tar", "00001.tar", "00002.tar", "00005.tar"]
    assert [g.samples for g in got] == [5, 5, 5, 5, 3, 5]  # 00004.tar is cut after 3 samples

    write_img2dataset_tar(root / "00002.tar", [sample("k", jpg=image(3))])  # replaced
    list_tars(urls, LoggedListing(str(log)), first, "laion")
    assert listed(log)[6:] == ["00002.tar"]
    # another question of the same tars (other image keys) is another listing
    other = WebDatasetImages("laion", str(root), image_keys=["png"])
    other.context = BuildContext(folder)
    other.build()
    assert other.length() == 0 and len(other.problems()) == 26


def test_captions_share_their_listing_too(tars: Img2datasetLike, tmp_path: Path) -> None:
    spec = {"dataset": "webdataset_captions", "urls": str(tars.root)}
    alone = get_text_dataset(spec, name="c")
    alone.build()
    shared = get_text_dataset(spec, name="c")
    shared.context = BuildContext(tmp_path / "built", workers=2)
    shared.build()
    again = get_text_dataset(spec, name="c")
    again.context = BuildContext(tmp_path / "built")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CaptionListing, "__call__", lambda *_: pytest.fail("listed again"))
        again.build()
    for dataset in (shared, again):
        assert dataset.listing() == alone.listing() and dataset.problems() == alone.problems()
        assert [dataset.get_record(i) for i in range(3)] == [alone.get_record(i) for i in range(3)]
