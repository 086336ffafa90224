"""INQUIRE-Fullrank metrics of one query's top k, in numpy, equal to the reference to 1e-9.

The reference is ``compute_retrieval_metrics(y_true, y_pred, count_pos)`` in
inquire-benchmark/INQUIRE ``src/metrics.py``, called by ``src/eval_fullrank.py``
with the top k retrieved images of a query: ``y_true[i]`` whether the i-th is
relevant, ``y_pred[i]`` its score, ``count_pos`` the number of annotated
relevant images of the query (also those never retrieved, or missing from
the table). With ``k = len(y_true)`` and ``hits = sum(y_true)``:

- precision = hits / k;
- recall = hits / count_pos;
- AP = ``sklearn.metrics.average_precision_score(y_true, y_pred)`` × hits /
  min(count_pos, k), or 0 without hits (``average_precision``);
- nDCG: count_pos − hits pseudo-items of relevance 1 and score −100 are
  appended (the positives not retrieved, as if ranked last), then
  ``sklearn.metrics.ndcg_score([y_true], [y_pred], k=k)`` (``ndcg``);
- MRR = 1 / rank of the first relevant image, 0 without one.

``eval_fullrank.py`` reports per query precision, AP and nDCG × 100 and MRR
as a fraction, and their means over queries; recall (which it does not
print) stays a fraction here (``fullrank_query_metrics``, ``mean_metrics``).

Ties in scores are treated as scikit-learn treats them: AP takes one
threshold per distinct score (a tie counts at the precision reached after
the whole tied group), nDCG averages the gains of a tied group over its
positions (``ignore_ties=False``, its default), also where the group
straddles rank k. MRR is the one place where the order of tied images
matters: the reference re-sorts by ``np.flip(np.argsort(y_pred))``, whose
order among equal scores is that of numpy's unstable sort; here the ranks
are by decreasing score, equal scores in the order given (the search's
order: ties by lower row), the same as the reference whenever the scores
are distinct.

Where the reference fails, this is defined: ``count_pos`` must be at least 1
and at least ``hits`` (the reference divides by zero, or pads a negative
number of items); with one item in all (k = 1, nothing missing) nDCG is 1 for
a hit and 0 otherwise, where ``ndcg_score`` refuses a single document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

#: the score the reference gives the relevant images that were not retrieved
MISSING_SCORE = -100.0


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """``sklearn.metrics.average_precision_score`` for 0/1 relevance (at least one 1), ties included.

    Thresholds are the distinct scores from the highest down; each adds
    (its relevant items / all relevant) × (precision over every item scored
    at or above it): AP = Σ ΔR · P, without interpolation.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    order = np.argsort(-y_score, kind="stable")
    scores, relevant = y_score[order], y_true[order]
    ends = np.append(np.flatnonzero(np.diff(scores)), len(scores) - 1)  # last item of each score
    true_positives = np.cumsum(relevant)[ends]
    precision = true_positives / (ends + 1)
    recall_step = np.diff(true_positives, prepend=0.0) / true_positives[-1]
    return float(np.sum(recall_step * precision))


def ndcg(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    """``sklearn.metrics.ndcg_score([y_true], [y_score], k=k)``: tie-averaged DCG@k / ideal DCG@k.

    The discount of rank r (from 1) is 1 / log2(r + 1) up to rank k, 0 after;
    a group of equal scores gets its mean gain at each of its ranks. The
    ideal orders the gains from the highest. 0 when nothing is relevant.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    discount = 1 / (np.log(np.arange(len(y_true)) + 2) / np.log(2))  # scikit-learn's expression
    discount[k:] = 0
    ideal = float(np.sort(y_true)[::-1] @ discount)
    if ideal == 0:
        return 0.0
    _, group, counts = np.unique(-y_score, return_inverse=True, return_counts=True)
    mean_gain = np.bincount(group, weights=y_true, minlength=len(counts)) / counts
    discount_sums = np.diff(np.cumsum(discount)[np.cumsum(counts) - 1], prepend=0.0)
    return float(mean_gain @ discount_sums) / ideal


def fullrank_query_metrics(
    y_true: np.ndarray, y_score: np.ndarray, count_pos: int
) -> dict[str, float]:
    """One query's metrics over its top k, ``k = len(y_true)``, in the reference's units.

    ``y_true`` (0/1 or bool) and ``y_score`` are the top k in rank order, best
    first. Keys: ``AP@k``, ``nDCG@k``, ``precision@k`` (× 100), ``recall@k``
    and ``MRR`` (fractions), k written out (``AP@50``).
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    k = len(y_true)
    if k == 0 or y_score.shape != (k,) or y_true.ndim != 1:
        raise ValueError(
            f"y_true {y_true.shape} and y_score {y_score.shape}: one score per item, k >= 1"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must be 0/1 (or bool) relevance")
    y_true = y_true.astype(np.float64)
    hits = int(y_true.sum())
    if count_pos < max(1, hits):
        raise ValueError(
            f"count_pos {count_pos}: a query needs at least 1 positive and {hits} hits"
        )
    ap = average_precision(y_true, y_score) * hits / min(count_pos, k) if hits else 0.0
    missing = count_pos - hits
    padded_true = np.concatenate([y_true, np.ones(missing)])
    padded_score = np.concatenate([y_score, np.full(missing, MISSING_SCORE)])
    first = np.flatnonzero(y_true[np.argsort(-y_score, kind="stable")])
    return {
        f"AP@{k}": 100 * ap,
        f"nDCG@{k}": 100 * ndcg(padded_true, padded_score, k),
        "MRR": 1 / (first[0] + 1) if hits else 0.0,
        f"precision@{k}": 100 * hits / k,
        f"recall@{k}": hits / count_pos,
    }


def mean_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over the queries' rows (all rows carry the same keys)."""
    rows = list(rows)
    if not rows:
        return {}
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}
