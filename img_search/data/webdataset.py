"""WebDataset tars, as img2dataset writes them for LAION, DataComp and the like: one tar, one shard.

A tar holds samples: consecutive members that share a key
(``000000012.jpg``, ``000000012.txt``, ``000000012.json``), grouped as
WebDataset groups them. ``build()`` walks each tar's headers with
``tarfile`` (no image is read) and records where each sample's image lies;
a loader then reads its tar once, in order, from those offsets. Item id:
``<tar stem>/<key>`` (``00000/000000012``), which joins img2dataset's
per-tar Parquet (``00000.parquet``) through its ``key`` column.

A tar cut short (an interrupted copy) or damaged keeps the samples before
the damage; what it lost is reported: one error row per sample that the
``<stem>.parquet`` beside it lists as downloaded, else one row for the tar.
"""

from __future__ import annotations

import logging
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
from braceexpand import braceexpand

from img_search.data.base import EmptyDataset, ImageDataset, ImageItem, Shard, fingerprint_arrays
from img_search.data.tar_listing import TarListing, list_tars

log = logging.getLogger(__name__)

DEFAULT_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
#: Members WebDataset itself skips (``__index__`` and the like).
META_MEMBER = re.compile(r"__[^/]*__($|/)")
TAR_SUFFIX = re.compile(r"\.(tar(\.\w+)?|tgz)$")
#: What reading a damaged tar raises (a cut gzip stream raises EOFError or zlib.error).
TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


# -- which tars -----------------------------------------------------------------------
def is_remote(url: str) -> bool:
    return "://" in url


def tar_stem(url: str) -> str:
    """``/data/laion/00000.tar`` → ``00000``: the first part of its items' ids."""
    return TAR_SUFFIX.sub("", url.rstrip("/").rsplit("/", 1)[-1])


def expand_urls(urls: str | Sequence[str], where: str) -> list[str]:
    """The tars ``urls`` names, in order: brace patterns expanded, folders listed, ``.txt`` lists read.

    A folder gives its ``*.tar`` files, sorted; a ``.txt`` file one tar a
    line (relative paths are relative to the list's folder; blank lines and
    ``#`` comments skipped). ``where`` names the option in messages.
    """
    given = [urls] if isinstance(urls, str) else [str(u) for u in urls]
    tars = [tar for entry in given for url in braceexpand(entry) for tar in _tars_at(url, where)]
    if not tars:
        raise EmptyDataset(f"{where} names no tars: {urls!r}")
    missing = [tar for tar in tars if not _exists(tar, where)]
    if missing:
        more = f" (and {len(missing) - 1} more of {len(tars)})" if len(missing) > 1 else ""
        raise FileNotFoundError(f"webdataset tar not found: {missing[0]}{more}; check {where}")
    first: dict[str, str] = {}
    for tar in tars:
        other = first.setdefault(tar_stem(tar), tar)
        if other is not tar:
            raise ValueError(
                f"{where}: {other} and {tar} share the name {tar_stem(tar)!r}, and item ids "
                "(<tar stem>/<key>) would collide; give each tar once, with distinct names"
            )
    return tars


def _tars_at(url: str, where: str) -> list[str]:
    if is_remote(url):
        return [url]
    path = Path(url).expanduser()
    if path.is_dir():
        found = sorted(str(p) for p in path.glob("*.tar"))
        if not found:
            raise EmptyDataset(f"no .tar files in {path}: check {where}")
        return found
    if path.suffix == ".txt" and path.is_file():
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        return [
            line if is_remote(line) else str(path.parent / Path(line).expanduser())
            for line in lines
            if line and not line.startswith("#")
        ]
    return [str(path)]


def _exists(url: str, where: str) -> bool:
    if not is_remote(url):
        return Path(url).is_file()
    try:
        filesystem, path = _filesystem(url)
        return bool(filesystem.exists(path))
    except (ImportError, ValueError) as exc:  # fsspec has no filesystem for this protocol here
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"{where}: cannot read {url} ({first_line}); give local paths, or install the "
            "fsspec filesystem of this protocol"
        ) from None


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(url)


