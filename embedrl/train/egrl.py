"""EG-RL (Embedder-Guided RL): GRPO on the Reasoner where a frozen Embedder's retrieval is the reward.

`embedrl train eg-rl --config FILE [key=value ...]` runs TRL's `GRPOTrainer` with three reward
functions (embedrl/train/rewards.py), each logged on its own (`rewards/<name>/mean`):
format, process (a discriminator picks the positive among shuffled candidate T-CoTs) and
outcome (the rollout's embedding against the other side of the batch's pairs -- or of every
training pair, or of every or N pairs of its own dataset: `outcome_negatives` -- plus the pair's
hard negatives). Rollouts are made for both the query and the target of each pair.
A rollout the embedder cannot use (broken tags or JSON, boxes or key frames that do not fit
the item) earns 0 from the format and process rewards and, from the outcome reward, no more than
the worst well-formed rollout of its prompt, or what its raw item earns (`outcome_failure`);
training goes on.

Cost: the sides a rollout is scored against are embedded once, with their cached T-CoT
(the pairs' annotations), and kept in a `CandidateBank`; per step only the distinct
rollouts are embedded, so rewards cost far less than generation (`embedrl bench rl`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from embedrl.errors import EmbedrlError
from embedrl.eval import TCOT_MODES, mode_covers, unknown_modes
from embedrl.io import write_json
from embedrl.items import Item, Pair, read_pairs
from embedrl.models.base import Embedder, load_embedder
from embedrl.models.prompts import build_messages, modality_of
from embedrl.models.reasoner import check_modalities
from embedrl.tcot import TCoT, check_evidence, parse_tcot, render_tcot, usable_tcot
from embedrl.train.checkpoints import ResumesFullWeights, resume_checkpoint
from embedrl.train.rewards import (
    OUTCOME_FAILURES,
    OUTCOME_FORMS,
    completion_text,
    discriminator_prompt,
    floor_failures,
    format_rewards,
    outcome_rewards,
    positive_rank,
    process_rewards,
    shuffle_candidates,
)

logger = logging.getLogger(__name__)

ROLES = ("query", "target")
CANDIDATE_TCOTS = ("annotation", "reasoner", "none")
TARGET_VIEWS = ("target", "query")


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


def writes_tcot(pair: Pair, side: str, item: Item, modalities: Sequence[str] | None = None,
                mode_by_set: dict[str, str] | None = None) -> bool:
    """Whether the reasoner writes a T-CoT for `item` on `side` ("query" or "target") of `pair`, as
    evaluation will: its modality is among `modalities` and its dataset's T-CoT mode covers the side."""
    return ((modalities is None or modality_of(item) in modalities)
            and mode_covers((mode_by_set or {}).get(pair.dataset, "both"), side))


