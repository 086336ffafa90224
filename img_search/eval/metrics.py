"""Retrieval metrics, each defined exactly as the benchmark it is named after computes it.

Numbers that go into papers must match the reference implementations to the
last digit, ties included, so the INQUIRE metrics call scikit-learn the way
the INQUIRE code does, and caption↔image recall follows LAION's
CLIP_benchmark. Every function works on plain numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, ndcg_score


def ranking(scores: np.ndarray) -> np.ndarray:
    """Indices from best to worst score; equal scores keep their input order (stable)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def inquire_ap_at_k(y_true: np.ndarray, y_score: np.ndarray, count_pos: int, k: int) -> float:
    """AP@k as INQUIRE computes it (inquire-benchmark/INQUIRE, ``ap_at_k``).

    Candidates are ranked by ``y_score``; of the top ``k``,
    ``sklearn.metrics.average_precision_score`` is taken and multiplied by
    ``(relevant in top k) / min(count_pos, k)``, so positives that never
    made the top ``k`` count as misses. 0 when the top ``k`` holds no positive.
    Rerank task: ``k`` = all candidates, ``count_pos`` = positives among them.
    Full-rank task: ``k = 50``, ``count_pos`` = all relevant images of the query.
    """
    y_true, y_score = _ranked(y_true, y_score)
    top_true, top_score = y_true[:k], y_score[:k]
    hits = int(top_true.sum())
    if hits == 0 or count_pos == 0:
        return 0.0
    return float(average_precision_score(top_true, top_score) * hits / min(count_pos, k))


def inquire_ndcg(y_true: np.ndarray, y_score: np.ndarray, count_pos: int, k: int) -> float:
    """nDCG@k as INQUIRE computes it (``ndcg_at_k``).

    The positives missing from the ranked top ``k`` (``count_pos`` minus those
    in it) are appended as pseudo-items with relevance 1 and score −100, as if
    ranked last, then ``sklearn.metrics.ndcg_score(..., k=k)``; scikit-learn
    averages over tied scores.
    """
    y_true, y_score = _ranked(y_true, y_score)
    top_true, top_score = y_true[:k], y_score[:k]
    missing = max(0, count_pos - int(top_true.sum()))
    expanded_true = np.concatenate([top_true, np.ones(missing)])
    expanded_score = np.concatenate([top_score, np.full(missing, -100.0)])
    if len(expanded_true) < 2:  # scikit-learn needs two documents; one item is ranked perfectly
        return float(expanded_true.sum() > 0)
    return float(ndcg_score([expanded_true], [expanded_score], k=k))


def inquire_mrr(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Reciprocal rank of the first relevant item (INQUIRE ``mrr``), 0 without one.

    The order is ``np.flip(np.argsort(y_score))`` as in the reference, so among
    equal scores the later candidate comes first.
    """
    y_true = np.asarray(y_true)
    order = np.flip(np.argsort(np.asarray(y_score)))
    hits = np.flatnonzero(y_true[order] == 1)
    return float(1.0 / (hits[0] + 1)) if len(hits) else 0.0


def inquire_rerank_metrics(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """One INQUIRE-Rerank query: AP and nDCG over all its candidates (× 100), and MRR.

    ``count_pos`` is the number of relevant candidates and ``k`` the number of
    candidates, as the benchmark's rerank evaluation sets them.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_score = np.asarray(y_score, dtype=np.float64)
    k, count_pos = len(y_true), int(y_true.sum())
    return {
        "AP": 100.0 * inquire_ap_at_k(y_true, y_score, count_pos, k),
        "nDCG": 100.0 * inquire_ndcg(y_true, y_score, count_pos, k),
        "MRR": inquire_mrr(y_true, y_score),
    }


def recall_at_k(scores: np.ndarray, positives: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """CLIP_benchmark recall@k: share of queries with at least one positive in their top k.

    ``scores`` is (queries × candidates), ``positives`` a boolean matrix of the
    same shape. Text→image: rows are captions, one positive each. Image→text:
    rows are images, every caption of the image is a positive. Ranking is by
    score, ties broken by candidate order.
    """
    scores = np.asarray(scores)
    positives = np.asarray(positives, dtype=bool)
    if scores.shape != positives.shape:
        raise ValueError(f"scores {scores.shape} and positives {positives.shape} differ")
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked_positive = np.take_along_axis(positives, order, axis=1)
    first_hit = np.where(ranked_positive.any(axis=1), ranked_positive.argmax(axis=1), np.inf)
    return {k: float(np.mean(first_hit < k)) for k in ks}


def _ranked(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    order = ranking(y_score)
    return y_true[order], y_score[order]
