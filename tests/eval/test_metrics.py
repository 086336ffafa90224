"""Retrieval metrics: INQUIRE AP / nDCG / MRR and CLIP_benchmark recall@k, checked by hand.

Every expected value is worked out in a comment. Notation: d(i) = 1 / log2(i + 1) is the
nDCG discount of rank i, so d(1) = 1, d(2) = 1/log2(3) = 0.6309297536, d(3) = 1/log2(4) = 0.5,
d(4) = 1/log2(5) = 0.4306765581.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from img_search.eval.metrics import (
    inquire_ap_at_k,
    inquire_mrr,
    inquire_ndcg,
    inquire_rerank_metrics,
    recall_at_k,
)

D2 = 1 / math.log2(3)
D3 = 1 / math.log2(4)
D4 = 1 / math.log2(5)


# --- reference: the INQUIRE definitions, kept as given (inputs sorted by score, descending) ---


def reference_compute_ap(y_true, y_score, k, count_pos):
    y_true_k = y_true[:k]
    y_score_k = y_score[:k]
    if y_true_k.sum() == 0:
        return 0
    ap = average_precision_score(y_true_k, y_score_k)
    return ap * y_true_k.sum() / min(count_pos, k)


def reference_compute_ndcg(y_true, y_score, k, count_pos):
    y_true_k = y_true[:k]
    y_score_k = y_score[:k]
    n_missing = count_pos - y_true_k.sum()
    y_true_k = np.concatenate([y_true_k, np.ones(int(n_missing))])
    y_score_k = np.concatenate([y_score_k, -100 * np.ones(int(n_missing))])
    return ndcg_score([y_true_k], [y_score_k], k=k)


def reference_mrr(y_true, y_score):
    order = np.flip(np.argsort(y_score))
    y_true = np.take(y_true, order)
    first = np.argmax(y_true == 1) if (y_true == 1).any() else None
    return 0 if first is None else 1 / (first + 1)


def rerank(y_true: list[int], y_score: list[float]) -> dict[str, float]:
    return inquire_rerank_metrics(np.array(y_true), np.array(y_score))


# --- INQUIRE rerank: AP and nDCG over all candidates (× 100), MRR ---


def test_perfect_ranking_scores_100_ap_and_ndcg_and_mrr_1() -> None:
    # Ranked: [1, 1, 0, 0]. AP = (1/1 + 2/2) / 2 = 1, × hits/min(count_pos, k) = 2/2 → 100.
    # nDCG: DCG = d(1) + d(2) = IDCG → 100. First item relevant → MRR 1.
    m = rerank([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1])
    assert m["AP"] == pytest.approx(100.0)
    assert m["nDCG"] == pytest.approx(100.0)
    assert m["MRR"] == pytest.approx(1.0)


def test_all_candidates_relevant_score_100_in_any_order() -> None:
    # Every threshold has precision 1 → AP 1 × 3/3; any order of three 1s is ideal → nDCG 100.
    m = rerank([1, 1, 1], [0.2, 0.7, 0.5])
    assert m["AP"] == pytest.approx(100.0)
    assert m["nDCG"] == pytest.approx(100.0)
    assert m["MRR"] == pytest.approx(1.0)


@pytest.mark.filterwarnings("error")
def test_no_relevant_candidate_gives_zeros_without_warnings() -> None:
    # No positive: AP short-circuits to 0; sklearn's ndcg_score returns 0 for an all-zero
    # y_true (DCG = IDCG = 0); MRR has no first hit → 0.
    assert ndcg_score([[0.0, 0.0, 0.0]], [[0.9, 0.5, 0.1]]) == 0.0
    m = rerank([0, 0, 0], [0.9, 0.5, 0.1])
    assert m == {"AP": 0.0, "nDCG": 0.0, "MRR": 0.0}


def test_one_relevant_at_rank_three_scores_ap_a_third_ndcg_half_mrr_a_third() -> None:
    # Ranked: [0, 0, 1, 0]. AP = precision at rank 3 = 1/3, × 1/min(1, 4) → 100/3.
    # nDCG = d(3) / d(1) = 1/log2(4) = 0.5 → 50. MRR = 1/3.
    m = rerank([0, 0, 1, 0], [0.9, 0.8, 0.7, 0.6])
    assert m["AP"] == pytest.approx(100 / 3)
    assert m["nDCG"] == pytest.approx(50.0)
    assert m["MRR"] == pytest.approx(1 / 3)


def test_two_relevant_interleaved_are_ranked_by_score_whatever_the_input_order() -> None:
    # Scores sort the candidates to [1, 0, 1, 0] (0.8, 0.6, 0.4, 0.2).
    # AP = (1/1 + 2/3) / 2 = 5/6 = 0.8333… × 2/2 → 83.33…
    # nDCG = (d(1) + d(3)) / (d(1) + d(2)) = 1.5 / 1.6309297536 = 0.9197207891 → 91.97…
    m = rerank([0, 1, 0, 1], [0.2, 0.8, 0.6, 0.4])
    assert m["AP"] == pytest.approx(100 * 5 / 6)
    assert m["nDCG"] == pytest.approx(100 * 1.5 / (1 + D2))
    assert m["nDCG"] == pytest.approx(91.97207891481876)
    assert m["MRR"] == pytest.approx(1.0)


def test_a_single_candidate_scores_full_marks_if_relevant_else_zero() -> None:
    # sklearn's ndcg_score refuses one document; one item is trivially ranked perfectly.
    assert rerank([1], [0.3]) == {"AP": 100.0, "nDCG": 100.0, "MRR": 1.0}
    assert rerank([0], [0.3]) == {"AP": 0.0, "nDCG": 0.0, "MRR": 0.0}


# --- AP@k / nDCG@k with a cut-off (full-rank protocol, k = 50 there; k = 3 here) ---


def test_ap_and_ndcg_at_k_with_fewer_positives_than_k_divide_by_the_positives() -> None:
    # Ranked: [0, 1, 0, 0, 0], count_pos = 1, k = 3 → top 3 = [0, 1, 0].
    # AP = precision at rank 2 = 1/2, × hits/min(count_pos, k) = 1/min(1, 3) = 1 → 0.5.
    # nDCG@3 = d(2) / d(1) = 0.6309297536 (no missing positives).
    y_true = np.array([0, 1, 0, 0, 0])
    y_score = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert inquire_ap_at_k(y_true, y_score, count_pos=1, k=3) == pytest.approx(0.5)
    assert inquire_ndcg(y_true, y_score, count_pos=1, k=3) == pytest.approx(D2)

    # Ranked [0, 1, 1, 0, 0], count_pos = 2 < k = 3: AP = (1/2 + 2/3) / 2 = 7/12, × 2/2.
    y_true = np.array([0, 1, 1, 0, 0])
    assert inquire_ap_at_k(y_true, y_score, count_pos=2, k=3) == pytest.approx(7 / 12)


def test_ap_and_ndcg_at_k_charge_positives_beyond_k_in_any_input_order() -> None:
    # Ranked: [1, 0, 1, 1, 0, 1]; count_pos = 5 (one relevant image was never retrieved); k = 3.
    # Top 3 = [1, 0, 1]: sklearn AP = (1/1 + 2/3) / 2 = 5/6; hits = 2; min(count_pos, k) = 3
    #   → AP@3 = 5/6 × 2/3 = 5/9 = 0.5555…
    # nDCG: 5 − 2 = 3 pseudo-positives at score −100 are appended after the top 3:
    #   DCG@3 = d(1) + d(3) = 1.5; IDCG@3 = d(1) + d(2) + d(3) = 2.1309297536 → 0.7039180890.
    y_true = np.array([1, 0, 1, 1, 0, 1])
    y_score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert inquire_ap_at_k(y_true, y_score, count_pos=5, k=3) == pytest.approx(5 / 9)
    assert inquire_ndcg(y_true, y_score, count_pos=5, k=3) == pytest.approx(1.5 / (1 + D2 + D3))
    assert inquire_ndcg(y_true, y_score, count_pos=5, k=3) == pytest.approx(0.7039180890341347)
    # The cut-off is applied after ranking: the same candidates shuffled give the same numbers.
    shuffle = np.array([4, 0, 5, 2, 1, 3])
    assert inquire_ap_at_k(y_true[shuffle], y_score[shuffle], 5, 3) == pytest.approx(5 / 9)
    assert inquire_ndcg(y_true[shuffle], y_score[shuffle], 5, 3) == pytest.approx(0.70391808903)


def test_no_positive_in_top_k_scores_zero_ap_and_ndcg() -> None:
    # Top 2 of [0, 0, 1] is all misses: AP 0; nDCG: DCG@2 = 0 with one pseudo-positive → 0.
    y_true = np.array([0, 0, 1])
    y_score = np.array([0.9, 0.8, 0.7])
    assert inquire_ap_at_k(y_true, y_score, count_pos=1, k=2) == 0.0
    assert inquire_ndcg(y_true, y_score, count_pos=1, k=2) == 0.0


# --- ties: sklearn treats equal scores as one threshold / averages gains over the tie ---


def test_a_two_way_tie_halves_ap_averages_the_gains_and_mrr_takes_the_later() -> None:
    # y_true = [1, 0], both scored 0.5: a single threshold with precision 1/2, recall 1 → AP 1/2.
    # nDCG: the tie's mean gain 1/2 sits at ranks 1 and 2: DCG = (d(1) + d(2)) / 2
    #   = (1 + 0.6309297536) / 2 = 0.8154648768; IDCG = 1 → 81.546…
    # MRR: np.flip(np.argsort([0.5, 0.5])) = [1, 0] → the later (irrelevant) one first → 1/2.
    m = rerank([1, 0], [0.5, 0.5])
    assert m["AP"] == pytest.approx(50.0)
    assert m["nDCG"] == pytest.approx(100 * (1 + D2) / 2)
    assert m["nDCG"] == pytest.approx(81.54648767857287)
    assert m["MRR"] == pytest.approx(0.5)
    # Mirror image: AP and nDCG are order-free, MRR now finds the relevant one first.
    m = rerank([0, 1], [0.5, 0.5])
    assert m["AP"] == pytest.approx(50.0)
    assert m["nDCG"] == pytest.approx(100 * (1 + D2) / 2)
    assert m["MRR"] == pytest.approx(1.0)


def test_a_tie_inside_a_ranking_is_charged_its_end_of_group_precision() -> None:
    # y_true [1, 1, 0, 1], scores [0.9, 0.5, 0.5, 0.1]: thresholds 0.9 | 0.5 (two items) | 0.1.
    #   0.9: P = 1/1, R = 1/3;  0.5: P = 2/3, R = 2/3;  0.1: P = 3/4, R = 3/3.
    #   AP = Σ ΔR·P = (1 + 2/3 + 3/4) / 3 = 29/36 = 0.80555… (broken either way it would be
    #   11/12 or 29/36; sklearn charges the tie its end-of-group precision).
    # nDCG: DCG = d(1) + (1 + 0)/2 · (d(2) + d(3)) + d(4) = 1 + 0.5653 + 0.4307 = 1.9961;
    #   IDCG = d(1) + d(2) + d(3) = 2.1309 → 0.9367467095.
    m = rerank([1, 1, 0, 1], [0.9, 0.5, 0.5, 0.1])
    assert m["AP"] == pytest.approx(100 * 29 / 36)
    dcg = 1 + 0.5 * (D2 + D3) + D4
    assert m["nDCG"] == pytest.approx(100 * dcg / (1 + D2 + D3))
    assert m["nDCG"] == pytest.approx(93.67467095119258)
    assert m["MRR"] == pytest.approx(1.0)


def test_mrr_ties_put_the_later_candidate_first() -> None:
    # np.argsort([0.5, 0.5, 0.1]) = [2, 0, 1]; flipped [1, 0, 2]: candidate 1 before candidate 0.
    # (Kept to ≤ 3 items: numpy's default argsort is not stable in general — with AVX-512 it
    # reorders ties from 4 items on — so "later first" is only guaranteed for such tiny inputs;
    # inquire_mrr makes the same call as the reference, so it agrees with it either way.)
    scores = np.array([0.5, 0.5, 0.1])
    assert inquire_mrr(np.array([1, 0, 0]), scores) == pytest.approx(1 / 2)
    assert inquire_mrr(np.array([0, 1, 0]), scores) == pytest.approx(1.0)
    assert inquire_mrr(np.array([0, 0, 1]), scores) == pytest.approx(1 / 3)
    assert inquire_mrr(np.array([0, 0, 0]), scores) == 0.0


# --- randomized cross-check against the reference definitions ---


def test_metrics_equal_the_reference_on_random_queries_with_ties() -> None:
    rng = np.random.default_rng(20240607)
    for _ in range(200):
        n = int(rng.integers(2, 31))
        y_score = np.round(rng.random(n), 1)  # 11 distinct values → many ties
        y_true = (rng.random(n) < rng.random()).astype(np.int64)
        order = np.argsort(-y_score, kind="stable")
        sorted_true, sorted_score = y_true[order], y_score[order]

        # Rerank: k = all candidates, count_pos = positives among them.
        k, count_pos = n, int(y_true.sum())
        m = inquire_rerank_metrics(y_true, y_score)
        ap = 100 * reference_compute_ap(sorted_true, sorted_score, k, count_pos)
        ndcg = 100 * reference_compute_ndcg(sorted_true, sorted_score, k, count_pos)
        assert m["AP"] == pytest.approx(ap, rel=0, abs=1e-12)
        assert m["nDCG"] == pytest.approx(ndcg, rel=0, abs=1e-12)
        assert m["MRR"] == pytest.approx(reference_mrr(y_true, y_score), rel=0, abs=1e-12)
        # INQUIRE's rerank script passes the candidates unsorted; with k = all that is the same.
        assert m["AP"] == pytest.approx(
            100 * reference_compute_ap(y_true, y_score, k, count_pos), rel=0, abs=1e-12
        )
        assert m["nDCG"] == pytest.approx(
            100 * reference_compute_ndcg(y_true, y_score, k, count_pos), rel=0, abs=1e-12
        )

        # Full-rank style: a cut-off k and relevant images outside the candidate list.
        k = int(rng.integers(2, n + 1))
        count_pos = int(y_true.sum()) + int(rng.integers(0, 4))
        expected_ap = reference_compute_ap(sorted_true, sorted_score, k, count_pos)
        expected_ndcg = reference_compute_ndcg(sorted_true, sorted_score, k, count_pos)
        got_ap = inquire_ap_at_k(y_true, y_score, count_pos, k)
        got_ndcg = inquire_ndcg(y_true, y_score, count_pos, k)
        assert got_ap == pytest.approx(expected_ap, rel=0, abs=1e-12)
        assert got_ndcg == pytest.approx(expected_ndcg, rel=0, abs=1e-12)


# --- CLIP_benchmark recall@k ---

# 3 images × 4 captions; image 0 has captions 0 and 1, image 1 caption 2, image 2 caption 3.
SCORES = np.array(
    [
        [0.1, 0.7, 0.9, 0.3],
        [0.4, 0.2, 0.6, 0.6],
        [0.8, 0.5, 0.6, 0.1],
    ]
)
POSITIVES = np.array(
    [
        [True, True, False, False],
        [False, False, True, False],
        [False, False, False, True],
    ]
)


def test_recall_at_k_image_to_text_is_the_share_of_first_hits_within_k() -> None:
    # Image 0: order c2 (0.9), c1 (0.7), c3, c0 → its second caption c1 is hit at rank 2.
    # Image 1: c2 and c3 tie at 0.6; ties go by candidate order, c2 first → rank 1.
    # Image 2: order c0 (0.8), c2 (0.6), c1 (0.5), c3 (0.1) → rank 4.
    # First-hit ranks (2, 1, 4): R@1 = 1/3, R@2 = 2/3, R@3 = 2/3, R@4 = 3/3;
    # k = 10 > 4 candidates: every query with a positive is a hit → 1.
    got = recall_at_k(SCORES, POSITIVES, ks=[1, 2, 3, 4, 10])
    assert got == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 4: 1.0, 10: 1.0})


def test_recall_at_k_text_to_image_is_the_share_of_first_hits_within_k() -> None:
    # Rows are captions, one positive image each (the transposes of the matrices above).
    # c0 [0.1, 0.4, 0.8] → i2, i1, i0: positive i0 at rank 3.
    # c1 [0.7, 0.2, 0.5] → i0 first: rank 1.
    # c2 [0.9, 0.6, 0.6] → i0, then the tie i1/i2 in candidate order: positive i1 at rank 2.
    # c3 [0.3, 0.6, 0.1] → i1, i0, i2: positive i2 at rank 3.
    # First-hit ranks (3, 1, 2, 3): R@1 = 1/4, R@2 = 2/4, R@3 = 4/4, R@5 (> 3 candidates) = 1.
    got = recall_at_k(SCORES.T, POSITIVES.T, ks=[1, 2, 3, 5])
    assert got == pytest.approx({1: 0.25, 2: 0.5, 3: 1.0, 5: 1.0})


def test_recall_at_k_query_without_positive_is_a_miss() -> None:
    # CLIP_benchmark divides hits by 0 positives → NaN, and NaN > 0 is False: a miss.
    scores = np.array([[0.2, 0.9], [0.5, 0.1]])
    positives = np.array([[False, True], [False, False]])
    assert recall_at_k(scores, positives, ks=[1, 2]) == pytest.approx({1: 0.5, 2: 0.5})


def test_recall_at_k_refuses_scores_and_positives_of_different_shapes() -> None:
    with pytest.raises(ValueError, match=r"^scores \(3, 4\) and positives \(3, 3\) differ$"):
        recall_at_k(SCORES, POSITIVES[:, :3], ks=[1])
    with pytest.raises(ValueError, match=r"^scores \(3, 4\) and positives \(4, 3\) differ$"):
        recall_at_k(SCORES, POSITIVES.T, ks=[1])
