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


def test_metrics_agree_with_trec_eval_on_random_rankings():
    """1,000 random rankings with graded (1-3) and multiple (1-5) relevant candidates, against pytrec_eval
    (trec_eval's own code), to 1e-6. Differences that are the MMEB-V2 harness's definitions, on purpose:
    - map@k: the harness divides AP@k by min(#relevant, k); trec_eval's map_cut_k divides by #relevant
      (checked through that factor);
    - mrr@k: the harness cuts at k; trec_eval's recip_rank has no cut-off (given the run cut at k);
    - ndcg_exponential@k (gain 2^rel - 1) is not in trec_eval: it equals trec_eval's ndcg_cut_k (gain = rel)
      on the grades mapped to 2^rel - 1;
    - f1@k is not in trec_eval: the harmonic mean of its P_k and recall_k.
    The harness also pairs graded labels with their scores through a set (a known hazard: labels can meet
    the wrong score); here each label keeps its own grade, which is what trec_eval computes."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(0)
    ks = (1, 5, 10)
    qrels, qrels_exp, runs, runs_cut, ours = {}, {}, {}, {k: {} for k in ks}, {}
    for q in range(1000):
        n = int(rng.integers(5, 40))
        docs = [f"d{i}" for i in range(n)]
        relevant = rng.choice(n, size=int(rng.integers(1, min(5, n) + 1)), replace=False)
        grades = {docs[i]: int(rng.integers(1, 4)) for i in relevant}
        ranking = [docs[i] for i in rng.permutation(n)]
        qid = f"q{q}"
        qrels[qid] = grades
        qrels_exp[qid] = {d: 2 ** g - 1 for d, g in grades.items()}
        runs[qid] = {d: float(n - r) for r, d in enumerate(ranking)}  # distinct scores: no tie rules involved
        for k in ks:
            runs_cut[k][qid] = {d: float(n - r) for r, d in enumerate(ranking[:k])}
        ours[qid] = (query_metrics(ranking, grades, ks), len(grades))
    measures = {"P.1,5,10", "recall.1,5,10", "ndcg_cut.1,5,10", "success.1,5,10", "map_cut.1,5,10"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(runs)
    trec_exp = pytrec_eval.RelevanceEvaluator(qrels_exp, {"ndcg_cut.1,5,10"}).evaluate(runs)
    rr = {k: pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(runs_cut[k]) for k in ks}
    for qid, (m, n_rel) in ours.items():
        t = trec[qid]
        for k in ks:
            assert m[f"hit@{k}"] == pytest.approx(t[f"success_{k}"], abs=1e-6)
            assert m[f"precision@{k}"] == pytest.approx(t[f"P_{k}"], abs=1e-6)
            assert m[f"recall@{k}"] == pytest.approx(t[f"recall_{k}"], abs=1e-6)
            assert m[f"ndcg_linear@{k}"] == pytest.approx(t[f"ndcg_cut_{k}"], abs=1e-6)
            assert m[f"ndcg_exponential@{k}"] == pytest.approx(trec_exp[qid][f"ndcg_cut_{k}"], abs=1e-6)
            assert m[f"map@{k}"] == pytest.approx(t[f"map_cut_{k}"] * n_rel / min(n_rel, k), abs=1e-6)
            assert m[f"mrr@{k}"] == pytest.approx(rr[k].get(qid, {}).get("recip_rank", 0.0), abs=1e-6)
            p, r = t[f"P_{k}"], t[f"recall_{k}"]
            assert m[f"f1@{k}"] == pytest.approx(0.0 if p + r == 0 else 2 * p * r / (p + r), abs=1e-6)
