"""Rank-based retrieval metrics, defined exactly as the MMEB-V2 harness defines them.

One module shared by the evaluation runners, the index and the benchmarks. Everything works
on plain Python / numpy: a *ranking* is a list of candidate ids (best first) and a
*relevance* is a dict id -> graded relevance (> 0 means relevant; binary data uses 1.0).

Definitions (at cut-off k, per query; a dataset score is the mean over its queries). They
follow the official harness, TIGER-AI-Lab/VLM2Vec `src/utils/eval_utils/metrics.py`
(`RankingMetrics`), so our numbers mean what the leaderboard's numbers mean:

  hit@k        1 if any relevant candidate is in the top k, else 0
  precision@k  (# relevant in top k) / k
  recall@k     (# relevant in top k) / (# relevant)
  f1@k         2 P R / (P + R), 0 when both are 0
  map@k        sum over relevant hits at rank i <= k of (hits so far / i), divided by
               min(# relevant, k)  -- the harness normalises AP@k by min(R, k), not by R
  mrr@k        1 / rank of the first relevant candidate within the top k, else 0
  ndcg_linear@k       DCG with gain = rel, discount log2(rank + 1), over the ideal DCG of
                      the query's relevant grades sorted descending (top k)
  ndcg_exponential@k  the same with gain = 2**rel - 1

With binary relevance the two NDCG variants coincide. A query with no relevant candidate
scores 0 on every metric (the readers drop such queries and count them, see readers.py).
Metric keys are spelled like the harness's score files: `hit@1`, `ndcg_linear@5`, ...

Ties. Candidates with equal scores keep their candidate order (a *stable* descending sort,
`rank_scores`). The harness uses `np.argsort(-scores)` (numpy's default quicksort, which
is insertion-sort-stable on short rows such as MMEB's local candidate lists but
unspecified on long ones); we make the stable order the rule so results are reproducible.
Note the consequence for local datasets, whose gold candidate comes first: a model that
scores gold and a negative exactly equal gets the hit. `tied_at_1` counts the queries where
the top score is shared, so such degenerate cases are visible in the score file.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
# Order of keys in a score file (the harness's order).
METRIC_NAMES: tuple[str, ...] = (
    "hit", "ndcg_linear", "ndcg_exponential", "precision", "recall", "f1", "map", "mrr")


def rank_scores(scores: np.ndarray, top: int | None = None) -> np.ndarray:
    """Candidate indices by descending score, ties in candidate order; rows for a 2-D input.

    NaN scores rank last. `top` keeps only the first `top` columns.
    """
    scores = np.asarray(scores, dtype=np.float64)
    keys = np.where(np.isnan(scores), np.inf, -scores)
    order = np.argsort(keys, axis=-1, kind="stable")
    return order if top is None else order[..., :top]


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def query_metrics(ranking: Sequence[Hashable], relevance: Mapping[Hashable, float],
                  ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """All metrics at every k for one query. `ranking` needs at least max(ks) entries to be exact."""
    rel = {c: float(r) for c, r in relevance.items() if r > 0}
    out: dict[str, float] = {}
    n_rel = len(rel)
    ideal = sorted(rel.values(), reverse=True)
    for k in ks:
        top = list(ranking[:k])
        grades = [rel.get(c, 0.0) for c in top]
        hits = sum(1 for g in grades if g > 0)
        if n_rel == 0:
            for name in METRIC_NAMES:
                out[f"{name}@{k}"] = 0.0
            continue
        precision = hits / k
        recall = hits / n_rel
        ap, seen = 0.0, 0
        rr = 0.0
        for i, g in enumerate(grades):
            if g > 0:
                seen += 1
                ap += seen / (i + 1)
                if rr == 0.0:
                    rr = 1.0 / (i + 1)
        out[f"hit@{k}"] = 1.0 if hits else 0.0
        out[f"ndcg_linear@{k}"] = _dcg(grades) / _dcg(ideal[:k])
        out[f"ndcg_exponential@{k}"] = (_dcg([2.0 ** g - 1 for g in grades])
                                        / _dcg([2.0 ** g - 1 for g in ideal[:k]]))
        out[f"precision@{k}"] = precision
        out[f"recall@{k}"] = recall
        out[f"f1@{k}"] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        out[f"map@{k}"] = ap / min(n_rel, k)
        out[f"mrr@{k}"] = rr
    return out


def mean_metrics(per_query: Sequence[Mapping[str, float]], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Average per-query metric dicts, keys ordered like the harness's score files."""
    keys = [f"{name}@{k}" for name in METRIC_NAMES for k in ks]
    if not per_query:
        return {key: 0.0 for key in keys}
    return {key: float(np.mean([q[key] for q in per_query])) for key in keys}


def evaluate_rankings(rankings: Sequence[Sequence[Hashable]], relevances: Sequence[Mapping[Hashable, float]],
                      ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Dataset-level metrics: the mean over queries of `query_metrics`."""
    if len(rankings) != len(relevances):
        raise ValueError(f"{len(rankings)} rankings but {len(relevances)} relevance dicts")
    return mean_metrics([query_metrics(r, rel, ks) for r, rel in zip(rankings, relevances, strict=True)], ks)


def evaluate_scores(scores: np.ndarray, relevances: Sequence[Mapping[int, float]],
                    ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Metrics from a (queries x candidates) score matrix; relevance keys are column indices."""
    order = rank_scores(scores, top=max(ks))
    return evaluate_rankings([list(row) for row in order], relevances, ks)


def main_metric_value(scores: Mapping[str, object], metric: str) -> float | None:
    """The value of `metric` in a score dict, or None when absent / not a number."""
    value = scores.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
