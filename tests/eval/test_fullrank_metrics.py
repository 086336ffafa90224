"""INQUIRE-Fullrank metrics in numpy against scikit-learn and INQUIRE's own code, to 1e-9.

``reference`` is INQUIRE's ``compute_retrieval_metrics`` (src/metrics.py) kept as given,
scikit-learn calls included; the random cases cover ties in scores (also across rank k),
no hits, every positive retrieved (hits == count_pos), and count_pos > k.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from img_search.eval.fullrank_metrics import (
    average_precision,
    fullrank_query_metrics,
    mean_metrics,
    ndcg,
)

TOLERANCE = 1e-9


# --- reference: inquire-benchmark/INQUIRE src/metrics.py, kept as given ---


def reference_ndcg_at_k(y_true, y_pred, count_pos, k):
    num_pos_unknown = count_pos - sum(y_true)
    y_true_expanded = y_true.tolist() + [1] * num_pos_unknown
    y_pred_expanded = y_pred.tolist() + [-100] * num_pos_unknown
    return ndcg_score([y_true_expanded], [y_pred_expanded], k=k)


def reference_ap_at_k(y_true, y_pred, count_pos, k):
    unnormalized_ap = average_precision_score(y_true[:k], y_pred[:k]) if sum(y_true[:k]) > 0 else 0
    return unnormalized_ap * y_true[:k].sum() / np.amin([count_pos, k])


def reference_mrr(y_true, y_pred, count_pos):
    order = np.flip(np.argsort(y_pred))
    for i in range(len(y_true)):
        if y_true[order][i] == 1:
            return 1 / (i + 1)
    return 0.0


def reference(y_true, y_pred, count_pos):
    """``compute_retrieval_metrics``: (precision, recall, AP, nDCG, MRR)."""
    k = len(y_true)
    precision = sum(y_true) / k
    recall = sum(y_true) / count_pos
    ap = reference_ap_at_k(y_true, y_pred, count_pos, k)
    ndcg_value = reference_ndcg_at_k(y_true, y_pred, count_pos, k)
    mrr_score = reference_mrr(y_true, y_pred, count_pos)
    return precision, recall, ap, ndcg_value, mrr_score


# --- random cases ---


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """A query's top k as a search returns it: bool relevance, scores non-increasing."""
    k = int(rng.choice([2, 3, 5, 10, 50, int(rng.integers(2, 80))]))
    rate = rng.choice([0.0, 0.05, 0.3, 0.7, 1.0])
    y_true = rng.random(k) < rate
    if rng.random() < 0.5:  # few distinct scores: ties everywhere, also across rank k
        scores = rng.integers(0, int(rng.integers(1, 6)), k) / 4 - 0.3
    else:
        scores = rng.normal(0.2, 0.05, k).astype(np.float32).astype(np.float64)
    scores = -np.sort(-scores, kind="stable")
    hits = int(y_true.sum())
    extra = int(rng.choice([0, 0, 1, int(rng.integers(0, 3 * k + 1))]))
    return y_true, scores, max(1, hits + extra)


CASES = [random_case(np.random.default_rng(seed)) for seed in range(800)]


def test_the_random_cases_include_no_hits_all_hits_missing_positives_and_ties() -> None:
    hits = [int(t.sum()) for t, _, _ in CASES]
    tied = [len(np.unique(s)) < len(s) for _, s, _ in CASES]
    assert sum(h == 0 for h in hits) > 50
    assert sum(h == c for h, (_, _, c) in zip(hits, CASES, strict=True) if h) > 100
    assert sum(c > len(t) for t, _, c in CASES) > 50
    assert sum(tied) > 250 and sum(h > 0 and t for h, t in zip(hits, tied, strict=True)) > 150


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn: a y_true without positives
def test_fullrank_metrics_equal_the_inquire_reference_on_random_cases() -> None:
    for y_true, scores, count_pos in CASES:
        k = len(y_true)
        got = fullrank_query_metrics(y_true, scores, count_pos)
        precision, recall, ap, ndcg_value, mrr = reference(y_true, scores, count_pos)
        assert got[f"precision@{k}"] == pytest.approx(100 * precision, abs=TOLERANCE)
        assert got[f"recall@{k}"] == pytest.approx(recall, abs=TOLERANCE)
        assert got[f"AP@{k}"] == pytest.approx(100 * ap, abs=TOLERANCE)
        assert got[f"nDCG@{k}"] == pytest.approx(100 * ndcg_value, abs=TOLERANCE)
        if len(np.unique(scores)) == k:  # MRR: the reference orders equal scores its own way
            assert got["MRR"] == pytest.approx(mrr, abs=TOLERANCE)
        else:
            first = np.flatnonzero(y_true)
            assert got["MRR"] == (1 / (first[0] + 1) if len(first) else 0.0)