def open_binary(url: str) -> IO[bytes]:
    if is_remote(url):
        filesystem, path = _filesystem(url)
        return filesystem.open(path, "rb")
    return open(Path(url).expanduser(), "rb")


# -- reading one tar ------------------------------------------------------------------
@dataclass(frozen=True)
class TarDamage:
    """Where a tar stops being readable, and what tarfile said."""

    offset: int
    reason: str

    def __str__(self) -> str:
        return f"tar truncated/corrupt at byte {self.offset}: {self.reason}"


@dataclass
class TarSample:
    position: int  # the sample's index in its tar
    key: str
    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)  # extension → member

    def has(self) -> str:
        return ", ".join(self.members)


class TarReader:
    """One tar's samples in order, from its headers; a member's bytes only when asked for.

    Only members whose data is all there are given; where the tar stops
    being readable (cut short, a damaged header, no end-of-archive marker)
    is ``damage`` once ``samples()`` is exhausted.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.damage: TarDamage | None = None
        self._file: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> TarReader:
        self._file = open_binary(self.url)
        mode = "r:" if self.url.endswith(".tar") else "r:*"
        try:
            self._tar = tarfile.open(fileobj=self._file, mode=mode)  # type: ignore[call-overload]
        except TAR_ERRORS as exc:
            self.damage = TarDamage(0, _first_line(exc))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tar is not None:
            self._tar.close()
        if self._file is not None:
            self._file.close()

    def samples(self) -> Iterator[TarSample]:
        # webdataset imports torch: only here, so that --help does not wait for it
        from webdataset.tariterators import base_plus_ext

        current: TarSample | None = None
        for info in self._members():
            if not info.isreg() or META_MEMBER.match(info.name):
                continue
            key, extension = base_plus_ext(info.name)
            if key is None:
                continue
            if current is None or key != current.key:
                if current is not None:
                    yield current
                current = TarSample(0 if current is None else current.position + 1, key)
            current.members.setdefault(extension.lower(), info)
        if current is not None:
            yield current

    def _members(self) -> Iterator[tarfile.TarInfo]:
        """Every member whose data is all there: ``next()`` checks the previous one's before reading on."""
        tar, pending = self._tar, None
        if tar is None:
            return
        try:
            while (info := tar.next()) is not None:
                if pending is not None:
                    yield pending
                pending = info
        except TAR_ERRORS as exc:
            if pending is None:
                self.damage = TarDamage(tar.offset, _first_line(exc))
            else:
                self.damage = TarDamage(pending.offset, f"{pending.name}: {_first_line(exc)}")
            return
        if pending is not None:
            yield pending
        # tarfile ends quietly at a cut or garbled header; a whole tar ends with a zero block
        tar.fileobj.seek(tar.offset)
        if tar.fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
            self.damage = TarDamage(tar.offset, "no tar header and no end-of-archive marker here")

    def read(self, info: tarfile.TarInfo) -> bytes:
        return self.read_at(info.offset_data, info.size)

    def read_at(self, offset: int, size: int) -> bytes:
        if self._tar is None:
            raise OSError(f"{self.url} cannot be read any more: {self.damage}")
        stream = self._tar.fileobj
        stream.seek(offset)
        data = stream.read(size)
        if len(data) != size:
            raise OSError(
                f"{self.url}: {size} bytes expected at byte {offset}, {len(data)} found: "
                "the tar changed since it was listed"
            )
        return data


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


