"""Does the outcome reward (or the FLIP process reward) point at the right content? Rollouts of one
reasoner, ranked by EG-RL's reward and by how much of their evidence is right.

    python -m embedrl.lab.diagnostics.reward_content --embedder runs/ablation_warm/embedder --data runs/synth \
        --reasoner runs/ablation_warm/seed0/sft --modalities image video document [--reward flip]

GRPO learns only from how a prompt's rollouts differ: each is pushed up or down by its reward against
its group's. For EG-RL to improve what T-CoTs say (not only their format), the rollout whose keywords
are right more often must earn the higher outcome reward. For sampled training prompts this draws a
group of rollouts as EG-RL does, scores them with EG-RL's own `OutcomeReward` (the warm ablation's
settings by default) and compares, within each group, every two usable rollouts whose keywords differ
in how many are right (Jaccard overlap with the pair's annotated T-CoT, which the generator wrote from
the scene): **concordance** is the share of those pairs whose reward orders them the same way (0.5: the
reward says nothing about content; pairs tied on reward are left out and counted). Also printed per
set and role: the usable rollouts' mean keyword match, how often the reward separates a group at all,
and where the annotated T-CoT itself, the right content in the right form, would rank among its group,
and the reward's spread (its standard deviation within a group, mean over groups: what a reward weight
multiplies, since GRPO standardises the weighted total per group). `--reward flip` scores the rollouts
with the FLIP process reward instead (a frozen copy of the reasoner infers, unless `--flip-model`).
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import defaultdict

import torch

from embedrl.core.tcot import TCoT, parse_tcot, usable_tcot


def keyword_match(tcot: TCoT, gold: TCoT) -> float:
    """Jaccard overlap of the two T-CoTs' keywords, case and spacing ignored (1: the same set)."""
    a, b = ({" ".join(k.lower().split()) for k in t.keywords} for t in (tcot, gold))
    return len(a & b) / len(a | b) if a | b else 1.0


def concordance(rewards: list[float], matches: list[float]) -> tuple[int, int, int]:
    """(concordant, discordant, reward-tied) pairs among rollouts whose content match differs.

    >>> concordance([0.3, 0.1, 0.1], [1.0, 0.5, 0.0])
    (2, 0, 1)
    """
    same = other = tied = 0
    for a in range(len(rewards)):
        for b in range(a + 1, len(rewards)):
            if matches[a] == matches[b]:
                continue
            if rewards[a] == rewards[b]:
                tied += 1
            elif (rewards[a] > rewards[b]) == (matches[a] > matches[b]):
                same += 1
            else:
                other += 1
    return same, other, tied