def test_average_precision_and_ndcg_equal_scikit_learn_in_any_order() -> None:
    """Unsorted inputs, ties, graded relevance for nDCG, k below and above the length."""
    rng = np.random.default_rng(1)
    for _ in range(400):
        n = int(rng.integers(2, 60))
        scores = rng.integers(0, int(rng.integers(1, 8)), n) / 7
        if rng.random() < 0.3:
            scores = rng.random(n)
        relevant = rng.random(n) < rng.random()
        relevant[rng.integers(n)] = True
        assert average_precision(relevant, scores) == pytest.approx(
            average_precision_score(relevant, scores), abs=TOLERANCE
        )
        gains = rng.integers(0, 4, n) * (rng.random() < 0.5) + relevant
        k = int(rng.integers(1, n + 5))
        assert ndcg(gains, scores, k) == pytest.approx(
            ndcg_score([gains], [scores], k=k), abs=TOLERANCE
        )


def test_a_tie_and_missing_positives_give_the_worked_example_values() -> None:
    # Top 4 ranked [1, 1, 0, 1], scores [0.9, 0.5, 0.5, 0.1], count_pos 5 (two never retrieved).
    # AP: thresholds 0.9 (P 1/1), 0.5 (P 2/3, one relevant), 0.1 (P 3/4) → (1 + 2/3 + 3/4) / 3
    #   = 29/36, × hits / min(count_pos, k) = 3/4 → 29/48.
    # nDCG@4: gains with the tie averaged: 1·d1 + ½(d2 + d3) + 1·d4; the 2 missing positives sit
    #   at ranks 5-6, past k; ideal 4 relevant → d1 + d2 + d3 + d4.
    d = [1 / math.log2(r + 1) for r in range(1, 5)]
    got = fullrank_query_metrics(np.array([1, 1, 0, 1]), np.array([0.9, 0.5, 0.5, 0.1]), 5)
    assert got["AP@4"] == pytest.approx(100 * 29 / 48)
    assert got["nDCG@4"] == pytest.approx(100 * (d[0] + (d[1] + d[2]) / 2 + d[3]) / sum(d))
    assert got["MRR"] == 1.0
    assert got["precision@4"] == 75.0
    assert got["recall@4"] == pytest.approx(3 / 5)


def test_no_hits_score_zero_and_a_single_relevant_item_full_ndcg() -> None:
    assert fullrank_query_metrics(np.zeros(3, bool), np.array([0.3, 0.2, 0.1]), 4) == {
        "AP@3": 0.0,
        "nDCG@3": 0.0,
        "MRR": 0.0,
        "precision@3": 0.0,
        "recall@3": 0.0,
    }
    # k = 1 and nothing missing: one document, which ndcg_score refuses; ranked perfectly.
    assert fullrank_query_metrics(np.array([1]), np.array([0.5]), 1)["nDCG@1"] == 100.0
    assert fullrank_query_metrics(np.array([1]), np.array([0.5]), 3)["nDCG@1"] == 100.0
    assert fullrank_query_metrics(np.array([0]), np.array([0.5]), 1)["nDCG@1"] == 0.0


def test_fullrank_metrics_refuse_what_the_reference_cannot_compute() -> None:
    with pytest.raises(ValueError, match="count_pos 0"):
        fullrank_query_metrics(np.array([0, 0]), np.array([0.2, 0.1]), 0)
    with pytest.raises(ValueError, match="count_pos 1"):
        fullrank_query_metrics(np.array([1, 1]), np.array([0.2, 0.1]), 1)
    with pytest.raises(ValueError, match="0/1"):
        fullrank_query_metrics(np.array([2, 0]), np.array([0.2, 0.1]), 2)
    with pytest.raises(ValueError, match="one score per item"):
        fullrank_query_metrics(np.array([1, 0]), np.array([0.2]), 2)


def test_mean_metrics_average_each_metric_over_the_queries() -> None:
    rows = [
        fullrank_query_metrics(np.array([1, 0]), np.array([0.9, 0.1]), 1),
        fullrank_query_metrics(np.array([0, 1]), np.array([0.9, 0.1]), 2),
    ]
    means = mean_metrics(rows)
    assert means["MRR"] == pytest.approx((1 + 1 / 2) / 2)
    assert means["precision@2"] == pytest.approx(50.0)
    assert means["recall@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert means["AP@2"] == pytest.approx((100 + 100 / 2 * 1 / 2) / 2)
    assert mean_metrics([]) == {}
