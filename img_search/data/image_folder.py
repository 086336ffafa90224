"""A directory tree of image files: how users' own photos arrive."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from img_search.data.base import EmptyDataset, ImageDataset, ImageItem, fingerprint_arrays

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageFolderDataset(ImageDataset):
    """Every image file under ``path``; id = path relative to the root, with ``/`` separators.

    Files are listed once in ``build()`` and sorted, so every rank sees the same
    order and ids are stable across runs. Files with other extensions are
    ignored; hidden files and folders are skipped.

    One bad entry never stops the listing: a symlink loop, an unreadable
    folder, a name that is not UTF-8, or a symlink that leaves the folder
    (followed only with ``follow_links=true``) becomes one error row, its id
    the path with undecodable bytes escaped.
    """

    kind = "image_folder"

    def __init__(
        self,
        name: str,
        path: str,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        recursive: bool = True,
        follow_links: bool = False,
    ) -> None:
        super().__init__(name)
        if not path:
            raise ValueError(f"datasets.{name}.path is empty: give the folder of images")
        self.root = Path(path).expanduser()
        self.extensions = tuple(
            e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions
        )
        self.recursive = recursive
        self.follow_links = follow_links
        # An Arrow array, not a list of str: forked loader workers would copy a
        # list's pages as they touch each object's refcount (GBs at 5M files).
        self._files: pa.StringArray | None = None
        self._problems: list[tuple[str, str]] = []

    def build(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        listing = FolderListing(self.root, self.extensions, self.recursive, self.follow_links)
        files = listing.walk()
        if not files:
            raise EmptyDataset(
                f"no images under {self.root} (extensions {' '.join(self.extensions)}"
                + (
                    f"; {len(listing.problems)} entries could not be read"
                    if listing.problems
                    else ""
                )
                + f"): check datasets.{self.name}.path and datasets.{self.name}.extensions"
            )
        self._files = pa.array(sorted(files), pa.string())
        self._problems = sorted(listing.problems)

    def problems(self) -> list[tuple[str, str]]:
        return list(self._problems)

    def length(self) -> int | None:
        return None if self._files is None else len(self._files)

    def get(self, position: int) -> ImageItem:
        if self._files is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        relative = self._files[position].as_py()
        return ImageItem(id=relative, source=str(self.root / relative))

    def listing(self) -> tuple[int, str]:
        if self._files is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        return len(self._files), fingerprint_arrays(self._files)

    def item_ids(self) -> list[str]:
        if self._files is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        return self._files.to_pylist()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.root.resolve()),
            "extensions": list(self.extensions),
            "follow_links": self.follow_links,
        }


class FolderListing:
    """One walk of an image folder: the relative paths of its images, and the entries it could not use."""

    def __init__(
        self, root: Path, extensions: tuple[str, ...], recursive: bool, follow_links: bool
    ) -> None:
        self.root, self.extensions = str(root), extensions
        self.recursive, self.follow_links = recursive, follow_links
        self.real_root = os.path.realpath(root)
        self.problems: list[tuple[str, str]] = []

    def walk(self) -> list[str]:
        found: list[str] = []
        stack = [self.root]
        visited = {self.real_root}  # symlinked folders may loop back
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as listing:  # real folders before links to them
                    entries = sorted(listing, key=lambda e: (e.is_symlink(), e.name))
            except OSError as exc:
                self._problem(folder, f"cannot list this folder: {exc.strerror or exc}")
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    kind = self._kind(entry)
                except OSError as exc:
                    self._problem(entry.path, f"cannot read: {exc.strerror or exc}")
                    continue
                if kind == "dir":
                    real = os.path.realpath(entry.path)
                    if self.recursive and real not in visited:
                        visited.add(real)
                        stack.append(entry.path)
                elif kind == "file" and self._is_image(entry.name):
                    relative = self._relative(entry.path)
                    if _utf8(relative):
                        found.append(relative)
                    else:
                        self._problem(entry.path, "the file name is not valid UTF-8: rename it")
        return found

    def _kind(self, entry: os.DirEntry[str]) -> str | None:
        """``dir``, ``file`` or None (skipped); a symlink leaving the folder is reported here."""
        is_dir = entry.is_dir(follow_symlinks=True)  # OSError on a symlink loop
        if entry.is_symlink() and not self.follow_links:
            target = os.path.realpath(entry.path)
            if os.path.commonpath([self.real_root, target]) != self.real_root:
                if is_dir or self._is_image(entry.name):
                    self._problem(
                        entry.path,
                        f"a symlink to {_printable(target)}, outside the folder: not followed "
                        "(datasets.<name>.follow_links=true follows it)",
                    )
                return None
        return "dir" if is_dir else "file"

    def _is_image(self, name: str) -> bool:
        return os.path.splitext(name)[1].lower() in self.extensions

    def _relative(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def _problem(self, path: str, reason: str) -> None:
        self.problems.append((_printable(self._relative(path)), reason))


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by os as lone surrogates
        return False
    return True


def _printable(name: str) -> str:
    """A file name as text whatever its bytes: undecodable ones as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
