"""The ablation's reranking rows: each first stage (a variant of the table) scored alone and with a
second stage (`embedrl.rerank`) on the same held-out queries, per seed.

One stage per seed, variant and reranker writes `seedN/rerank_{reranker}_{variant}.json`: per set,
each query's Hit@1 and NDCG@5 (linear gain) for the first stage and after reranking, and the time
spent (the reranker's, and the first stage's: query T-CoTs, encoding, ranking). Scores are cached
beside the T-CoTs, so a candidate two first stages both bring back is scored once: the run with the
most inputs scored (`computed`) is the one whose time says what reranking costs.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from embedrl.core.io import write_json
from embedrl.eval.metrics import query_metrics
from embedrl.lab.ablation.config import AblationConfig
from embedrl.lab.ablation.stats import paired_interval

METRICS = ("hit@1", "ndcg_linear@5")


def rerank_model_path(config: AblationConfig, seed: int) -> str:
    """Where the rerankers' model of `seed` lies (`rerank_model`)."""
    out = Path(config.out)
    return {"sft": str(out / f"seed{seed}" / "sft"), "warmup": str(out / "warmup")}.get(
        config.rerank_model, config.rerank_model)


def evaluate_rerank(config: AblationConfig, embedder: Path, reasoner: Path | None, name: str, model: str,
                    out: Path) -> None:
    """Score the first stage (`embedder`, T-CoTs from `reasoner` unless None) alone and reranked."""
    from embedrl.data.readers import read_task
    from embedrl.eval.mmeb import check_tcot_modes, evaluate_task, load_specs
    from embedrl.lab.ablation.run import load_eval_reasoner
    from embedrl.models.base import load_embedder
    from embedrl.rerank import load_reranker

    data = Path(config.eval_data or config.data)
    loaded = load_eval_reasoner(config, reasoner) if reasoner is not None else None
    cache = Path(config.out) / "tcot_cache.sqlite"
    # the first stage's reasoner when it is the rerankers' model too (same weights, same cached scores)
    chat = loaded if loaded is not None and str(reasoner) == model else model
    reranker = load_reranker(name, chat, config.rerank_options.get(name), cache=cache)
    mode, by_set = (config.tcot_mode, config.tcot_mode_by_set or {}) if loaded else ("none", {})
    specs = load_specs(data / "registry.yaml")
    check_tcot_modes(mode, by_set, loaded, [s.name for s in specs])
    model_embedder = load_embedder(str(embedder))
    result: dict[str, Any] = {}
    for spec in load_specs(specs, config.datasets):
        task = read_task(spec, data)
        task = task.head(config.rerank_queries) if config.rerank_queries else task
        before_s, computed_before = reranker.seconds, getattr(reranker, "computed", 0)
        score, preds, timings = evaluate_task(model_embedder, task, loaded, by_set.get(spec.name, mode), ks=(1, 5),
                                              modality=spec.modality, reranker=reranker, rerank_k=config.rerank_k)
        per_query = {stage: {m: [] for m in METRICS} for stage in ("first", "reranked")}
        for row in preds:
            relevance = dict(zip(row["label"], row["rel_scores"]))
            for stage, ranking in (("first", row["first_stage"]), ("reranked", row["prediction"])):
                metrics = query_metrics(ranking, relevance, (1, 5))
                for m in METRICS:
                    per_query[stage][m].append(metrics[m])
        n = max(1, len(preds))
        result[spec.name] = {**per_query, "queries": len(preds), "reordered": score["rerank"]["reordered"],
                             "rerank_s": reranker.seconds - before_s,
                             "computed": getattr(reranker, "computed", 0) - computed_before,
                             "first_stage_s": score["rerank"]["first_stage_seconds_per_query"] * n,
                             "timings": timings}
    write_json(out, result)  # last: marks the stage done


def summarize_rerank(runs: dict[str, dict[str, dict[int, dict[str, Any]]]], seeds: list[int]) -> dict[str, Any]:
    """Per reranker and first stage: overall (mean over sets) of each metric before and after, mean and
    std over seeds; the paired interval of the change over queries; the change per set; the cost."""
    out: dict[str, Any] = {}
    for name, by_variant in runs.items():
        for variant, by_seed in by_variant.items():
            present = [s for s in seeds if s in by_seed]
            if not present:
                continue
            sets = list(by_seed[present[0]])
            row: dict[str, Any] = {"seeds": present, "per_set": {}}
            for m in METRICS:
                for stage in ("first", "reranked"):
                    overall = [100 * statistics.fmean(statistics.fmean(by_seed[s][t][stage][m]) for t in sets)
                               for s in present]
                    row[f"{stage} {m}"] = {"mean": statistics.fmean(overall), "std": statistics.pstdev(overall)}
                row[f"change {m}"] = paired_interval([{t: by_seed[s][t]["first"][m] for t in sets} for s in present],
                                                     [{t: by_seed[s][t]["reranked"][m] for t in sets} for s in present])
                for t in sets:
                    row["per_set"].setdefault(t, {})[m] = 100 * statistics.fmean(
                        statistics.fmean(by_seed[s][t]["reranked"][m]) - statistics.fmean(by_seed[s][t]["first"][m])
                        for s in present)
            totals = [{k: sum(by_seed[s][t][k] for t in sets) for k in ("queries", "rerank_s", "first_stage_s",
                                                                          "computed", "reordered")} for s in present]
            row["cost"] = {"seconds_per_query": statistics.fmean(t["rerank_s"] / t["queries"] for t in totals),
                           "first_stage_seconds_per_query": statistics.fmean(t["first_stage_s"] / t["queries"]
                                                                             for t in totals),
                           "computed_per_query": statistics.fmean(t["computed"] / t["queries"] for t in totals),
                           "reordered_share": statistics.fmean(t["reordered"] / t["queries"] for t in totals)}
            row["cost"]["ratio"] = row["cost"]["seconds_per_query"] / max(row["cost"]["first_stage_seconds_per_query"],
                                                                          1e-9)
            out.setdefault(name, {})[variant] = row
    return out
