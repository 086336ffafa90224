"""Which rows of an image dataset are items: ids as strings, first occurrences, a wanted subset.

Written in Arrow, never a Python object per row: a dataset of 5 million
images is reduced to its items without a hash table of its ids. Used by the
🤗 image datasets (``hub``) and the Flickr30k caption dataset (``ids``,
``ids_file``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ID_TRANSFORMS = ("none", "stem")


def transform_ids(values: pa.Array | pa.ChunkedArray, transform: str) -> pa.ChunkedArray:
    """Ids as strings, in Arrow (no Python object per item, 5M ids or not).

    ``stem``: the file name without folders and its last suffix, as
    ``PurePosixPath(value).stem`` gives (``train/1000092795.jpg`` → ``1000092795``).
    """
    ids = pc.cast(values, pa.string())
    if transform == "stem":
        name = pc.replace_substring_regex(ids, pattern=r"^.*/", replacement="")
        ids = pc.replace_substring_regex(name, pattern=r"^(.+)\.[^.]+$", replacement=r"\1")
    return ids if isinstance(ids, pa.ChunkedArray) else pa.chunked_array([ids])


def rows_to_keep(ids: pa.ChunkedArray, dedupe: bool, wanted: set[str] | None) -> np.ndarray:
    """Which rows are items: the first row of each id (``dedupe``), and only ``wanted`` ids."""
    keep = np.ones(len(ids), dtype=bool)
    if dedupe and len(ids):
        # a stable sort puts each id's first row first among its equals (no hash table of
        # millions of strings, which Arrow's allocator would keep after use)
        order = pc.array_sort_indices(ids).to_numpy()
        ranked = ids.take(pa.array(order))
        repeated = pc.equal(ranked.slice(1), ranked.slice(0, len(ranked) - 1))
        later = np.flatnonzero(repeated.to_numpy(zero_copy_only=False)) + 1
        keep[order[later]] = False
    if wanted is not None:
        keep &= pc.is_in(ids, pa.array(sorted(wanted), pa.string())).to_numpy(zero_copy_only=False)
    return keep


def read_id_list(ids: Iterable[str] | None, ids_file: str | None) -> set[str] | None:
    """The optional subset of ids to keep, from config inline or a file with one id a line."""
    if ids is None and not ids_file:
        return None
    keep = {str(i) for i in ids or ()}
    if ids_file:
        file = Path(ids_file).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"id list file not found: {ids_file}")
        keep.update(line.strip() for line in file.read_text().splitlines() if line.strip())
    return keep
