"""EG-RL rewards: small pure functions over parsed T-CoTs and similarities (each with a doctest), and
the three callables TRL's GRPOTrainer calls with a step's completions (`FormatReward`,
`OutcomeReward`, `ProcessReward`), each logged on its own as `rewards/<name>/mean`.

total = alpha * format + beta * process + gamma * outcome   (weights in `EGRLConfig`)

- format:  1 when the tag structure is complete and the evidence JSON parses (and fits the
           item), else 0.
- outcome: Acc_k * [sim(x, y+) - sum_j softmax(sim(x, y-)/tau)_j * sim(x, y-_j)]: how far the
           positive stands above a softmax-weighted average of the negatives, paid only when
           the positive ranks within the top k. Computed for query rollouts against targets
           and for target rollouts against queries (symmetric).
- process: `process_reward: judge` (the paper's): a discriminator reads the rollout's T-CoT and
           the T-CoTs of several candidates (the positive and hard negatives, shuffled) and must
           pick the positive: 1 if it does, else 0. `process_reward: flip` (reference-free, after
           FLIP, arXiv 2602.13551): a backward model reads the rollout's T-CoT alone and infers
           the other side of its pair (a target's query, a query's target description) or the
           item's own text; the reward is the token F1 of that guess against the real text.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence

import torch

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import TCoT, check_evidence, parse_tcot, render_tcot, usable_tcot
from embedrl.core.text import token_f1
from embedrl.models.base import Embedder
from embedrl.models.prompts import ROLES
from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset


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

    >>> from embedrl.core.tcot import parse_tcot
    >>> format_rewards([parse_tcot('<thinking>{"text_keywords": ["a"]}</thinking><rethink>r</rethink><answer>a</answer>'),
    ...                 parse_tcot('<thinking>{"text_keywords": ["a"]</thinking>')])
    [1.0, 0.0]
    """
    return [1.0 if t.valid else 0.0 for t in tcots]


OUTCOME_FORMS = ("margin", "rank")
OUTCOME_FAILURES = ("zero", "floor", "raw")
TARGET_VIEWS = ("target", "query")


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


def flip_rewards(inferred: Sequence[str], references: Sequence[str]) -> list[float]:
    """FLIP's reward: the token F1 (SQuAD normalisation) of each inferred text against the real one.
    (FLIP's own GRPO paid 10 x F1; here `process_weight` scales it.)

    >>> flip_rewards(["a red circle", "blue", ""], ["The red circle, left", "red", "red"])
    [0.8, 0.0, 0.0]
    """
    return [token_f1(guess, real) for guess, real in zip(inferred, references, strict=True)]


def outcome_pool(value) -> str | int:
    """`outcome_negatives` as OutcomeReward takes it: "batch", "all", "dataset" or a positive number of pairs."""
    if isinstance(value, str) and value in ("batch", "all", "dataset"):
        return value
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(value).strip() != str(number):
        raise EmbedrlError(f"outcome negatives must be `batch`, `all`, `dataset` or a positive number of pairs, "
                           f"not {value!r}")
    return number


# -- the callables TRL calls -------------------------------------------------------------------