def main(argv: list[str] | None = None) -> dict[tuple[str, str], dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", help="the frozen embedder (the outcome reward's)")
    parser.add_argument("--reasoner", required=True, help="the policy whose rollouts are scored (e.g. an SFT reasoner)")
    parser.add_argument("--data", required=True, help="synthetic benchmark (or any pairs file's root)")
    parser.add_argument("--pairs", help="pairs JSONL (default: DATA/train/pairs.jsonl)")
    parser.add_argument("--modalities", nargs="*", help="only items of these modalities are rolled out")
    parser.add_argument("--prompts", type=int, default=24, help="prompts per set and role (default 24)")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--k", type=int, default=10, help="outcome_k")
    parser.add_argument("--tau", type=float, default=0.05, help="outcome_tau")
    parser.add_argument("--negatives", default="all", help="outcome_negatives")
    parser.add_argument("--failure", default="floor", help="outcome_failure")
    parser.add_argument("--seed", type=int, default=0, help="draws the prompts and the rollouts")
    parser.add_argument("--reward", choices=("outcome", "flip"), default="outcome", help="which reward scores them")
    parser.add_argument("--flip-model", default="frozen", help="FLIP's backward model (EGRLConfig.flip_model)")
    parser.add_argument("--flip-reference", default="other", help="EGRLConfig.flip_reference")
    args = parser.parse_args(argv)
    if args.reward == "outcome" and not args.embedder:
        parser.error("the outcome reward needs --embedder")

    from embedrl.data.pairs import read_pairs
    from embedrl.models.base import load_embedder
    from embedrl.models.reasoner import load_reasoner
    from embedrl.train.egrl.rewards import OutcomeReward
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    pairs, _ = read_pairs(args.pairs or f"{args.data}/train/pairs.jsonl", root=args.data)
    reasoner = load_reasoner(args.reasoner, modalities=args.modalities)
    dataset = RolloutDataset(pairs, modalities=args.modalities)
    if args.reward == "flip":
        from embedrl.train.egrl.flip import FlipReward
        from embedrl.train.egrl.judge import load_backward_model

        reward = FlipReward(dataset, load_backward_model(args.flip_model, args.reasoner), args.flip_reference)
    else:
        embedder = load_embedder(args.embedder)
        bank = CandidateBank(embedder, pairs, modalities=args.modalities)
        reward = OutcomeReward(dataset, embedder, bank, k=args.k, tau=args.tau, negatives=args.negatives,
                               failure=args.failure)
        reward.embed_pool()

    by_group: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, role in zip(dataset.hf.data["pair_index"].to_pylist(), dataset.hf.data["role"].to_pylist()):
        by_group[pairs[i].dataset, role].append(i)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)  # the same rollouts for the same reasoner, whichever embedder scores them
    print("| set | role | prompts | usable | keyword match | concordance (pairs) | reward-tied pairs | groups the reward "
          "separates | annotation's rank in its group | reward spread |\n|---|---|---|---|---|---|---|---|---|---|")
    out = {}
    for (name, role), rows in sorted(by_group.items()):
        chosen = rng.sample(rows, min(args.prompts, len(rows)))
        texts = reasoner.generate_text([dataset.item(i, role) for i in chosen], role, num_samples=args.generations,
                                       temperature=args.temperature)
        # one reward call per set and role (each distinct item embedded once); every prompt's group
        # ends with its annotated T-CoT, so the floor of failed rollouts is the one EG-RL would give
        golds = [pairs[i].qry_tcot if role == "query" else pairs[i].pos_tcot for i in chosen]
        width = args.generations + 1
        scores = reward([t for group, gold in zip(texts, golds) for t in [*group, gold]],
                        pair_index=[i for i in chosen for _ in range(width)], role=[role] * (width * len(chosen)))
        same = other = tied = separated = 0
        annotation_rank, right, spread = [], [], []
        for n, (i, group, gold) in enumerate(zip(chosen, texts, golds)):
            rewards, gold_reward = scores[n * width:(n + 1) * width - 1], scores[(n + 1) * width - 1]
            item, gold = dataset.item(i, role), parse_tcot(gold)
            ok = [(r, t) for r, t in zip(rewards, map(parse_tcot, group)) if usable_tcot(t, item) is not None]
            matches = [keyword_match(t, gold) for _, t in ok]
            right += matches
            counts = concordance([r for r, _ in ok], matches)
            same, other, tied = same + counts[0], other + counts[1], tied + counts[2]
            separated += len(set(rewards)) > 1
            spread.append(statistics.pstdev(rewards))
            annotation_rank.append(1 + sum(r > gold_reward for r in rewards))
        decided = same + other
        row = {"prompts": len(chosen), "usable": len(right) / (len(chosen) * args.generations),
               "keyword_match": sum(right) / len(right) if right else float("nan"),
               "concordance": same / decided if decided else float("nan"), "concordant": same, "pairs": decided,
               "tied": tied, "separated": separated / len(chosen), "annotation_rank": sum(annotation_rank) / len(annotation_rank),
               "spread": statistics.fmean(spread)}
        out[name, role] = row
        print(f"| {name} | {role} | {len(chosen)} | {100 * row['usable']:.0f}% | {row['keyword_match']:.2f} | "
              f"{row['concordance']:.2f} ({decided}) | {tied} | {100 * row['separated']:.0f}% | "
              f"{row['annotation_rank']:.1f} of {args.generations + 1} | {row['spread']:.3f} |")
    same = sum(row["concordant"] for row in out.values())
    decided = sum(row["pairs"] for row in out.values())
    print(f"\nall sets: concordance {same / decided if decided else float('nan'):.2f} over {decided} pairs of rollouts "
          f"(0.5: the {args.reward} reward does not tell right keywords from wrong); reward spread "
          f"{statistics.fmean(row['spread'] for row in out.values()):.3f} (mean over sets and roles)")
    return out


if __name__ == "__main__":
    main()
