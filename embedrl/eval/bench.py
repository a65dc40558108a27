"""`embedrl bench rerank`: what a second stage costs against the first stage it reranks, per query, in
one run on the same queries.

The first stage is what a search does per query: the query's T-CoT (generated, no cache), its
embedding, ranking against the candidates (encoded beforehand, as an index holds them; their
T-CoTs are left out). Each reranker then reorders the top k with no score cache. Both are timed by
the evaluation runner (`evaluate_task`), so the same queries and rankings are timed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedrl.data.readers import read_task
from embedrl.eval.mmeb import evaluate_task, load_specs


def bench_rerank(embedder, data: str | Path, rerankers: Sequence, reasoner=None, queries: int = 10, k: int = 10,
                 datasets: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per set: queries, the first stage's seconds a query, each reranker's, and hit@1 before and after."""
    data = Path(data)
    rows = []
    for spec in load_specs(data / "registry.yaml", datasets):
        task = read_task(spec, data).head(queries)
        row: dict[str, Any] = {"set": spec.name, "queries": len(task.queries), "first_stage_s": [], "rerank": {}}
        for reranker in rerankers:
            score, _, _ = evaluate_task(embedder, task, reasoner, "query" if reasoner is not None else "none",
                                        ks=(1,), modality=spec.modality, reranker=reranker, rerank_k=k)
            cost = score["rerank"]
            row["first_stage_s"].append(cost["first_stage_seconds_per_query"])
            row["rerank"][reranker.name] = {"seconds_per_query": cost["seconds_per_query"],
                                            "hit@1": 100 * score["hit@1"],
                                            "first_stage_hit@1": 100 * score["first_stage"]["hit@1"]}
        row["first_stage_s"] = min(row["first_stage_s"])  # the same work each time: its fastest run
        rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    names = list(rows[0]["rerank"]) if rows else []
    head = "| set | queries | first stage s/query | " + " | ".join(f"{n} s/query | × first stage" for n in names) + " |"
    lines = [head, "|---" * (2 + 1 + 2 * len(names)) + "|"]
    total_q = sum(r["queries"] for r in rows)
    for row in [*rows, {"set": "all", "queries": total_q,
                        "first_stage_s": sum(r["first_stage_s"] * r["queries"] for r in rows) / max(1, total_q),
                        "rerank": {n: {"seconds_per_query": sum(r["rerank"][n]["seconds_per_query"] * r["queries"]
                                                                for r in rows) / max(1, total_q)} for n in names}}]:
        cells = [f"{row['rerank'][n]['seconds_per_query']:.3f} | {row['rerank'][n]['seconds_per_query'] / max(row['first_stage_s'], 1e-9):.0f}"
                 for n in names]
        lines.append(f"| {row['set']} | {row['queries']} | {row['first_stage_s']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\nFirst stage: the query's T-CoT (no cache), its embedding and ranking; rerankers "
                               "with no score cache.")
