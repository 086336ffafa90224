"""A directory tree of image files: how users' own photos arrive."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from img_search.data.base import ImageDataset, ImageItem, fingerprint_arrays

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageFolderDataset(ImageDataset):
    """Every image file under ``path``; id = path relative to the root, with ``/`` separators.

    Files are listed once in ``build()`` and sorted, so every rank sees the same
    order and ids are stable across runs. Files with other extensions are
    ignored; hidden files and folders are skipped.
    """

    kind = "image_folder"

    def __init__(
        self,
        name: str,
        path: str,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        recursive: bool = True,
    ) -> None:
        super().__init__(name)
        if not path:
            raise ValueError(f"datasets.{name}.path is empty: give the folder of images")
        self.root = Path(path).expanduser()
        self.extensions = tuple(
            e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions
        )
        self.recursive = recursive
        # An Arrow array, not a list of str: forked loader workers would copy a
        # list's pages as they touch each object's refcount (GBs at 5M files).
        self._files: pa.StringArray | None = None

    def build(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self._files = pa.array(sorted(self._walk(self.root)), pa.string())

    def _walk(self, folder: Path) -> list[str]:
        found: list[str] = []
        stack = [str(folder)]
        visited = {os.path.realpath(folder)}  # symlinked folders may loop back
        root = str(self.root)
        while stack:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=True):
                        real = os.path.realpath(entry.path)
                        if self.recursive and real not in visited:
                            visited.add(real)
                            stack.append(entry.path)
                    elif os.path.splitext(entry.name)[1].lower() in self.extensions:
                        found.append(os.path.relpath(entry.path, root).replace(os.sep, "/"))
        return found

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
        }
