"""Which tars a WebDataset option names: brace patterns, folders, ``.txt`` lists, remote URLs (fsspec)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from braceexpand import braceexpand

from img_search.data.base import EmptyDataset
from img_search.failures import first_line

TAR_SUFFIX = re.compile(r"\.(tar(\.\w+)?|tgz)$")


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
        raise ValueError(
            f"{where}: cannot read {url} ({first_line(exc)}); give local paths, or install the "
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
