"""EG-RL rewards: small pure functions over parsed T-CoTs and similarities, each unit-testable.

total = alpha * format + beta * process + gamma * outcome   (weights in `EGRLConfig`)

- format:  1 when the tag structure is complete and the evidence JSON parses (and fits the
           item), else 0.
- outcome: Acc_k * [sim(x, y+) - sum_j softmax(sim(x, y-)/tau)_j * sim(x, y-_j)]: how far the
           positive stands above a softmax-weighted average of the negatives, paid only when
           the positive ranks within the top k. Computed for query rollouts against targets
           and for target rollouts against queries (symmetric).
- process: a discriminator reads the rollout's T-CoT and the T-CoTs of several candidates
           (the positive and hard negatives, shuffled) and must pick the positive: 1 if it
           does, else 0.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch

from embedrl.tcot import TCoT


def completion_text(completion) -> str:
    """TRL passes plain strings or chat messages (`[{"role": "assistant", "content": ...}]`)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # multimodal content parts
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return ""


def format_rewards(tcots: Sequence[TCoT]) -> list[float]:
    """1.0 for a complete, well-formed T-CoT, else 0.0.

    >>> from embedrl.tcot import parse_tcot
    >>> format_rewards([parse_tcot('<thinking>{"text_keywords": ["a"]}</thinking><rethink>r</rethink><answer>a</answer>'),
    ...                 parse_tcot('<thinking>{"text_keywords": ["a"]</thinking>')])
    [1.0, 0.0]
    """
    return [1.0 if t.valid else 0.0 for t in tcots]


OUTCOME_FORMS = ("margin", "rank")
OUTCOME_FAILURES = ("zero", "floor", "raw")


def positive_rank(sim_pos: torch.Tensor, sim_neg: torch.Tensor) -> torch.Tensor:
    """1 + the number of negatives scoring strictly above the positive (NaN: no negative there).

    >>> positive_rank(torch.tensor([0.9, 0.2]), torch.tensor([[0.1, float("nan")], [0.5, 0.3]]))
    tensor([1, 3])
    """
    return 1 + (sim_neg.nan_to_num(float("-inf")) > sim_pos.unsqueeze(1)).sum(dim=1)


def floor_failures(rewards: Sequence[float], succeeded: Sequence[bool], groups: Sequence) -> list[float]:
    """A failed rollout (T-CoT unusable, or positive outside the top k) scores the lower of 0 and the
    worst success of its group (rollouts of the same prompt), never more than any of them.

    A margin is negative for a success ranked below its hardest negatives (at a small tau the
    weighted negatives are the hardest), so a flat 0 for failing would pay a rollout for breaking
    its format, or for falling out of the top k.

    >>> floor_failures([-0.2, 0.1, 0.0, 0.0], [True, True, False, False], ["a", "a", "a", "b"])
    [-0.2, 0.1, -0.2, 0.0]
    """
    worst: dict = {}
    for reward, ok, group in zip(rewards, succeeded, groups, strict=True):
        if ok:
            worst[group] = min(worst.get(group, 0.0), reward)
    return [reward if ok else worst.get(group, 0.0) for reward, ok, group in zip(rewards, succeeded, groups)]


def outcome_rewards(sim_pos: torch.Tensor, sim_neg: torch.Tensor, k: int = 1, tau: float = 0.5,
                    form: str = "margin") -> torch.Tensor:
    """Outcome reward per row; `sim_neg` may hold NaN where a row has fewer negatives.

    `sim_pos`: (N,) similarity to the positive; `sim_neg`: (N, M) to the negatives.
    The positive's rank counts negatives scoring strictly higher (ties favour the positive).
    `form="margin"` is the paper's reward; `form="rank"` pays Acc_k / log2(1 + rank) instead (the
    gain nDCG gives a rank), so rollouts that leave the ranking as it was earn the same and give
    GRPO nothing to follow.

    >>> outcome_rewards(torch.tensor([0.9, 0.2]), torch.tensor([[0.1, 0.1], [0.5, 0.1]]), k=1)
    tensor([0.8000, 0.0000])
    >>> outcome_rewards(torch.tensor([0.9, 0.2]), torch.tensor([[0.1, 0.1], [0.5, 0.1]]), k=2, form="rank")
    tensor([1.0000, 0.6309])
    """
    if form not in OUTCOME_FORMS:
        raise ValueError(f"outcome form must be one of {list(OUTCOME_FORMS)}, not {form!r}")
    valid = ~torch.isnan(sim_neg)
    if sim_neg.shape[1] == 0 or not bool(valid.any()):
        return sim_pos.clone() if form == "margin" else torch.ones_like(sim_pos)  # nothing to beat
    neg = torch.where(valid, sim_neg, torch.full_like(sim_neg, float("-inf")))
    rank = positive_rank(sim_pos, sim_neg)
    if form == "rank":
        return torch.where(rank <= k, 1.0 / torch.log2(1.0 + rank.to(sim_pos.dtype)), torch.zeros_like(sim_pos))
    weights = torch.softmax(neg / tau, dim=1)
    weighted = (weights * torch.where(valid, sim_neg, torch.zeros_like(sim_neg))).sum(dim=1)
    weighted = torch.where(valid.any(dim=1), weighted, torch.zeros_like(weighted))
    return torch.where(rank <= k, sim_pos - weighted, torch.zeros_like(sim_pos))


def shuffle_candidates(positive: str, negatives: Sequence[str], rng: random.Random) -> tuple[list[str], int]:
    """The positive among the negatives in random order; returns (candidates, index of the positive).

    >>> cands, gold = shuffle_candidates("P", ["N1", "N2"], random.Random(0))
    >>> cands[gold]
    'P'
    """
    candidates = [positive, *negatives]
    order = list(range(len(candidates)))
    rng.shuffle(order)
    return [candidates[i] for i in order], order.index(0)


_CHOICE = re.compile(r"\b([A-Z])\b")


def parse_choice(text: str, n: int) -> int | None:
    """The first standalone capital letter among the first `n` (A, B, ...) in a discriminator's answer.

    >>> parse_choice("The answer is C.", 4), parse_choice("(b)", 4), parse_choice("Z", 3)
    (2, None, None)
    """
    for letter in _CHOICE.findall(text):
        index = ord(letter) - ord("A")
        if 0 <= index < n:
            return index
    return None


def process_rewards(choices: Sequence[int | None], golds: Sequence[int]) -> list[float]:
    """1.0 where the discriminator picked the positive, else 0.0 (no answer counts as wrong).

    >>> process_rewards([0, 2, None], [0, 1, 1])
    [1.0, 0.0, 0.0]
    """
    return [1.0 if c is not None and c == g else 0.0 for c, g in zip(choices, golds, strict=True)]


def discriminator_prompt(query_tcot: str, candidates: Sequence[str]) -> str:
    """The question put to the discriminator: which candidate's evidence matches the query's."""
    lines = [f"Query evidence: {query_tcot}", "Candidates:"]
    lines += [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(candidates)]
    lines.append("Which candidate matches the query? Answer with the letter only.")
    return "\n".join(lines)
