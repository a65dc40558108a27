"""Rank metrics on hand-made rankings: definitions of the MMEB-V2 harness, ties, multiple positives."""

import math

import numpy as np
import pytest

from embedrl.eval.metrics import evaluate_rankings, evaluate_scores, query_metrics, rank_scores

L3 = math.log2(3)


def test_single_positive_at_rank_two():
    m = query_metrics(["a", "b", "c", "d", "e", "f"], {"b": 1})
    assert m["hit@1"] == 0 and m["hit@5"] == 1
    assert m["precision@1"] == 0 and m["precision@5"] == pytest.approx(0.2)
    assert m["recall@5"] == 1
    assert m["f1@5"] == pytest.approx(2 * 0.2 / 1.2)
    assert m["map@5"] == pytest.approx(0.5) and m["mrr@5"] == pytest.approx(0.5)
    assert m["mrr@1"] == 0
    assert m["ndcg_linear@5"] == pytest.approx(1 / L3)
    assert m["ndcg_exponential@5"] == pytest.approx(1 / L3)  # binary: both gains are 1


def test_multiple_positives():
    m = query_metrics(["a", "x", "b", "y", "c", "z"], {"a": 1, "b": 1, "c": 1})
    assert m["precision@5"] == pytest.approx(3 / 5)
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@5"] == 1
    assert m["f1@1"] == pytest.approx(0.5)
    assert m["map@1"] == 1  # normalised by min(#relevant, k) = 1
    assert m["map@5"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert m["mrr@5"] == 1
    assert m["ndcg_linear@5"] == pytest.approx((1 + 1 / 2 + 1 / math.log2(6)) / (1 + 1 / L3 + 1 / 2))


def test_average_precision_is_normalised_by_min_of_relevant_and_k():
    relevant = {c: 1 for c in "abcdef"}
    m = query_metrics(list("abcdefg"), relevant)
    assert m["map@5"] == 1.0  # 5 hits / min(6, 5), not 5 / 6
    assert m["map@10"] == 1.0
    assert m["recall@5"] == pytest.approx(5 / 6)


def test_graded_ndcg_linear_and_exponential():
    m = query_metrics(["d2", "d1", "x"], {"d1": 2, "d2": 1})
    assert m["ndcg_linear@5"] == pytest.approx((1 + 2 / L3) / (2 + 1 / L3))
    assert m["ndcg_exponential@5"] == pytest.approx((1 + 3 / L3) / (3 + 1 / L3))
    assert m["ndcg_linear@1"] == pytest.approx(1 / 2)
    assert m["hit@1"] == 1  # any grade > 0 is relevant


def test_zero_grades_are_not_relevant_and_empty_relevance_scores_zero():
    m = query_metrics(["a", "b"], {"a": 0, "b": 1})
    assert m["hit@1"] == 0 and m["recall@5"] == 1
    assert all(v == 0 for v in query_metrics(["a"], {}).values())


def test_ties_keep_candidate_order():
    scores = np.array([0.5, 0.9, 0.9, 0.1])
    assert rank_scores(scores).tolist() == [1, 2, 0, 3]
    # the later of two tied candidates does not get the hit
    assert evaluate_scores(scores[None], [{2: 1.0}])["hit@1"] == 0
    assert evaluate_scores(scores[None], [{1: 1.0}])["hit@1"] == 1


def test_rank_scores_rows_top_and_nan_last():
    scores = np.array([[0.1, np.nan, 0.3], [0.2, 0.2, 0.2]])
    assert rank_scores(scores).tolist() == [[2, 0, 1], [0, 1, 2]]
    assert rank_scores(scores, top=1).tolist() == [[2], [0]]


def test_dataset_score_is_the_mean_over_queries():
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.2, 0.9], [0.3, 0.2, 0.1]])
    out = evaluate_scores(scores, [{0: 1}, {1: 1}, {2: 1}])
    # ranks of the positive: 1, 2, 3
    assert out["hit@1"] == pytest.approx(1 / 3)
    assert out["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert out["ndcg_linear@5"] == pytest.approx((1 + 1 / L3 + 1 / 2) / 3)
    assert list(out)[:3] == ["hit@1", "hit@5", "hit@10"]  # the harness's key order
    assert len(out) == 8 * 3


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        evaluate_rankings([["a"]], [])
