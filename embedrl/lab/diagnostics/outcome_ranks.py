"""Where the outcome reward's pool puts each training pair's positive, before any RL.

    python -m embedrl.lab.diagnostics.outcome_ranks --embedder runs/ablation_warm/embedder --data runs/synth \
        --pools all dataset --modalities image video document

Every query and target of the pairs file is scored through EG-RL's own `OutcomeReward`
(rank form, no Acc_k gate) with its annotated T-CoT, as the rollouts the SFT reasoner imitates
would be. Printed per dataset and role: the share whose positive ranks first, the share within
`--k` (the share an Acc_k gate admits: the rest earn no outcome reward at all) and the median rank.
A pool that leaves a set's positives beyond k gives its rollouts nothing but the format reward.
"""

from __future__ import annotations

import argparse
import math
import statistics


def ranks(embedder, pairs, pool: str, modalities=None, target_view: str = "target") -> dict[tuple, list[int]]:
    """(dataset, role) -> the positive's rank for each pair, its annotated T-CoT as the rollout."""
    from embedrl.train.egrl.rewards import OutcomeReward
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    dataset, bank = RolloutDataset(pairs, modalities=modalities), CandidateBank(embedder, pairs, modalities=modalities)
    reward = OutcomeReward(dataset, embedder, bank, k=len(pairs) * 10, form="rank", negatives=pool,
                           target_view=target_view)
    reward.embed_pool()
    rows = list(zip(dataset.hf.data["pair_index"].to_pylist(), dataset.hf.data["role"].to_pylist()))
    out: dict[tuple, list[int]] = {}
    for start in range(0, len(rows), 64):
        chunk = rows[start:start + 64]
        texts = [pairs[i].qry_tcot if r == "query" else pairs[i].pos_tcot for i, r in chunk]
        scores = reward(texts, pair_index=[i for i, _ in chunk], role=[r for _, r in chunk])
        for (i, r), score in zip(chunk, scores):
            if score > 0:  # 1 / log2(1 + rank); 0: the annotation itself is unusable
                out.setdefault((pairs[i].dataset, r), []).append(round(2 ** (1 / score) - 1))
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[tuple, list[int]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", required=True)
    parser.add_argument("--data", required=True, help="synthetic benchmark (or any pairs file's root)")
    parser.add_argument("--pairs", help="pairs JSONL (default: DATA/train/pairs.jsonl)")
    parser.add_argument("--pools", nargs="+", default=["all", "dataset"], help="outcome_negatives values")
    parser.add_argument("--modalities", nargs="*", help="items of other modalities are rollouts of no one")
    parser.add_argument("--target-view", default="target", choices=["target", "query"])
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)

    from embedrl.data.pairs import read_pairs
    from embedrl.models.base import load_embedder

    pairs, _ = read_pairs(args.pairs or f"{args.data}/train/pairs.jsonl", root=args.data)
    embedder = load_embedder(args.embedder)
    print(f"| pool | dataset | role | n | rank 1 | within {args.k} | median rank |\n|---|---|---|---|---|---|---|")
    by_pool = {pool: ranks(embedder, pairs, pool, args.modalities, args.target_view) for pool in args.pools}
    for pool, found in by_pool.items():
        for (name, role), rs in sorted(found.items()):
            print(f"| {pool} | {name} | {role} | {len(rs)} | {100 * sum(r == 1 for r in rs) / len(rs):.0f}% | "
                  f"{100 * sum(r <= args.k for r in rs) / len(rs):.0f}% | {math.floor(statistics.median(rs))} |")
    return by_pool


if __name__ == "__main__":
    main()