@dataclass
class EGRLConfig(GRPOConfig):
    """Everything `GRPOConfig` has, plus the EG-RL fields below (`beta` stays GRPO's KL weight)."""

    reasoner: str = field(default="", metadata={"help": "Policy to start from: the SFT reasoner (dir or Hub id)."})
    embedder: str = field(default="", metadata={"help": "Frozen embedder that scores rollouts."})
    train_data: str = field(default="", metadata={"help": "Pairs JSONL (MMEB-train style, with T-CoT annotations)."})
    data_root: str | None = field(default=None, metadata={"help": "Folder media paths are relative to."})
    format_weight: float = field(default=0.05, metadata={"help": "alpha: weight of the format reward."})
    process_weight: float = field(default=0.2, metadata={"help": "beta (paper): weight of the process reward."})
    outcome_weight: float = field(default=0.8, metadata={
        "help": "gamma: weight of the outcome reward. GRPO standardises the total per group, so weights act "
                "through each reward's spread: the run logs weight x std per reward and warns when one drowns "
                "another (a margin at small outcome_tau varies little and needs a larger weight)."})
    outcome_k: int = field(default=1, metadata={"help": "Acc_k: the positive must rank within the top k."})
    outcome_tau: float = field(default=0.5, metadata={"help": "Softmax temperature over negatives' similarities."})
    outcome_form: str = field(default="margin", metadata={
        "help": "`margin`: the paper's Acc_k x (positive - softmax-weighted negatives); `rank`: Acc_k / log2(1 + rank) "
                "of the positive, which only moves when a T-CoT changes the ranking (outcome_tau unused)."})
    outcome_failure: str = field(default="floor", metadata={
        "help": "What a failed rollout (T-CoT unusable, or positive outside the top k) earns: `floor`, the lower of "
                "0 and the worst success among its prompt's rollouts, or `zero`. With the margin at a small "
                "outcome_tau a success below its hardest negative earns less than 0, so `zero` pays for breaking "
                "the format (without the Acc_k gate, outcome_k=1000000, EG-RL then writes no usable T-CoT). At "
                "outcome_k=1, or with the rank form, no success earns less than 0 and the two are the same. "
                "`raw`: an unusable T-CoT is scored on the raw item, as retrieval falls back to it, so a well-formed "
                "T-CoT that retrieves worse than raw input earns less than a broken one (the format reward still "
                "pays for form); a positive outside the top k is floored."})
    outcome_negatives: str = field(default="batch", metadata={
        "help": "Which other pairs' items a rollout must beat: those of the step's batch (`batch`), every training "
                "pair's (`all`), every pair of the rollout's own dataset (`dataset`: as a held-out query meets only "
                "its own set's candidates), or N pairs of each dataset drawn once, a rollout meeting its own "
                "dataset's (a number: for training sets too large to embed whole). All but the batch's are embedded "
                "once each, in the candidate bank. Hard negatives are added either way; each distinct item counts "
                "once."})
    target_view: str = field(default="target", metadata={
        "help": "How a target rollout is ranked. `target` (the paper's symmetric reward): it must find its query "
                "among the other queries. `query`: its query must find it among the other targets and the pair's "
                "hard negatives, as retrieval does; only this view meets near-copy targets."})
    discriminator: str | None = field(default=None, metadata={
        "help": "Process-reward discriminator: HF id/path or openai:BASE_URL#MODEL (default: the initial reasoner)."})
    process_candidates: int = field(default=4, metadata={"help": "Candidates shown to the discriminator."})
    candidate_tcots: str = field(default="annotation", metadata={
        "help": "T-CoTs of what rollouts are scored against: `annotation` (the pairs file's), `reasoner` (written "
                "once each by the starting policy, as an index built with it would hold them) or `none` (raw items)."})
    tcot_cache: str | None = field(default=None, metadata={
        "help": "T-CoT cache file for `candidate_tcots: reasoner` (shared with indexing and evaluation)."})
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only the first N pairs."})
    skip_bad: bool = field(default=False, metadata={"help": "Skip (and count) bad pairs lines."})
    modalities: list[str] | None = field(default=None, metadata={
        "help": "Roll out only items of these modalities (text, image, video, document); items of others are "
                "scored raw, as a reasoner with the same `modalities` leaves them (default: all)."})
    tcot_mode_by_set: dict[str, str] | None = field(default=None, metadata={
        "help": "Training datasets whose sides are read as evaluation's `tcot_mode_by_set` reads them, e.g. "
                "{Synth-Grounding: target}: that dataset's queries are neither rolled out nor given T-CoTs when "
                "scored (embedded raw), its targets are. Datasets not named: both sides (default)."})
    freeze_vision: bool = field(default=False, metadata={
        "help": "Keep the policy's vision tower as it is (train the language side only)."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters on the policy."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})

    def __post_init__(self):
        if self.outcome_form not in OUTCOME_FORMS:
            raise ValueError(f"outcome_form must be one of {list(OUTCOME_FORMS)}, not {self.outcome_form!r}")
        if self.outcome_failure not in OUTCOME_FAILURES:
            raise ValueError(f"outcome_failure must be one of {list(OUTCOME_FAILURES)}, not {self.outcome_failure!r}")
        if self.target_view not in TARGET_VIEWS:
            raise ValueError(f"target_view must be one of {list(TARGET_VIEWS)}, not {self.target_view!r}")
        if self.candidate_tcots not in CANDIDATE_TCOTS:
            raise ValueError(f"candidate_tcots must be one of {list(CANDIDATE_TCOTS)}, not {self.candidate_tcots!r}")
        bad = unknown_modes(self.tcot_mode_by_set)
        if bad:
            raise ValueError(f"tcot_mode_by_set: modes must be one of {list(TCOT_MODES)}, not {bad}")
        try:
            self.outcome_negatives = str(outcome_pool(self.outcome_negatives))
        except EmbedrlError as err:
            raise ValueError(str(err)) from None
        weights = self.active_weights()
        if not weights:
            raise ValueError("at least one of format_weight, process_weight, outcome_weight must be non-zero")
        self.reward_weights = [w for _, w in weights]
        super().__post_init__()

    def active_weights(self) -> list[tuple[str, float]]:
        return [(n, w) for n, w in (("format", self.format_weight), ("process", self.process_weight),
                                    ("outcome", self.outcome_weight)) if w]


class RolloutDataset:
    """Both sides of every pair as GRPO prompts, built lazily: `prompt` (chat), `images`, `pair_index`, `role`.

    `hf` is the `datasets.Dataset` TRL trains on; prompts and images are made on access
    (`with_transform`), so no pixels are copied into Arrow.
    """

    def __init__(self, pairs: Sequence[Pair], modalities: Sequence[str] | None = None,
                 mode_by_set: dict[str, str] | None = None):
        from datasets import Dataset

        self.pairs = list(pairs)
        unknown = sorted(set(mode_by_set or {}) - {p.dataset for p in self.pairs})
        if unknown:  # a typo would otherwise leave the dataset rolled out on both sides
            raise EmbedrlError(f"tcot_mode_by_set names {unknown}, which the training pairs do not hold "
                               f"(their datasets: {', '.join(sorted({p.dataset for p in self.pairs}))})")
        rows = [(i, role) for i, pair in enumerate(self.pairs) for role in ROLES
                if writes_tcot(pair, role, self.item(i, role), modalities, mode_by_set)]
        if not rows:
            raise EmbedrlError(f"no query or target of the training pairs is left to roll out (modalities "
                               f"{list(modalities or ['all'])}, T-CoT modes by dataset {mode_by_set or {}})")
        self.hf = Dataset.from_dict({"pair_index": [i for i, _ in rows], "role": [r for _, r in rows]})
        self.hf = self.hf.with_transform(self._expand)

    def item(self, i: int, role: str) -> Item:
        return self.pairs[i].query if role == "query" else self.pairs[i].pos

    def _expand(self, batch: dict[str, list]) -> dict[str, list]:
        built = [build_messages(self.item(i, r), r) for i, r in zip(batch["pair_index"], batch["role"])]
        return {**batch, "prompt": [m for m, _ in built], "images": [imgs for _, imgs in built]}


class CandidateBank:
    """Embeddings of what rollouts are scored against, computed once each and kept.

    Keys: ("query", i) and ("target", i), ("neg", i, j) for the pair's j-th hard negative. Each is
    embedded with a T-CoT from `tcots`: "annotation" (the pairs file's), "reasoner" (written once by
    `reasoner`, e.g. the starting policy: what an index built with it would hold, so rollouts are
    scored against candidates as retrieval will see them) or "none" (the raw item). Items outside
    `modalities`, and sides their dataset's `mode_by_set` entry leaves out, stay raw, as evaluation leaves them.
    """

    def __init__(self, embedder: Embedder, pairs: Sequence[Pair], tcots: str = "annotation", batch_size: int = 32,
                 modalities: Sequence[str] | None = None, reasoner=None, mode_by_set: dict[str, str] | None = None):
        if tcots not in CANDIDATE_TCOTS:
            raise EmbedrlError(f"candidate T-CoTs must be one of {list(CANDIDATE_TCOTS)}, not {tcots!r}")
        if tcots == "reasoner" and reasoner is None:
            raise EmbedrlError("candidate T-CoTs from a reasoner need the reasoner")
        self.embedder, self.pairs, self.tcots, self.reasoner = embedder, pairs, tcots, reasoner
        self.modalities, self.mode_by_set = modalities, mode_by_set
        self.batch_size = batch_size
        self.vectors: dict[tuple, torch.Tensor] = {}
        self.written: dict[tuple, TCoT | None] = {}
        self.hashes: dict[tuple, str] = {}

    def item(self, key: tuple) -> Item:
        pair = self.pairs[key[1]]
        return pair.negs[key[2]] if key[0] == "neg" else pair.query if key[0] == "query" else pair.pos

    def content(self, key: tuple) -> str:
        """The content hash of the item behind `key`: two pairs may share a target (a class label, an answer)."""
        if key not in self.hashes:
            self.hashes[key] = self.item(key).content_hash()
        return self.hashes[key]

    def annotation(self, role: str, i: int, j: int = 0) -> TCoT | None:
        """The annotated T-CoT of pair i's query, target, or j-th hard negative (role "neg")."""
        pair = self.pairs[i]
        text = pair.neg_tcot(j) if role == "neg" else pair.qry_tcot if role == "query" else pair.pos_tcot
        return parse_tcot(text) if text else None

    def has_tcot(self, key: tuple) -> bool:
        """Whether the item behind `key` is embedded with a T-CoT (a hard negative is a target)."""
        side = "query" if key[0] == "query" else "target"
        return self.tcots != "none" and writes_tcot(self.pairs[key[1]], side, self.item(key), self.modalities,
                                                    self.mode_by_set)

    def entries(self, keys: Sequence[tuple]) -> list[tuple[Item, TCoT | None]]:
        """The items behind keys and the T-CoTs they are embedded with (None: read raw)."""
        covered = {key: self.has_tcot(key) for key in keys}
        if self.tcots == "reasoner":  # written only for the items that will carry them
            missing = [k for k, has in covered.items() if has and k not in self.written]
            for role in ROLES:
                batch = [k for k in missing if (k[0] == "query") == (role == "query")]
                if batch:
                    written = self.reasoner.generate([self.item(k) for k in batch], role=role, show_progress=False)
                    self.written.update(zip(batch, written))
        tcot = self.written.__getitem__ if self.tcots == "reasoner" else lambda key: self.annotation(*key)
        return [(self.item(key), tcot(key) if covered[key] else None) for key in keys]

    def entry(self, key: tuple) -> tuple[Item, TCoT | None]:
        return self.entries([key])[0]

    def get(self, keys: Sequence[tuple]) -> torch.Tensor:
        missing = [k for k in dict.fromkeys(keys) if k not in self.vectors]
        if missing:
            items, tcots = zip(*self.entries(missing))
            vectors = self.embedder.encode(list(items), list(tcots), batch_size=self.batch_size)
            self.vectors.update(zip(missing, vectors))
        if not keys:
            return torch.empty(0, self.embedder.dim)
        return torch.stack([self.vectors[k] for k in keys])


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
        self.discriminator, self.bank, self.n_candidates = discriminator, bank, n_candidates
        self.rng = random.Random(seed)

    def _text(self, key: tuple) -> str:
        """A candidate as the discriminator reads it: its annotated T-CoT, else its raw text."""
        item, tcot = self.bank.entry(key)
        return render_tcot(tcot) if tcot else item.text

    def negatives(self, i: int, role: str, in_batch: list[int]) -> list[tuple]:
        """Keys of the wrong candidates for pair i's `role` rollout: a query's own hard negatives
        first (the near misses its evidence must rule out), topped up with other pairs of the batch."""
        other = "target" if role == "query" else "query"
        hard = [("neg", i, j) for j in range(len(self.dataset.pairs[i].negs))] if role == "query" else []
        hard = self.rng.sample(hard, min(len(hard), self.n_candidates - 1))
        pool = [(other, j) for j in in_batch if j != i]
        return hard + self.rng.sample(pool, min(len(pool), self.n_candidates - 1 - len(hard)))

    def question(self, i: int, role: str, tcot_text: str, in_batch: list[int]) -> tuple[str, int, int]:
        """The multiple-choice question for pair i's `role` T-CoT: (prompt, number of candidates, right answer).

        A negative that reads exactly like the positive is left out: no evidence can tell them apart,
        so asking would pay a coin flip."""
        positive = self._text(("target" if role == "query" else "query", i))
        negatives = [text for text in map(self._text, self.negatives(i, role, in_batch)) if text != positive]
        candidates, gold = shuffle_candidates(positive, negatives, self.rng)
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


class EGRLTrainer(ResumesFullWeights, GRPOTrainer):
    """GRPOTrainer that also times generation, for `embedrl bench rl`, and resumes the policy's weights
    (`ResumesFullWeights`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.generation_seconds = 0.0

    def _tokenize_prompts(self, prompts):
        # TRL marks a text-only prompt's images as None, which the processor rejects in a batch
        # that mixes text and image prompts (EG-RL always does); an empty list means the same.
        prompt_ids, images, fields = super()._tokenize_prompts(prompts)
        if images is not None:
            images = [imgs or [] for imgs in images]
        return prompt_ids, images, fields

    def _generate(self, prompts):
        start = time.perf_counter()
        try:
            return super()._generate(prompts)
        finally:
            self.generation_seconds += time.perf_counter() - start


def build_egrl_config(config_path: str | None, overrides: list[str] | None) -> EGRLConfig:
    from embedrl.config import build_config

    config = build_config(EGRLConfig, config_path, overrides, report_to="none", logging_steps=5,
                          save_strategy="steps", save_steps=100, bf16=False)
    if not (config.reasoner and config.embedder and config.train_data):
        raise EmbedrlError("set `reasoner`, `embedder` and `train_data` (in the config file or as key=value)")
    return config


def build_egrl_trainer(config: EGRLConfig, embedder: Embedder | None = None) -> EGRLTrainer:
    """The trainer, its reward functions and their shared candidate bank, ready to `train()`."""
    from embedrl.models.hf import freeze_vision_tower, load_vlm

    pairs, skipped = read_pairs(config.train_data, root=config.data_root, skip_bad=config.skip_bad)
    if skipped:
        logger.warning("skipped %d bad line(s) of %s; first: %s", len(skipped), config.train_data, skipped[0])
    pairs = pairs[: config.max_train_pairs] if config.max_train_pairs else pairs
    modalities = check_modalities(config.modalities)
    dataset = RolloutDataset(pairs, modalities, config.tcot_mode_by_set)
    embedder = embedder or load_embedder(config.embedder)
    embedder.module.requires_grad_(False)
    writer = None
    if config.candidate_tcots == "reasoner":
        from embedrl.models.reasoner import load_reasoner

        # a frozen copy of the starting policy writes the candidates' T-CoTs (once each, cached)
        writer = load_reasoner(config.reasoner, cache=config.tcot_cache, modalities=modalities)
    bank = CandidateBank(embedder, pairs, config.candidate_tcots, modalities=modalities, reasoner=writer,
                         mode_by_set=config.tcot_mode_by_set)
    rewards = []
    for name, _ in config.active_weights():
        if name == "format":
            rewards.append(FormatReward(dataset))
        elif name == "outcome":
            rewards.append(OutcomeReward(dataset, embedder, bank, config.outcome_k, config.outcome_tau,
                                         negatives=config.outcome_negatives, seed=config.seed,
                                         form=config.outcome_form, target_view=config.target_view,
                                         failure=config.outcome_failure))
            rewards[-1].embed_pool()
        else:
            from embedrl.train.discriminator import load_discriminator

            rewards.append(ProcessReward(dataset, load_discriminator(config.discriminator or config.reasoner), bank,
                                         config.process_candidates, config.seed))
    model, processor = load_vlm(config.reasoner, what="reasoner")
    if hasattr(model, "merge_and_unload"):  # an SFT run saved as LoRA adapters: train the merged policy
        model = model.merge_and_unload()
    if config.freeze_vision:
        freeze_vision_tower(model, what=f"reasoner {config.reasoner}")
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        from embedrl.models.base import LORA_TARGETS

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=LORA_TARGETS)
    return EGRLTrainer(model=model, processing_class=processor, reward_funcs=rewards, args=config,
                       train_dataset=dataset.hf, peft_config=peft_config)


def reward_spread(log_history: Sequence[dict[str, Any]], weights: dict[str, float]) -> dict[str, float]:
    """Each weighted reward's spread over rollouts: its weight x its logged std, averaged over the logs.

    GRPO standardises the total within each prompt's group, so a weight means nothing on its
    own: what steers training is how far each component moves the total compared with the
    others. A cosine margin that varies by 0.01 at weight 0.8 is drowned by a 0/1 format reward
    at weight 0.3, however the weights read.
    """
    return {name: sum(v for _, v in points) / len(points)
            for name, points in weighted_spread_by_step(log_history, weights).items()}


def weighted_spread_by_step(log_history: Sequence[dict[str, Any]],
                            weights: dict[str, float]) -> dict[str, list[tuple[int, float]]]:
    """(step, weight x logged std) for each reward that was logged; rows without it are skipped."""
    out = {}
    for name, weight in weights.items():
        key = f"rewards/{name}/std"
        points = [(row.get("step", 0), abs(weight) * row[key]) for row in log_history if key in row]
        if points:
            out[name] = points
    return out


def check_reward_balance(spread: dict[str, float], ratio: float = 0.2) -> list[str]:
    """Warnings for components that barely (or never) moved the total against the strongest one."""
    if not spread:
        return []
    top, top_spread = max(spread.items(), key=lambda kv: kv[1])
    warnings = []
    for name, value in spread.items():
        if value == 0:
            warnings.append(f"the {name} reward never varied over rollouts: it gave no training signal")
        elif value < ratio * top_spread:
            warnings.append(f"the {name} reward's weighted spread is {value:.3g} against {top}'s {top_spread:.3g}: "
                            f"it barely steers training; raise {name}_weight (x{top_spread / value:.2g} would "
                            f"match {top}) or lower {top}_weight")
    return warnings


def check_reward_drift(log_history: Sequence[dict[str, Any]], weights: dict[str, float],
                       fall: float = 0.5, entropy_rise: float = 1.3) -> list[str]:
    """Warnings for a run that traded one reward for another, or drifted off its start.

    Compares the mean of each logged value over the first and the last quarter of the logged
    steps. A reward that ends below `fall` times its start was given up, most often for the
    others (seen here: the format reward climbing to 0.9 while the outcome reward fell to 0);
    an entropy that ends `entropy_rise` times its start is a policy leaving what SFT taught it.
    Either way the run's end is worse for retrieval than its reward curve reads."""
    rows = [row for row in log_history if "reward" in row]
    if len(rows) < 4:
        return []
    quarter = len(rows) // 4

    def means(key: str) -> tuple[float, float] | None:
        first = [row[key] for row in rows[:quarter] if key in row]
        last = [row[key] for row in rows[-quarter:] if key in row]
        return (sum(first) / len(first), sum(last) / len(last)) if first and last else None

    trends = {name: got for name in weights if (got := means(f"rewards/{name}/mean"))}
    warnings = []
    for name, (start, end) in trends.items():
        if start > 0 and end < fall * start:
            others = ", ".join(f"{n} {a:.3g} to {b:.3g}" for n, (a, b) in trends.items() if n != name and (a or b))
            warnings.append(f"the {name} reward fell from {start:.3g} to {end:.3g} over the run"
                            f"{f' ({others})' if others else ''}: the policy gave it up; raise {name}_weight "
                            f"or lower learning_rate, and compare the checkpoints")
    entropy = means("entropy")
    if entropy and entropy[0] > 0 and entropy[1] > entropy_rise * entropy[0]:
        warnings.append(f"the policy's entropy rose from {entropy[0]:.3g} to {entropy[1]:.3g}: it is drifting "
                        f"away from its start; lower learning_rate or set beta > 0 (a KL anchor)")
    return warnings


def plot_reward_curves(log_history: Sequence[dict[str, Any]], path: str | Path,
                       weights: dict[str, float] | None = None) -> Path | None:
    """Each reward component (and the total) over training steps as a PNG; with `weights`, a
    second panel shows each component's weighted spread, the share of the advantage it steers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k for row in log_history for k in row if k.startswith("rewards/") and k.endswith("/mean")})
    rows = [r for r in log_history if "step" in r and "reward" in r]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2 if weights else 1, figsize=(12 if weights else 7, 4), squeeze=False)
    colours = {key.split("/")[1]: f"C{i + 1}" for i, key in enumerate(names)}  # same colour in both panels
    ax = axes[0][0]
    for key in ["reward", *names]:
        points = [(r["step"], r[key]) for r in rows if key in r]
        label = "total" if key == "reward" else key.split("/")[1]
        ax.plot(*zip(*points), label=label, linewidth=2 if key == "reward" else 1, color=colours.get(label, "C0"))
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("EG-RL rewards")
    ax.legend()
    ax.grid(alpha=0.3)
    if weights:
        ax = axes[0][1]
        for name, points in weighted_spread_by_step(rows, weights).items():
            ax.plot(*zip(*points), label=f"{name} (x{weights[name]:g})", color=colours.get(name))
        ax.set_xlabel("step")
        ax.set_ylabel("weight x std over rollouts")
        ax.set_title("What steers the advantage")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def train_eg_rl(config: EGRLConfig, resume: bool = False, embedder: Embedder | None = None) -> Path:
    """Run EG-RL and save the policy as a Reasoner directory at `config.output_dir`."""
    from embedrl.models.reasoner import Reasoner

    trainer = build_egrl_trainer(config, embedder)
    trainer.train(resume_from_checkpoint=resume_checkpoint(config.output_dir, resume))
    out = Path(config.output_dir)
    history = trainer.state.log_history
    write_json(out / "log_history.json", history)
    weights = dict(config.active_weights())
    spread = reward_spread(history, weights)
    logger.info("weighted reward spread (weight x std over rollouts): %s",
                ", ".join(f"{name} {value:.3g}" for name, value in spread.items()))
    for warning in check_reward_balance(spread) + check_reward_drift(history, weights):
        logger.warning(warning)
    plot_reward_curves(history, out / "reward_curves.png", weights)
    # last: the reasoner's config file marks the run complete
    Reasoner(trainer.model, trainer.processing_class, name_or_path=str(out)).save_pretrained(out)
    return out
