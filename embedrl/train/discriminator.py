"""The process reward's discriminator: picks which candidate T-CoT matches a query T-CoT.

Pluggable: any HF image-text-to-text (or causal LM) id/path, run in-process, or an
OpenAI-compatible chat endpoint given as `openai:BASE_URL#MODEL`
(e.g. `openai:http://127.0.0.1:8000/v1#Qwen2-VL-7B-Instruct`).

A real VLM answers the multiple-choice question out of the box; the tiny preset does not, so
`embedrl train discriminator` teaches one on the annotated T-CoTs of a pairs file: the very
questions EG-RL's process reward asks (`ProcessReward.question`), with the annotation in place
of a rollout, answered with the positive's letter.
"""

from __future__ import annotations

import json
import logging
import random
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import SFTConfig

from embedrl.errors import EmbedrlError
from embedrl.items import Pair
from embedrl.train.rewards import parse_choice

logger = logging.getLogger(__name__)


def question_messages(prompt: str) -> list[dict[str, Any]]:
    """The chat turn a discriminator is asked in (training and the process reward alike)."""
    return [{"role": "user", "content": [{"type": "text", "text": prompt}]}]


class HFDiscriminator:
    """A chat model answering the multiple-choice prompt with a letter (greedy, a few tokens)."""

    def __init__(self, name_or_path: str, device: str | None = None, max_new_tokens: int = 4, batch_size: int = 16):
        from embedrl.models.hf import load_vlm

        self.model, self.processor = load_vlm(name_or_path, what="discriminator")
        self.model.eval().requires_grad_(False)
        self.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def choose(self, prompts: Sequence[str], n_candidates: Sequence[int]) -> list[int | None]:
        tok = self.processor.tokenizer
        out: list[int | None] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            texts = [self.processor.apply_chat_template(question_messages(p), tokenize=False,
                                                        add_generation_prompt=True) for p in chunk]
            batch = self.processor(text=texts, padding=True, padding_side="left", return_tensors="pt").to(
                self.model.device)
            with torch.inference_mode():
                generated = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                                pad_token_id=tok.pad_token_id or tok.eos_token_id)
            answers = tok.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [parse_choice(a, n) for a, n in zip(answers, n_candidates[start:start + len(chunk)])]
        return out


class OpenAIDiscriminator:
    """An OpenAI-compatible `/chat/completions` endpoint (vLLM, TGI, llama.cpp server, ...)."""

    def __init__(self, base_url: str, model: str, timeout: float = 60.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout

    def choose(self, prompts: Sequence[str], n_candidates: Sequence[int]) -> list[int | None]:
        out = []
        for prompt, n in zip(prompts, n_candidates):
            body = json.dumps({"model": self.model, "max_tokens": 4, "temperature": 0,
                               "messages": [{"role": "user", "content": prompt}]}).encode()
            request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer = json.load(response)["choices"][0]["message"]["content"]
            except (OSError, KeyError, ValueError) as e:
                raise EmbedrlError(f"discriminator endpoint {self.url} failed: {e}") from e
            out.append(parse_choice(answer or "", n))
        return out


def load_discriminator(spec: str):
    if spec.startswith("openai:"):
        url, sep, model = spec[len("openai:"):].partition("#")
        if not sep or not model:
            raise EmbedrlError("an endpoint discriminator is written openai:BASE_URL#MODEL")
        return OpenAIDiscriminator(url, model)
    return HFDiscriminator(spec)


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
    from embedrl.config import build_config as _build_config

    cfg = _build_config(DiscriminatorSFTConfig, config, overrides)
    if not (cfg.model and cfg.train_data):
        raise EmbedrlError("set `model` (e.g. the tiny-reasoner preset) and `train_data` (an annotated pairs JSONL)")
    return cfg


def discriminator_examples(pairs: Sequence[Pair], n_candidates: int = 4, questions: int = 4,
                           seed: int = 0) -> list[dict[str, Any]]:
    """Prompt-completion examples: process-reward questions about each annotated T-CoT, answered.

    The other pairs of a question's "batch" are drawn at random, as EG-RL's step batch would be.
    """
    from embedrl.tcot import render_tcot
    from embedrl.train.egrl import ROLES, CandidateBank, ProcessReward, RolloutDataset

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
    from embedrl.items import read_pairs
    from embedrl.train.reasoner_sft import run_sft

    pairs, bad = read_pairs(config.train_data, root=config.data_root, skip_bad=config.skip_bad, check_media=False)
    pairs = pairs[: config.max_train_pairs] if config.max_train_pairs else pairs
    examples = discriminator_examples(pairs, config.candidates, config.questions_per_item, config.seed)
    if not examples:
        raise EmbedrlError(f"{config.train_data}: no pair has a usable T-CoT annotation to ask about")
    logger.info("discriminator SFT on %d questions from %d pairs (%d bad line(s) skipped)", len(examples),
                len(pairs), len(bad))
    return run_sft(config, examples, resume)
