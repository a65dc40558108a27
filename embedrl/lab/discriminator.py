"""`embedrl train discriminator`: teach a model the process reward's question.

A real VLM answers EG-RL's multiple-choice question (which candidate T-CoT matches the
query's) out of the box; the tiny preset does not, so this SFT teaches one on the annotated
T-CoTs of a pairs file: the very questions the process reward asks (`ProcessReward.question`),
with the annotation in place of a rollout, answered with the positive's letter. The result
loads as a judge with `embedrl.train.egrl.judge.load_discriminator`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTConfig

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Pair
from embedrl.train.egrl.judge import question_messages

logger = logging.getLogger(__name__)


@dataclass
class DiscriminatorSFTConfig(SFTConfig):
    """Everything `trl.SFTConfig` has, plus the fields below."""

    model: str = field(default="", metadata={"help": "Model to teach: a reasoner directory (e.g. the tiny preset)."})
    train_data: str = field(default="", metadata={"help": "Pairs JSONL with qry_tcot / pos_tcot (/ neg_tcot)."})
    data_root: str | None = field(default=None, metadata={"help": "Folder media paths are relative to."})
    candidates: int = field(default=4, metadata={"help": "Candidates per question (EG-RL's process_candidates)."})
    questions_per_item: int = field(default=4, metadata={
        "help": "Questions per annotated query / target, each with other candidates in another order."})
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only the first N pairs."})
    skip_bad: bool = field(default=False, metadata={"help": "Skip (and count) bad pairs lines."})

    def __post_init__(self):
        from embedrl.train.reasoner_sft import set_bf16_default

        set_bf16_default(self)
        if self.candidates < 2:
            raise ValueError(f"candidates must be at least 2, not {self.candidates}")
        super().__post_init__()


def build_config(config: str | Path | None = None, overrides: list[str] | None = None) -> DiscriminatorSFTConfig:
    from embedrl.core.config import build_config as _build_config

    cfg = _build_config(DiscriminatorSFTConfig, config, overrides)
    if not (cfg.model and cfg.train_data):
        raise EmbedrlError("set `model` (e.g. the tiny-reasoner preset) and `train_data` (an annotated pairs JSONL)")
    return cfg


def discriminator_examples(pairs: Sequence[Pair], n_candidates: int = 4, questions: int = 4,
                           seed: int = 0) -> list[dict[str, Any]]:
    """Prompt-completion examples: process-reward questions about each annotated T-CoT, answered.

    The other pairs of a question's "batch" are drawn at random, as EG-RL's step batch would be.
    """
    from embedrl.core.tcot import render_tcot
    from embedrl.models.prompts import ROLES
    from embedrl.train.egrl.rewards import ProcessReward
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    pairs = list(pairs)
    bank = CandidateBank(None, pairs)  # only its annotations are read: no embedder needed
    asker = ProcessReward(RolloutDataset(pairs), None, bank, n_candidates, seed)
    rng = random.Random(seed)
    examples = []
    for i in range(len(pairs)):
        for role in ROLES:
            _, tcot = bank.entry((role, i))
            if tcot is None or not tcot.valid:
                continue
            for _ in range(questions):
                in_batch = [i, *rng.sample(range(len(pairs)), min(len(pairs), n_candidates) - 1)]
                prompt, _, gold = asker.question(i, role, render_tcot(tcot), in_batch)
                examples.append({"prompt": question_messages(prompt), "completion": [
                    {"role": "assistant", "content": [{"type": "text", "text": chr(ord("A") + gold)}]}]})
    return examples


def train_discriminator(config: DiscriminatorSFTConfig, resume: bool = False) -> Path:
    """SFT on the process reward's questions; saves a model `load_discriminator(output_dir)` reads."""
    from embedrl.data.pairs import read_pairs
    from embedrl.train.reasoner_sft import run_sft

    pairs, bad = read_pairs(config.train_data, root=config.data_root, skip_bad=config.skip_bad, check_media=False)
    pairs = pairs[: config.max_train_pairs] if config.max_train_pairs else pairs
    examples = discriminator_examples(pairs, config.candidates, config.questions_per_item, config.seed)
    if not examples:
        raise EmbedrlError(f"{config.train_data}: no pair has a usable T-CoT annotation to ask about")
    logger.info("discriminator SFT on %d questions from %d pairs (%d bad line(s) skipped)", len(examples),
                len(pairs), len(bad))
    return run_sft(config, examples, resume)
