"""Captions and their images: the join of a caption table to an image table of the same photos.

Evaluation (caption ↔ image retrieval) and the server (a caption hit shows
its photo) both line captions up with image rows this way.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

import numpy as np

log = logging.getLogger(__name__)


def image_of_caption(
    image_ids: np.ndarray, caption_image_ids: np.ndarray, caption_images: np.ndarray | None = None
) -> np.ndarray:
    """For each caption, the row of its image (−1 if absent).

    Captions carry the image file (``birds/1000092795.jpg``) and its stem
    (``1000092795``); image tables carry the item id, which is the stem for
    Flickr30k and the relative path for image folders. A caption matches the
    image whose id equals its file, else its stem, else whose id's stem
    equals its stem — the last only where that stem names one image: two
    images ``birds/1.jpg`` and ``cats/1.jpg`` are never guessed between.
    """
    exact = {str(item): row for row, item in enumerate(image_ids)}
    by_stem: dict[str, list[int]] = {}
    for row, item in enumerate(image_ids):
        by_stem.setdefault(PurePosixPath(str(item)).stem, []).append(row)
    files = caption_images if caption_images is not None else [None] * len(caption_image_ids)
    rows, ambiguous = [], 0
    for file, stem in zip(files, caption_image_ids, strict=True):
        row = exact.get(str(file)) if file is not None else None
        if row is None:
            row = exact.get(str(stem))
        if row is None:
            candidates = by_stem.get(str(stem), [])
            ambiguous += len(candidates) > 1
            row = candidates[0] if len(candidates) == 1 else None
        rows.append(-1 if row is None else row)
    if ambiguous:
        log.warning("%d captions match several images by file stem; left out", ambiguous)
    return np.array(rows, dtype=np.int64)
