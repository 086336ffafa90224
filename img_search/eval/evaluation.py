"""Benchmarks over embedding tables: caption↔image retrieval and INQUIRE-Rerank.

The metric definitions live in ``metrics``; this module only lines up rows:
captions with their images (joined on image id), INQUIRE queries with their
candidate images (joined on ``inat24_file_name``), and checks that both sides
were embedded by the same model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from img_search.eval.metrics import inquire_ap_at_k, inquire_rerank_metrics, recall_at_k
from img_search.store.captions import image_of_caption
from img_search.store.selection import TableSelection

log = logging.getLogger(__name__)


def check_same_identity(a: TableSelection, b: TableSelection) -> None:
    """Vectors of two tables are comparable only when one model made both."""
    fa, fb = a.identity.get("fingerprint"), b.identity.get("fingerprint")
    if fa and fb and fa != fb:
        from img_search.search.table_encoder import ModelMismatch  # torch: retrieval needs none

        raise ModelMismatch(
            f"{a.path} ({a.model_name}: {a.identity.get('checkpoint')}) and {b.path} "
            f"({b.model_name}: {b.identity.get('checkpoint')}) were embedded by different models"
        )


# -- caption ↔ image retrieval ------------------------------------------------


@dataclass
class RetrievalResult:
    images: int
    captions: int
    text_to_image: dict[int, float]
    image_to_text: dict[int, float]
    dropped_captions: int = 0  # captions whose image is not in the image table

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"images": self.images, "captions": self.captions}
        out.update({f"text_to_image_R@{k}": v for k, v in self.text_to_image.items()})
        out.update({f"image_to_text_R@{k}": v for k, v in self.image_to_text.items()})
        out["dropped_captions"] = self.dropped_captions
        return out


def caption_image_retrieval(
    images: TableSelection,
    captions: TableSelection,
    ks: Sequence[int] = (1, 5, 10),
    max_chunk_cells: int = 2**26,
) -> RetrievalResult:
    """Text→image and image→text Recall@K as CLIP_benchmark computes them.

    Only images with at least one caption take part (the benchmark's dataset
    is images with their captions); scores are computed for blocks of queries
    of at most ``max_chunk_cells`` scores, so 30k images × 150k captions fit
    in memory.
    """
    check_same_identity(images, captions)
    if "image_id" not in captions.extra:
        raise ValueError(f"{captions.path} is not a caption table (no image_id column)")
    owner = image_of_caption(images.ids, captions.extra["image_id"], captions.extra.get("image"))
    kept = owner >= 0
    dropped = int((~kept).sum())
    if dropped:
        log.warning("%d captions have no image in %s; left out", dropped, images.path)
    if not kept.any():
        raise ValueError(f"no caption of {captions.path} matches an image id of {images.path}")
    used_images = np.unique(owner[kept])
    image_vectors = images.vectors[used_images]
    caption_vectors = captions.vectors[kept]
    # caption → column of its image among the used images
    caption_image = np.searchsorted(used_images, owner[kept])
    n_captions, n_images = len(caption_vectors), len(used_images)

    t2i = {k: 0.0 for k in ks}
    chunk = max(1, max_chunk_cells // n_images)
    for start in range(0, n_captions, chunk):
        stop = min(start + chunk, n_captions)
        scores = caption_vectors[start:stop] @ image_vectors.T
        positives = np.zeros_like(scores, dtype=bool)
        positives[np.arange(stop - start), caption_image[start:stop]] = True
        for k, value in recall_at_k(scores, positives, ks).items():
            t2i[k] += value * (stop - start)
    i2t = {k: 0.0 for k in ks}
    chunk = max(1, max_chunk_cells // n_captions)
    for start in range(0, n_images, chunk):
        stop = min(start + chunk, n_images)
        scores = image_vectors[start:stop] @ caption_vectors.T
        positives = caption_image[None, :] == np.arange(start, stop)[:, None]
        for k, value in recall_at_k(scores, positives, ks).items():
            i2t[k] += value * (stop - start)
    return RetrievalResult(
        images=n_images,
        captions=n_captions,
        text_to_image={k: v / n_captions for k, v in t2i.items()},
        image_to_text={k: v / n_images for k, v in i2t.items()},
        dropped_captions=dropped,
    )


# -- INQUIRE-Rerank -------------------------------------------------------------


@dataclass
class InquireQuery:
    query: str
    candidates: list[str]  # inat24_file_name of each candidate, in dataset order
    relevant: list[int]


@dataclass
class InquireResult:
    split: str
    queries: int
    metrics: dict[str, float]  # means over queries
    per_query: list[dict[str, Any]] = field(default_factory=list)
    missing_candidates: int = 0


def group_queries(rows: Mapping[str, Sequence[Any]]) -> list[InquireQuery]:
    """(query, candidate) rows → one entry per query, in first-seen order."""
    queries: dict[str, InquireQuery] = {}
    for text, file_name, relevant in zip(
        rows["query"], rows["inat24_file_name"], rows["relevant"], strict=True
    ):
        entry = queries.setdefault(str(text), InquireQuery(str(text), [], []))
        entry.candidates.append(str(file_name))
        entry.relevant.append(int(relevant))
    return list(queries.values())


def inquire_rerank(
    split: str,
    queries: Sequence[InquireQuery],
    query_vectors: np.ndarray,
    images: TableSelection,
    ap_ks: Sequence[int] = (),
) -> InquireResult:
    """Score each query's candidates by cosine with its text vector, then the INQUIRE metrics.

    A candidate missing from the image table (it failed to embed) is ranked
    last (score −2, below any cosine) and counted in ``missing_candidates``.
    """
    row_of = {str(item): row for row, item in enumerate(images.ids)}
    per_query, missing = [], 0
    for query, vector in zip(queries, query_vectors, strict=True):
        rows = np.array([row_of.get(c, -1) for c in query.candidates])
        found = rows >= 0
        missing += int((~found).sum())
        scores = np.full(len(rows), -2.0, dtype=np.float32)
        scores[found] = images.vectors[rows[found]] @ vector
        y_true = np.asarray(query.relevant)
        values = inquire_rerank_metrics(y_true, scores)
        for k in ap_ks:
            values[f"rerank_AP@{k}"] = 100.0 * inquire_ap_at_k(
                y_true.astype(np.float64), scores.astype(np.float64), int(y_true.sum()), int(k)
            )
        per_query.append({"query": query.query, "candidates": len(rows), **values})
    if missing:
        log.warning("%s: %d candidates are not in %s; ranked last", split, missing, images.path)
    names = [k for k in per_query[0] if k not in ("query", "candidates")] if per_query else []
    means = {name: float(np.mean([q[name] for q in per_query])) for name in names}
    return InquireResult(split, len(per_query), means, per_query, missing)


def read_inquire_labels(path: str, split: str) -> list[InquireQuery]:
    """The (query, candidate, relevant) rows of one INQUIRE-Rerank split, images not decoded."""
    from img_search.data.hub_files import load_hf_dataset

    table = load_hf_dataset(path, [split]).select_columns(["query", "inat24_file_name", "relevant"])
    return group_queries(table.to_dict())
