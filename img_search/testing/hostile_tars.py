"""Tars that real LAION-scale work meets, each with a few ordinary samples around the odd one.

``write_hostile_tars(root)`` writes one tar per case of issue 24: a GNU sparse
member (made by ``tar --sparse --format=gnu``, as users make them), a member
name that is not UTF-8, hard and symbolic links, an image member of 2.6 GB
(a hole on disk: it costs nothing), a JSON caption holding an escaped lone
surrogate, a deeply nested JSON caption, a gzip bomb (a 2 MB ``.tar.gz`` of
2 GiB), a PAX-header bomb and a tar to be cut between listing and reading.
Every sample has a ``.jpg``, a ``.txt`` and an img2dataset-like ``.json``
(``{"caption": ...}``), unless its case says otherwise; ``HostileTar`` says
which ids each tar holds and which of them an image run and a caption run
(``caption_key=json:caption``) must report as errors.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from img_search.testing.fixtures import jpeg_bytes, synthetic_image, write_img2dataset_tar

BLOCK = tarfile.BLOCKSIZE
#: The image member of the ``oversize`` tar (over any sensible limit, and over 2**31).
OVERSIZE_BYTES = 2_600_000_000
#: What the gzip bomb's image member expands to.
BOMB_BYTES = 2 << 30
#: Distinct keywords in the PAX bomb's global header, and its samples.
PAX_KEYWORDS, PAX_SAMPLES = 20_000, 600


@dataclass
class HostileTar:
    """One case: the tar, every sample id it holds, and those each kind of run reports as errors."""

    path: Path
    ids: list[str]
    image_errors: set[str] = field(default_factory=set)
    caption_errors: set[str] = field(default_factory=set)


def ordinary(key: str, seed: int) -> dict:
    caption = f"photo {seed} of a hostile tar"
    return {
        "key": key,
        "jpg": jpeg_bytes(synthetic_image(seed, (40, 30))),
        "txt": caption,
        "json": {"key": key, "caption": caption, "status": "success"},
    }


def member(name: str, data: bytes = b"", **fields: object) -> bytes:
    """One member as tar bytes: its header (GNU format) and its data padded to whole blocks."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o444
    for key, value in fields.items():
        setattr(info, key, value)
    padding = -len(data) % BLOCK
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + data + bytes(padding)


def sample_bytes(sample: dict) -> bytes:
    parts = []
    for extension, value in sample.items():
        if extension == "key":
            continue
        data = json.dumps(value) if isinstance(value, dict) else value
        data = data.encode() if isinstance(data, str) else data
        parts.append(member(f"{sample['key']}.{extension}", data))
    return b"".join(parts)


END = bytes(2 * BLOCK)