class TarWalk:
    """One tar's samples in order, a repeated key excepted; what was lost goes to ``problems``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples = 0  # samples read (the positions of its shard)
        self.problems: list[tuple[str, str]] = []

    def __iter__(self) -> Iterator[tuple[TarReader, TarSample]]:
        url, stem, first = self.url, tar_stem(self.url), {}
        with TarReader(url) as reader:
            for sample in reader.samples():
                self.samples = sample.position + 1
                earlier = first.setdefault(sample.key, sample.position)
                if earlier != sample.position:
                    self.problems.append(
                        (
                            f"{stem}/{sample.key}",
                            f"the key is repeated in {url} (samples {earlier} and "
                            f"{sample.position}): only the first is used",
                        )
                    )
                    continue
                yield reader, sample
        if reader.damage is not None:
            self.problems += lost_samples(url, set(first), reader.damage)


def lost_samples(url: str, listed: set[str], damage: TarDamage) -> list[tuple[str, str]]:
    """Error rows for what a damaged tar lost: each downloaded key of its img2dataset Parquet, or the tar."""
    stem = tar_stem(url)
    downloaded = downloaded_keys(url)
    if downloaded is None:
        return [
            (
                url.rsplit("/", 1)[-1],
                f"{damage}; the samples after it are lost ({url}, no {stem}.parquet beside it "
                "to name them)",
            )
        ]
    lost = [key for key in downloaded if key not in listed]
    if not lost:
        log.warning("%s: %s; every sample %s.parquet lists was read", url, damage, stem)
    reason = f"{damage}; {stem}.parquet lists this sample as downloaded, the tar lost it"
    return [(f"{stem}/{key}", reason) for key in lost]


def downloaded_keys(url: str) -> list[str] | None:
    """The ``key`` of every row with ``status == "success"`` in img2dataset's ``<stem>.parquet`` beside the tar."""
    if is_remote(url):
        return None
    manifest = Path(url).expanduser().with_name(f"{tar_stem(url)}.parquet")
    if not manifest.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(manifest).names
        table = pq.read_table(manifest, columns=[c for c in ("key", "status") if c in columns])
        keys = table.column("key").to_pylist()
    except (OSError, KeyError, pa.ArrowException) as exc:
        log.warning("%s: not an img2dataset table with a key column: %s", manifest, exc)
        return None
    if "status" not in columns:
        return [str(k) for k in keys]
    statuses = table.column("status").to_pylist()
    return [str(k) for k, s in zip(keys, statuses, strict=True) if s == "success"]


@dataclass(frozen=True)
class ImageListing:
    """Lists a tar's images (``list_tars`` runs it in a pool): where each sample's image lies."""

    image_keys: tuple[str, ...]
    where: str  # the dataset's options, named in messages

    def __call__(self, url: str) -> TarListing:
        stem, walk = tar_stem(url), TarWalk(url)
        ids, positions, offsets, sizes = [], [], [], []
        no_image: list[tuple[str, str]] = []
        for _, sample in walk:
            image = next((sample.members[k] for k in self.image_keys if k in sample.members), None)
            if image is None:
                keys = ", ".join(self.image_keys)
                no_image.append(
                    (
                        f"{stem}/{sample.key}",
                        f"no image (has: {sample.has()}); {self.where}.image_keys=[{keys}]",
                    )
                )
                continue
            ids.append(f"{stem}/{sample.key}")
            positions.append(sample.position)
            offsets.append(image.offset_data)
            sizes.append(image.size)
        table = pa.table(
            {
                "id": pa.array(ids, pa.string()),
                # 100M samples: 2.4 GB in int64, 1.6 GB with positions and sizes in int32
                "position": pa.array(positions, pa.int32()),
                "offset": pa.array(offsets, pa.int64()),
                "size": pa.array(sizes, pa.int32()),
            }
        )
        return TarListing(table, walk.samples, no_image + walk.problems)