class _RolloutReward:
    """Shared by the reward functions: rollouts' items and parsed T-CoTs, and time spent."""

    __name__ = "reward"

    def __init__(self, dataset: RolloutDataset):
        self.dataset = dataset
        self.seconds = 0.0

    def rollouts(self, completions, pair_index, role) -> tuple[list[Item], list[TCoT], list[str]]:
        texts = [completion_text(c) for c in completions]
        items = [self.dataset.item(i, r) for i, r in zip(pair_index, role)]
        return items, [parse_tcot(t) for t in texts], texts

    def __call__(self, completions, pair_index, role, **kwargs) -> list[float]:
        start = time.perf_counter()
        try:
            return self.score(completions, list(pair_index), list(role), **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


class FormatReward(_RolloutReward):
    __name__ = "format"

    def score(self, completions, pair_index, role, **kwargs) -> list[float]:
        items, tcots, _ = self.rollouts(completions, pair_index, role)
        fmt = format_rewards(tcots)
        return [f if check_evidence(t, item) is None else 0.0 for f, t, item in zip(fmt, tcots, items)]


class OutcomeReward(_RolloutReward):
    __name__ = "outcome"

    def __init__(self, dataset: RolloutDataset, embedder: Embedder, bank: CandidateBank, k: int = 1,
                 tau: float = 0.5, batch_size: int = 32, negatives: str | int = "batch", seed: int = 0,
                 form: str = "margin", target_view: str = "target", failure: str = "floor"):
        super().__init__(dataset)
        self.embedder, self.bank, self.k, self.tau, self.batch_size = embedder, bank, k, tau, batch_size
        self.form, self.target_view, self.failure = form, target_view, failure
        self.pool = outcome_pool(negatives)
        self.rng = random.Random(seed)
        self.drawn: dict[str, list[int]] = {}  # dataset -> the pairs its rollouts meet (`dataset` or a number)
        self.rollouts_seen = self.rollouts_usable = 0  # how many reached the embedder (`embedrl bench rl`)

    def others(self, i: int, in_batch: Sequence[int]) -> Sequence[int]:
        """The other pairs whose items pair i's rollouts must beat."""
        if self.pool == "batch":
            return in_batch
        if self.pool == "all":
            return range(len(self.dataset.pairs))
        return self._draw()[self.dataset.pairs[i].dataset]

    def _draw(self) -> dict[str, list[int]]:
        if not self.drawn:  # drawn once for all the dataset's pairs, so each is embedded once
            by_dataset: dict[str, list[int]] = {}
            for j, pair in enumerate(self.dataset.pairs):
                by_dataset.setdefault(pair.dataset, []).append(j)
            self.drawn = by_dataset if self.pool == "dataset" else {
                name: sorted(self.rng.sample(js, min(self.pool, len(js)))) for name, js in by_dataset.items()}
        return self.drawn

    def embed_pool(self) -> None:
        """Embed the other pairs' items rollouts will meet (all, or those of `others`) now, not inside the first step."""
        if self.pool == "batch":
            return
        pool = range(len(self.dataset.pairs)) if self.pool == "all" else sorted(
            {j for drawn in self._draw().values() for j in drawn})
        self.bank.get([(role, j) for role in ROLES for j in pool])

    def negatives(self, i: int, role: str, in_batch: Sequence[int]) -> list[tuple]:
        """Keys of what pair i's `role` rollout must rank below its positive: the other side of the other
        pairs (`others`) and, for a query, its hard negatives, each distinct item once. Pairs of a
        classification or VQA set share their labels and answers: the positive's is no negative, and
        another counts once, as in a de-duplicated retrieval pool (once per pair, one label that
        outscores the positive would push it ~30 ranks down, out of any Acc_k)."""
        other = "target" if role == "query" else "query"
        keys = [(other, j) for j in self.others(i, in_batch) if j != i]
        if role == "query":
            keys += [("neg", i, n) for n in range(len(self.dataset.pairs[i].negs))]
        by_content: dict[str, tuple] = {}  # content -> its first key
        for key in keys:
            by_content.setdefault(self.bank.content(key), key)
        by_content.pop(self.bank.content((other, i)), None)
        return list(by_content.values())

    def score(self, completions, pair_index, role, **kwargs) -> list[float]:
        items, tcots, texts = self.rollouts(completions, pair_index, role)
        # A rollout the embedder cannot use earns nothing, or its group's floor (`failure`): scored as its
        # raw item, breaking the format would pay wherever raw input retrieves better than the T-CoTs.
        # `raw` scores it so on purpose: retrieval falls back to the raw item, and the reward ranks as it will.
        usable = {row for row, (item, t) in enumerate(zip(items, tcots)) if usable_tcot(t, item) is not None}
        self.rollouts_seen += len(texts)
        self.rollouts_usable += len(usable)
        scored = range(len(texts)) if self.failure == "raw" else sorted(usable)
        # Embed each distinct rollout once (GRPO groups repeat prompts; identical samples are common);
        # the unusable rollouts of a prompt share one raw embedding (text None).
        key_of = {row: (pair_index[row], role[row], texts[row] if row in usable else None) for row in scored}
        distinct: dict[tuple, int] = {}  # (pair, role, text) -> row of its first occurrence
        for row in scored:
            distinct.setdefault(key_of[row], row)
        out = [0.0] * len(texts)
        if not distinct:
            return out
        rows = list(distinct.values())
        vectors = self.embedder.encode([items[n] for n in rows], [tcots[n] if n in usable else None for n in rows],
                                       batch_size=self.batch_size)
        slot = {key: k for k, key in enumerate(distinct)}
        in_batch = sorted(set(pair_index))
        sim_pos, sim_neg = [], []
        against: dict[tuple, tuple] = {}  # (pair, role) -> (other side's vector, negatives' vectors or similarities)
        for row in scored:
            i, r = pair_index[row], role[row]
            v = vectors[slot[key_of[row]]]
            from_query = r == "target" and self.target_view == "query"
            if (i, r) not in against:  # once per prompt, not once per rollout of its group
                other = "target" if r == "query" else "query"
                anchor = self.bank.get([(other, i)])[0]
                # seen from the query, the competitors are the other targets: their similarity to it is fixed
                negatives = self.bank.get(self.negatives(i, "query" if from_query else r, in_batch))
                against[i, r] = anchor, negatives @ anchor if from_query else negatives
            anchor, negatives = against[i, r]
            sim_pos.append(v @ anchor)
            sim_neg.append(negatives if from_query else negatives @ v)
        width = max(len(s) for s in sim_neg)
        padded = torch.full((len(sim_neg), width), float("nan"))
        for k, sims in enumerate(sim_neg):
            padded[k, :len(sims)] = sims
        sim_pos = torch.stack(sim_pos)
        succeeded = [False] * len(texts)
        for row, reward, rank in zip(scored, outcome_rewards(sim_pos, padded, self.k, self.tau, self.form).tolist(),
                                     positive_rank(sim_pos, padded).tolist()):
            out[row], succeeded[row] = reward, rank <= self.k
        if self.failure in ("floor", "raw"):
            out = floor_failures(out, succeeded, list(zip(pair_index, role)))
        return out


class ProcessReward(_RolloutReward):
    __name__ = "process"

    def __init__(self, dataset: RolloutDataset, discriminator, bank: CandidateBank, n_candidates: int = 4,
                 seed: int = 0):
        super().__init__(dataset)
        self.discriminator, self.bank, self.n_candidates, self.seed = discriminator, bank, n_candidates, seed

    def _text(self, key: tuple) -> str:
        """A candidate as the discriminator reads it: its annotated T-CoT, else its raw text."""
        item, tcot = self.bank.entry(key)
        return render_tcot(tcot) if tcot else item.text

    def negatives(self, i: int, role: str, in_batch: list[int], rng: random.Random) -> list[tuple]:
        """Keys of the wrong candidates for pair i's `role` rollout: a query's own hard negatives
        first (the near misses its evidence must rule out), topped up with other pairs of the batch."""
        other = "target" if role == "query" else "query"
        hard = [("neg", i, j) for j in range(len(self.dataset.pairs[i].negs))] if role == "query" else []
        hard = rng.sample(hard, min(len(hard), self.n_candidates - 1))
        pool = [(other, j) for j in in_batch if j != i]
        return hard + rng.sample(pool, min(len(pool), self.n_candidates - 1 - len(hard)))

    def question(self, i: int, role: str, tcot_text: str, in_batch: list[int]) -> tuple[str, int, int]:
        """The multiple-choice question for pair i's `role` T-CoT: (prompt, number of candidates, right answer).

        A negative that reads exactly like the positive is left out: no evidence can tell them apart,
        so asking would pay a coin flip. The draws depend on the question alone (not on the questions asked
        before it), so a run resumed from a checkpoint asks what the uninterrupted run asked."""
        rng = random.Random(f"{self.seed}:{role}:{i}:{sorted(in_batch)}:{tcot_text}")
        positive = self._text(("target" if role == "query" else "query", i))
        negatives = [text for text in map(self._text, self.negatives(i, role, in_batch, rng)) if text != positive]
        candidates, gold = shuffle_candidates(positive, negatives, rng)
        return discriminator_prompt(tcot_text, candidates), len(candidates), gold

    def score(self, completions, pair_index, role, **kwargs) -> list[float]:
        items, tcots, _ = self.rollouts(completions, pair_index, role)
        in_batch = sorted(set(pair_index))
        prompts, sizes, golds, rows = [], [], [], []
        for row, (i, r, t) in enumerate(zip(pair_index, role, tcots)):
            if usable_tcot(t, items[row]) is None:
                continue  # a broken T-CoT cannot be judged: reward 0
            prompt, size, gold = self.question(i, r, render_tcot(t), in_batch)
            prompts.append(prompt)
            sizes.append(size)
            golds.append(gold)
            rows.append(row)
        out = [0.0] * len(tcots)
        if prompts:
            for row, reward in zip(rows, process_rewards(self.discriminator.choose(prompts, sizes), golds)):
                out[row] = reward
        return out

