"""The ablation's numbers: means over seeds, paired bootstrap intervals per step, the paper's
ordering, the share of usable T-CoTs."""

from __future__ import annotations

import statistics

STEPS = [("sft", "raw"), ("eg_rl", "sft"), ("eg_rl", "no_process"), ("eg_rl", "no_outcome"),
         ("eg_rl_flip", "no_process")]


def paired_interval(before: list[dict[str, list[int]]], after: list[dict[str, list[int]]], resamples: int = 2000,
                    seed: int = 0) -> dict[str, float]:
    """Overall Hit@1 of `after` minus `before` (points, mean over seeds) and its 95% bootstrap interval.

    Each list holds one run per seed, each run its per-query hits per set (or any per-query metric
    in [0, 1], e.g. NDCG@5); every run scored the same queries. Queries are redrawn within each set, the same draw for every seed, so the interval
    says how much of a step the choice of held-out queries alone could make.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    observed, draws = 0.0, np.zeros(resamples)
    sets = list(before[0])
    for name in sets:
        diff = np.mean([np.asarray(a[name], float) - np.asarray(b[name], float) for a, b in zip(after, before)], 0)
        observed += diff.mean()
        draws += diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(1)
    scale = 100 / len(sets)
    low, high = np.percentile(draws * scale, [2.5, 97.5])
    return {"diff": float(observed * scale), "low": float(low), "high": float(high)}


def step_intervals(hits: dict[str, dict[int, dict[str, list[int]]]], seeds: list[int]) -> dict[str, dict[str, float]]:
    """`paired_interval` for each step of the table whose runs all kept their per-query hits."""
    out = {}
    for after, before in STEPS:
        if after in hits and before in hits:
            runs_before, runs_after = ([hits[v].get(s) for s in seeds] for v in (before, after))
            if all(r is not None for r in runs_before + runs_after):
                out[f"{after} - {before}"] = paired_interval(runs_before, runs_after)
    return out


def paper_ordering(summary: dict[str, dict[str, dict[str, float]]],
                   scores: dict[str, dict[int, dict[str, float]]] | None = None) -> dict[str, dict[str, float | bool]]:
    """The paper's claim, checked on this table: each of (b) − (a) and (c) − (b) on the overall mean,
    against the larger of the two rows' spreads over seeds (a step inside it could be the seeds).

    With the per-seed `scores`, also on how many seeds the later row is above the earlier one: the
    spread is mostly how good each seed's SFT reasoner came out, which (b) and (c) share, so a step
    inside it can still hold seed by seed."""
    out = {}
    for after, before in (("sft", "raw"), ("eg_rl", "sft")):
        if after in summary and before in summary:
            a, b = summary[after]["overall"], summary[before]["overall"]
            diff, spread = a["mean"] - b["mean"], max(a["std"], b["std"])
            step = {"diff": diff, "spread": spread, "above_spread": diff > spread}
            if scores:
                paired = [s for s in scores[after] if s in scores[before]]
                step["seeds"] = len(paired)
                step["seeds_above"] = sum(scores[after][s]["overall"] > scores[before][s]["overall"] for s in paired)
            out[f"{after} - {before}"] = step
    return out


def summarize_usage(usage: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and role: the share (%) of written T-CoTs the embedder could use, over every set,
    mean and (population) std over the seeds that recorded it."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, by_seed in usage.items():
        for role in ("query", "target"):
            shares = []
            for sets in by_seed.values():
                written = sum(u[role]["written"] for u in sets.values() if role in u)
                if written:
                    shares.append(100 * sum(u[role]["usable"] for u in sets.values() if role in u) / written)
            if shares:
                out.setdefault(variant, {})[role] = {"mean": statistics.fmean(shares),
                                                     "std": statistics.pstdev(shares)}
    return out


def summarize(scores: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and set: mean and (population) std over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, by_seed in scores.items():
        if not by_seed:
            continue
        names = list(next(iter(by_seed.values())))
        out[variant] = {n: {"mean": statistics.fmean(s[n] for s in by_seed.values()),
                            "std": statistics.pstdev([s[n] for s in by_seed.values()])} for n in names}
    return out
