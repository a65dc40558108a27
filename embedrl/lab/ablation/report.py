"""The ablation's tables as markdown, and its reward curves (one panel per EG-RL variant)."""

from __future__ import annotations

from pathlib import Path

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_json
from embedrl.lab.ablation.config import VARIANTS
from embedrl.train.egrl.diagnostics import plot_reward_curves


def format_ordering(ordering: dict[str, dict[str, float | bool]]) -> str:
    if not ordering:
        return ""
    parts = []
    for name, step in ordering.items():
        after, before = name.split(" - ")
        verdict = "above" if step["above_spread"] else "not above"
        seeds = f", above on {step['seeds_above']} of {step['seeds']} seeds" if "seeds" in step else ""
        parts.append(f"{VARIANTS[after][0][:3]} − {VARIANTS[before][0][:3]} {step['diff']:+.2f}, {verdict} the "
                     f"seeds' spread ({step['spread']:.2f}){seeds}")
    met = len(ordering) == 2 and all(s["above_spread"] for s in ordering.values())
    return f"\nThe paper's ordering (c) > (b) > (a), each step above the seeds' spread: " \
        f"{'met' if met else 'not met'} ({'; '.join(parts)}).\n"


def format_reused(reused: dict[str, list[int]]) -> str:
    lines = [f"\n{VARIANTS[v][0][:3]} is (c)'s run on seed(s) {', '.join(map(str, seeds))}: the reward it switches off "
             f"was 0 for every rollout of (c), so (c)'s advantages were already its own; it was not rerun.\n"
             for v, seeds in reused.items()]
    return "".join(lines)


def format_steps(steps: dict[str, dict[str, float]]) -> str:
    if not steps:
        return ""
    lines = ["", "| step | overall Hit@1 difference | 95% interval over queries |", "|---|---|---|"]
    for name, step in steps.items():
        after, before = name.split(" - ")
        lines.append(f"| {VARIANTS[after][0][:3]} − {VARIANTS[before][0][:3]} | {step['diff']:+.1f} | "
                     f"{step['low']:+.1f} to {step['high']:+.1f} |")
    return "\n".join(lines) + "\n\nSame queries for every run: a step whose interval spans 0 is within what the " \
        "draw of held-out queries alone could make.\n"


def format_usage(usable: dict[str, dict[str, dict[str, float]]]) -> str:
    if not usable:
        return ""
    lines = ["", "| variant | usable query T-CoTs | usable target T-CoTs |", "|---|---|---|"]
    for variant, roles in usable.items():
        cells = [f"{roles[r]['mean']:.1f} ± {roles[r]['std']:.1f}" if r in roles else "–" for r in ("query", "target")]
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nShare (%) of the T-CoTs written that the embedder used, over every set, mean ± std " \
        "over seeds; an item whose T-CoT is broken (tags, JSON, boxes, key frames) is embedded raw.\n"


def format_rerank(rerank: dict[str, dict[str, dict]], queries: int | None) -> str:
    """Per reranker and first stage: Hit@1 and NDCG@5 alone and reranked, the change with its interval,
    the change per set, and the cost."""
    if not rerank:
        return ""
    lines = ["", "| reranker | first stage | Hit@1 alone | reranked | change (95% interval) | NDCG@5 alone | reranked "
                 "| change (95% interval) | s a query | × first stage | queries reordered |",
             "|---" * 11 + "|"]
    per_set = ["", "| reranker | first stage | " + " | ".join(next(iter(next(iter(rerank.values())).values()))["per_set"])
               + " |"]
    per_set.append("|---" * (per_set[1].count("|") - 1) + "|")
    for name, by_variant in rerank.items():
        for variant, row in by_variant.items():
            cells = []
            for m in ("hit@1", "ndcg_linear@5"):
                change = row[f"change {m}"]
                cells += [f"{row[f'first {m}']['mean']:.1f} ± {row[f'first {m}']['std']:.1f}",
                          f"{row[f'reranked {m}']['mean']:.1f} ± {row[f'reranked {m}']['std']:.1f}",
                          f"{change['diff']:+.1f} ({change['low']:+.1f} to {change['high']:+.1f})"]
            cost = row["cost"]
            cells += [f"{cost['seconds_per_query']:.2f}", f"{cost['ratio']:.0f}", f"{100 * cost['reordered_share']:.0f}%"]
            lines.append(f"| {name} | {VARIANTS[variant][0]} | " + " | ".join(cells) + " |")
            per_set.append(f"| {name} | {VARIANTS[variant][0][:3]} | " + " | ".join(
                f"{d['hit@1']:+.1f} / {d['ndcg_linear@5']:+.1f}" for d in row["per_set"].values()) + " |")
    return ("\n".join(lines) + f"\n\nReranking the first stage's top k, on the first {queries or 'all'} held-out "
            "queries of each set (all sets' mean; mean ± std over seeds; the interval is over queries). s a query: "
            "the reranker's time, mean over seeds, cached scores included (a candidate two first stages bring back "
            "is scored once); × first stage: that over the first stage's time a query (its T-CoT, encoding, "
            "ranking).\n" + "\n".join(per_set) + "\n\nChange per set after reranking, Hit@1 / NDCG@5 points, mean "
            "over seeds.\n")


def format_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    if not summary:
        raise EmbedrlError("no results to tabulate")
    names = list(next(iter(summary.values())))
    sets = [n for n in names if n != "overall"]
    lines = ["| variant | " + " | ".join([*sets, "overall"]) + " |", "|---" * (len(sets) + 2) + "|"]
    for variant, cells in summary.items():
        row = [f"{cells[n]['mean']:.1f} ± {cells[n]['std']:.1f}" for n in [*sets, "overall"]]
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\nHit@1 (%), mean ± std over seeds.\n"


def plot_variant_curves(out: Path, seed: int, variants: list[str]) -> Path | None:
    """Each EG-RL variant's reward components over steps (seed `seed`), side by side."""
    histories = {VARIANTS[v][0]: read_json(out / f"seed{seed}" / v / "log_history.json") for v in variants
                 if (out / f"seed{seed}" / v / "log_history.json").is_file()}
    return plot_reward_curves(histories, out / "reward_curves.png") if histories else None