def write_hostile_tars(root: str | Path) -> dict[str, HostileTar]:
    """Every case under ``root`` (stems ``h-<case>``), by case name."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    writers = (
        _sparse,
        _non_utf8,
        _links,
        _oversize,
        _surrogate,
        _nested,
        _gzip_bomb,
        _pax_bomb,
        _to_truncate,
    )
    return {w.__name__.strip("_"): w(root) for w in writers}


def _ids(stem: str, keys: list[str]) -> list[str]:
    return [f"{stem}/{k}" for k in keys]


def _sparse(root: Path) -> HostileTar:
    """``tar --sparse --format=gnu`` of an image file with holes (a JPEG, a hole, a tail)."""
    if shutil.which("tar") is None or "GNU tar" not in _run(["tar", "--version"]):
        raise RuntimeError("GNU tar is needed to make a sparse member")
    path, keys = root / "h-sparse.tar", ["0000", "0001", "0002"]
    with tempfile.TemporaryDirectory() as folder:
        names = []
        for n, key in enumerate(keys):
            for extension, value in ordinary(key, 100 + n).items():
                if extension == "key":
                    continue
                data = json.dumps(value) if isinstance(value, dict) else value
                data = data.encode() if isinstance(data, str) else data
                with open(Path(folder) / f"{key}.{extension}", "wb") as file:
                    file.write(data)
                    if (key, extension) == ("0001", "jpg"):
                        write_holes(file)
                names.append(f"{key}.{extension}")
        _run(["tar", "--sparse", "--format=gnu", "-cf", str(path), "-C", folder, *names])
    return HostileTar(path, _ids("h-sparse", keys))


def write_holes(file: io.BufferedWriter) -> None:
    """After the image: two holes of 1 MiB with a little data between and after them."""
    for tail in (b"middle", b"end"):
        file.seek(1 << 20, io.SEEK_CUR)
        file.write(tail)


def _run(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _non_utf8(root: Path) -> HostileTar:
    path, stem = root / "h-non_utf8.tar", "h-non_utf8"
    bad = ordinary("caf\udce9", 200)  # written as the byte 0xe9, not UTF-8
    path.write_bytes(
        sample_bytes(ordinary("0000", 201))
        + sample_bytes(bad)
        + sample_bytes(ordinary("0002", 202))
        + END
    )
    ids = [f"{stem}/0000", f"{stem}/caf\\xe9", f"{stem}/0002"]
    return HostileTar(path, ids, {ids[1]}, {ids[1]})


def _links(root: Path) -> HostileTar:
    """0001.jpg a hard link to 0000.jpg; 0002.jpg and 0002.json symbolic links."""
    path, stem = root / "h-links.tar", "h-links"
    first = ordinary("0000", 300)
    hard = {**ordinary("0001", 301)}
    soft = ordinary("0002", 302)
    parts = [sample_bytes(first)]
    parts.append(member("0001.jpg", type=tarfile.LNKTYPE, linkname="0000.jpg"))
    parts.append(sample_bytes({"key": "0001", "txt": hard["txt"], "json": hard["json"]}))
    parts.append(member("0002.jpg", type=tarfile.SYMTYPE, linkname="0000.jpg"))
    parts.append(member("0002.txt", soft["txt"].encode()))
    parts.append(member("0002.json", type=tarfile.SYMTYPE, linkname="0000.json"))
    parts.append(sample_bytes(ordinary("0003", 303)))
    path.write_bytes(b"".join(parts) + END)
    ids = _ids(stem, ["0000", "0001", "0002", "0003"])
    return HostileTar(path, ids, {ids[1], ids[2]}, {ids[2]})


def _oversize(root: Path) -> HostileTar:
    """An image member of 2.6 GB between two ordinary samples; its data is a hole on disk."""
    path, stem = root / "h-oversize.tar", "h-oversize"
    big = ordinary("0001", 401)
    header = tarfile.TarInfo("0001.jpg")
    header.size, header.mtime = OVERSIZE_BYTES, 1_700_000_000
    with open(path, "wb") as file:
        file.write(sample_bytes(ordinary("0000", 400)))
        file.write(header.tobuf(tarfile.GNU_FORMAT))
        file.seek(OVERSIZE_BYTES + (-OVERSIZE_BYTES % BLOCK), io.SEEK_CUR)
        file.write(sample_bytes({"key": "0001", "txt": big["txt"], "json": big["json"]}))
        file.write(sample_bytes(ordinary("0002", 402)) + END)
    ids = _ids(stem, ["0000", "0001", "0002"])
    return HostileTar(path, ids, {ids[1]})


def _surrogate(root: Path) -> HostileTar:
    """A caption ``"\\ud83d"`` (an escaped lone surrogate), as scraped alt texts hold them."""
    path, stem = root / "h-surrogate.tar", "h-surrogate"
    odd = ordinary("0001", 501)
    odd["json"] = '{"key": "0001", "caption": "smile \\ud83d please", "status": "success"}'
    path.write_bytes(
        sample_bytes(ordinary("0000", 500))
        + sample_bytes(odd)
        + sample_bytes(ordinary("0002", 502))
        + END
    )
    ids = _ids(stem, ["0000", "0001", "0002"])
    return HostileTar(path, ids, set(), {ids[1]})


def _nested(root: Path) -> HostileTar:
    path, stem = root / "h-nested.tar", "h-nested"
    odd = ordinary("0001", 601)
    odd["json"] = "[" * 100_000 + "]" * 100_000
    path.write_bytes(
        sample_bytes(ordinary("0000", 600))
        + sample_bytes(odd)
        + sample_bytes(ordinary("0002", 602))
        + END
    )
    ids = _ids(stem, ["0000", "0001", "0002"])
    return HostileTar(path, ids, set(), {ids[1]})


def _gzip_bomb(root: Path) -> HostileTar:
    """A 2 MB ``.tar.gz`` whose second image is 2 GiB of zeros: gzip members, one a 16 MiB chunk, repeated."""
    path, stem = root / "h-gzip_bomb.tar.gz", "h-gzip_bomb"
    bomb = ordinary("0001", 701)
    header = tarfile.TarInfo("0001.jpg")
    header.size, header.mtime = BOMB_BYTES, 1_700_000_000
    chunk = 16 << 20
    with open(path, "wb") as file:
        file.write(
            gzip.compress(sample_bytes(ordinary("0000", 700)) + header.tobuf(tarfile.GNU_FORMAT))
        )
        zeros = gzip.compress(bytes(chunk), compresslevel=9, mtime=0)
        for _ in range(BOMB_BYTES // chunk):
            file.write(zeros)
        rest = {"key": "0001", "txt": bomb["txt"], "json": bomb["json"]}
        file.write(gzip.compress(sample_bytes(rest) + sample_bytes(ordinary("0002", 702)) + END))
    ids = _ids(stem, ["0000", "0001", "0002"])
    return HostileTar(path, ids, {ids[1]})


def _pax_bomb(root: Path) -> HostileTar:
    """A global PAX header of 20,000 keywords before 600 small samples, one with a 2 MiB header of its own."""
    path, stem = root / "h-pax_bomb.tar", "h-pax_bomb"
    keywords = {f"bomb.{i}": "x" for i in range(PAX_KEYWORDS)}
    image = jpeg_bytes(synthetic_image(800, (16, 12)))
    keys = [f"{i:04d}" for i in range(PAX_SAMPLES)]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, pax_headers=keywords) as tar:
        for n, key in enumerate(keys):
            for extension, data in (
                ("jpg", image),
                ("json", json.dumps({"caption": key}).encode()),
            ):
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mtime = len(data), 1_700_000_000
                if n == 5 and extension == "jpg":
                    info.pax_headers = {"comment": "x" * (2 << 20)}
                tar.addfile(info, io.BytesIO(data))
    ids = _ids(stem, keys)
    return HostileTar(path, ids, {ids[5]})


def _to_truncate(root: Path) -> HostileTar:
    """Five samples (and img2dataset's Parquet naming them); ``truncate_tar`` cuts it in the third."""
    path = root / "h-truncated.tar"
    write_img2dataset_tar(path, [ordinary(f"{i:04d}", 900 + i) for i in range(5)])
    return HostileTar(path, _ids("h-truncated", [f"{i:04d}" for i in range(5)]))


def truncate_tar(tar: HostileTar) -> list[str]:
    """Cut the tar in the middle of its third image; returns the ids from there on (lost)."""
    with tarfile.open(tar.path) as archive:
        cut = archive.getmember("0002.jpg")
    with open(tar.path, "r+b") as file:
        file.truncate(cut.offset_data + cut.size // 2)
    return tar.ids[2:]