# -- the image dataset ------------------------------------------------------------------
class WebDatasetImages(ImageDataset):
    """The images of WebDataset tars: each sample's first member among ``image_keys``.

    One tar is one shard (its positions: the samples' indices in it), read
    once by a loader, in order (``random_access = False``); ``get`` reads one
    image from its recorded offset (thumbnails, iteration). A sample without an image,
    a repeated key and what a damaged tar lost are error rows; an image that
    does not decode is an error of the loader, as for any source.
    """

    kind = "webdataset"
    random_access = False
    builds_together = True

    def __init__(
        self, name: str, urls: str | Sequence[str], image_keys: Sequence[str] = DEFAULT_IMAGE_KEYS
    ) -> None:
        super().__init__(name)
        if not urls:
            raise ValueError(
                f"datasets.{name}.urls is empty: give tars (a brace pattern "
                "'/data/{00000..00099}.tar', a list, a folder or a .txt file listing them)"
            )
        self.urls: str | list[str] = urls if isinstance(urls, str) else [str(u) for u in urls]
        self.image_keys = tuple(str(k).lower().lstrip(".") for k in image_keys)
        self._tars: list[str] = []
        self._counts = np.zeros(0, np.int64)  # samples per tar
        self._first = np.zeros(1, np.int64)  # each tar's first item, then the number of items
        self._positions = np.zeros(0, np.int64)  # per item: its sample's index in its tar
        self._offsets = np.zeros(0, np.int64)  # per item: where its image's bytes start
        self._sizes = np.zeros(0, np.int64)
        self._ids: pa.StringArray | None = None
        self._problems: list[tuple[str, str]] = []

    def build(self) -> None:
        where = f"datasets.{self.name}"
        tars = expand_urls(self.urls, f"{where}.urls")
        listings = list_tars(
            tars, ImageListing(self.image_keys, where), self.context, f"dataset {self.name}"
        )
        table = pa.concat_tables([listing.table for listing in listings])
        rows = [listing.table.num_rows for listing in listings]
        self._tars = tars
        self._counts = np.asarray([listing.samples for listing in listings], np.int64)
        self._first = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self._ids = table.column("id").combine_chunks()
        self._positions, self._offsets, self._sizes = (
            table.column(name).to_numpy() for name in ("position", "offset", "size")
        )
        self._problems = [problem for listing in listings for problem in listing.problems]
        log.info(
            "dataset %s: %d images in %d tars (%d samples unusable)",
            self.name,
            len(self._ids),
            len(tars),
            len(self._problems),
        )

    def _built(self) -> pa.StringArray:
        if self._ids is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        return self._ids

    def problems(self) -> list[tuple[str, str]]:
        return list(self._problems)

    def length(self) -> int | None:
        return None if self._ids is None else len(self._ids)

    def listing(self) -> tuple[int, str]:
        ids = self._built()
        return len(ids), fingerprint_arrays(ids)

    def item_ids(self) -> list[str]:
        return self._built().to_pylist()

    def shards(self, shard_size: int, unit: int = 0) -> list[Shard]:
        self._built()
        return [
            Shard(i, 0, int(count), label=tar.rsplit("/", 1)[-1])
            for i, (tar, count) in enumerate(zip(self._tars, self._counts, strict=True))
        ]

    def items(self, shard: Shard, start: int, stop: int) -> Iterator[tuple[int, ImageItem]]:
        ids = self._built()
        first, last = int(self._first[shard.index]), int(self._first[shard.index + 1])
        positions = self._positions[first:last]
        begin = first + int(np.searchsorted(positions, start))
        end = first + int(np.searchsorted(positions, stop))
        if begin == end:
            return
        with TarReader(self._tars[shard.index]) as reader:
            for item in range(begin, end):
                data = reader.read_at(int(self._offsets[item]), int(self._sizes[item]))
                yield int(self._positions[item]), ImageItem(ids[item].as_py(), data)

    def get(self, position: int) -> ImageItem:
        ids = self._built()
        tar = int(np.searchsorted(self._first, position, side="right")) - 1
        with TarReader(self._tars[tar]) as reader:
            data = reader.read_at(int(self._offsets[position]), int(self._sizes[position]))
        return ImageItem(ids[position].as_py(), data)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "urls": self.urls,
            "tars": len(self._tars),
            "image_keys": list(self.image_keys),
        }
