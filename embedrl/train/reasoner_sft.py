"""T-CoT SFT: `embedrl train reasoner-sft --config FILE [key=value ...]`.

Teaches a Reasoner to write T-CoTs from the annotations of a pairs file (`qry_tcot` /
`pos_tcot`). Each pair gives up to two examples, one per role: the query with its T-CoT
and the positive target with its T-CoT. The prompt is exactly what `Reasoner.generate`
shows (`embedrl.models.prompts.build_messages`); the completion is the T-CoT text, and
the loss is on the completion only (TRL's prompt-completion format).

The dataset handed to TRL's `SFTTrainer` is a `datasets.Dataset` with conversational
`prompt` / `completion` columns and an `images` column (the item's image, or its video
frames in order) stored as file paths that decode lazily, so a large pairs file is not
loaded into memory up front. Annotations that do not parse (`parse_tcot(...).valid` is
False) are skipped and counted. LoRA is optional (PEFT); the final model is saved in HF
layout with its processor (adapters in PEFT layout, or merged with `merge_lora: true`), so
`load_reasoner(output_dir)` works.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from embedrl.core.config import build_config as _build_config
from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_json, write_json
from embedrl.core.items import Item, Pair
from embedrl.core.tcot import check_evidence, parse_tcot, tcot_usage
from embedrl.data.pairs import check_item_media, read_pairs
from embedrl.models.base import LORA_TARGETS
from embedrl.models.hf import freeze_vision_tower
from embedrl.models.prompts import DEFAULT_PROMPT_SET, ROLES, build_messages, modality_of
from embedrl.models.reasoner import check_modalities, recorded_prompt_set
from embedrl.train.checkpoints import ResumesFullWeights, resume_checkpoint

logger = logging.getLogger(__name__)

PROBE_FILE = "probe.json"


def set_bf16_default(config: SFTConfig) -> None:
    """TRL's default is bf16; left unset, use it only where the GPU supports it (fp32 on CPU)."""
    import torch

    if config.bf16 is None and not config.fp16:
        config.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class ReasonerSFTConfig(SFTConfig):
    """Everything `trl.SFTConfig` has, plus the fields below."""

    model: str = field(default="", metadata={"help": "Reasoner to start from: a model directory or a Hub id "
                                                     "of an image-text-to-text model."})
    train_data: str = field(default="", metadata={"help": "Pairs JSONL with qry_tcot / pos_tcot annotations."})
    prompt_set: str = field(default="", metadata={
        "help": "Reasoner prompt set: default (short prompts) or embed-rl (the paper's T-CoT prompts); default: "
                "the one the starting model records, else default. Saved with the model."})
    data_root: str | None = field(default=None, metadata={
        "help": "Folder that relative media paths in train_data are relative to (default: the file's folder)."})
    processor_kwargs: dict[str, Any] | None = field(default=None, metadata={
        "help": "Passed to AutoProcessor.from_pretrained, e.g. {max_pixels: 401408} to cap image tokens."})
    roles: list[str] = field(default_factory=lambda: list(ROLES), metadata={
        "help": "Which roles to train on: query (qry_tcot), target (pos_tcot), or both."})
    modalities: list[str] | None = field(default=None, metadata={
        "help": "Train only on items of these modalities (text, image, video, document), the ones the reasoner "
                "will write T-CoTs for (default: all)."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default=LORA_TARGETS, metadata={"help": "Regex of the modules LoRA wraps."})
    merge_lora: bool = field(default=False, metadata={"help": "Save the LoRA model merged (plain HF layout)."})
    freeze_vision: bool = field(default=False, metadata={
        "help": "Keep the vision tower's weights as they are (train the language side only)."})
    skip_bad: bool = field(default=False, metadata={"help": "Skip (and count) bad pairs lines instead of failing."})
    check_media: bool = field(default=True, metadata={"help": "Open every image before training starts."})
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only the first N pairs."})
    probe_data: str | None = field(default=None, metadata={
        "help": "Pairs JSONL whose items probe each saved checkpoint (every save_steps, and the last step): greedy "
                "T-CoTs for its queries and positives, counted usable or broken. The run keeps the checkpoint whose "
                "T-CoTs are most often usable instead of the last (probe.json says which): a small reasoner's share "
                "can swing between neighbouring checkpoints, and an embedder reads a broken T-CoT as raw input. Items unseen in training (another draw) make it a validation set. "
                "None: keep the last."})
    probe_data_root: str | None = field(default=None, metadata={
        "help": "Folder probe_data's media paths are relative to (default: the file's folder)."})
    probe_items: int = field(default=64, metadata={
        "help": "Probe items per checkpoint (the first ones, queries and positives alternating)."})
    probe_modalities: list[str] | None = field(default=None, metadata={
        "help": "Probe only items of these modalities (those the reasoner will write T-CoTs for; default: all)."})
    probe_max_new_tokens: int = field(default=128, metadata={"help": "Longest probe T-CoT (tokens), as evaluation's."})

    def __post_init__(self):
        set_bf16_default(self)
        bad = sorted(set(self.roles) - set(ROLES))
        if bad or not self.roles:
            raise ValueError(f"roles must be a non-empty subset of {list(ROLES)}, not {self.roles}")
        super().__post_init__()
        if self.probe_data and str(getattr(self.save_strategy, "value", self.save_strategy)) != "steps":
            raise ValueError("probe_data probes saved checkpoints: set save_strategy: steps (and save_steps)")


def build_config(config: str | Path | None = None, overrides: list[str] | None = None) -> ReasonerSFTConfig:
    cfg = _build_config(ReasonerSFTConfig, config, overrides)
    if not cfg.model:
        raise EmbedrlError("set `model` (a reasoner directory or Hub id) in the config or as model=...")
    if not cfg.train_data:
        raise EmbedrlError("set `train_data` (a pairs JSONL with T-CoT annotations)")
    return cfg


def sft_example(item: Item, role: str, tcot_text: str, prompt_set: str = DEFAULT_PROMPT_SET) -> dict[str, Any]:
    """One prompt-completion example: the generation prompt for `item` and its T-CoT as the answer."""
    messages, images = build_messages(item, role, load=False, prompt_set=prompt_set)
    if not all(isinstance(i, (str, Path)) for i in images):
        raise EmbedrlError("SFT examples need media as file paths, not in-memory images")
    return {"prompt": messages,
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": tcot_text}]}],
            "images": [str(i) for i in images]}


def sft_examples(pairs: list[Pair], roles: list[str] | tuple[str, ...] = ROLES,
                 modalities: list[str] | tuple[str, ...] | None = None,
                 prompt_set: str = DEFAULT_PROMPT_SET) -> tuple[list[dict], Counter]:
    """Examples from the pairs' annotations (both roles, all modalities by default) and counts of what was skipped."""
    examples, skipped = [], Counter()
    for pair in pairs:
        for role, item, text in (("query", pair.query, pair.qry_tcot), ("target", pair.pos, pair.pos_tcot)):
            if role not in roles:
                continue
            if modalities is not None and modality_of(item) not in modalities:
                skipped["other modality"] += 1
                continue
            if not text:
                skipped["no annotation"] += 1
                continue
            tcot = parse_tcot(text)
            if not tcot.valid or check_evidence(tcot, item) is not None:
                skipped["invalid annotation"] += 1
                continue
            examples.append(sft_example(item, role, text.strip(), prompt_set))
    return examples, skipped


def make_dataset(examples: list[dict]):
    """A `datasets.Dataset` TRL's SFTTrainer reads for VLMs; `images` (if any) decode lazily from their paths."""
    import datasets

    ds = datasets.Dataset.from_list(examples)
    return ds.cast_column("images", datasets.List(datasets.Image())) if "images" in ds.column_names else ds


def train_reasoner_sft(config: ReasonerSFTConfig, resume: bool = False) -> Path:
    """Run SFT and save the final Reasoner to `config.output_dir`; returns that path."""
    pairs, bad_lines = read_pairs(config.train_data, root=config.data_root, skip_bad=config.skip_bad,
                                  check_media=config.check_media)
    if config.max_train_pairs:
        pairs = pairs[:config.max_train_pairs]
    prompt_set = config.prompt_set or recorded_prompt_set(config.model)
    examples, skipped = sft_examples(pairs, config.roles, check_modalities(config.modalities), prompt_set)
    if bad_lines:
        skipped["bad line"] += len(bad_lines)
    if not examples:
        raise EmbedrlError(f"{config.train_data}: no usable T-CoT annotations ({dict(skipped)})")
    logger.info("T-CoT SFT on %d examples from %d pairs (skipped: %s)", len(examples), len(pairs),
                dict(skipped) or "none")
    return run_sft(config, examples, resume)


def probe_items(config: ReasonerSFTConfig) -> list[tuple[Item, str]]:
    """(item, role) from `probe_data`: each pair's query and positive in turn, `probe_items` of them."""
    pairs, _ = read_pairs(config.probe_data, root=config.probe_data_root, skip_bad=config.skip_bad,
                          check_media=False)
    wanted = check_modalities(config.probe_modalities)
    items = [(item, role) for pair in pairs for item, role in ((pair.query, "query"), (pair.pos, "target"))
             if wanted is None or modality_of(item) in wanted][:config.probe_items]
    if not items:
        raise EmbedrlError(f"probe_data {config.probe_data}: no item of modalities {wanted} to probe with")
    for item, _ in items:  # before training, not at the first save
        check_item_media(item)
    return items


class UsableShareProbe(TrainerCallback):
    """After each checkpoint save, the share of greedy T-CoTs an embedder could use on fixed probe items;
    the best checkpoint so far becomes the Trainer's `best_model_checkpoint` (so rotation keeps it).

    Each item is asked in the role its pair gives it. Results go to OUTPUT_DIR/probe.json, written
    after every probe, and a resumed run reads back what it had measured."""

    def __init__(self, items: list[tuple[Item, str]], processor, output_dir: str | Path,
                 resumed_from: str | None = None, max_new_tokens: int = 128, prompt_set: str = DEFAULT_PROMPT_SET):
        self.items, self.processor, self.max_new_tokens = items, processor, max_new_tokens
        self.prompt_set = prompt_set
        self.path = Path(output_dir) / PROBE_FILE
        self.results: list[dict[str, Any]] = []
        if resumed_from and self.path.is_file():  # what the interrupted run measured up to its checkpoint
            step = int(Path(resumed_from).name.rsplit("-", 1)[1])
            self.results = [r for r in read_json(self.path)["checkpoints"] if r["step"] <= step]

    def on_train_begin(self, args, state, control, **kwargs):
        best = self.best()
        if best:  # a resumed run: rotation must keep the best checkpoint measured before
            state.best_model_checkpoint, state.best_metric = best["checkpoint"], best["usable"]

    def share(self, model) -> float:
        from embedrl.models.reasoner import Reasoner

        was_training = model.training
        reasoner = Reasoner(model, self.processor, device=next(model.parameters()).device,
                            max_new_tokens=self.max_new_tokens, prompt_set=self.prompt_set)
        usable = 0
        for role in ROLES:
            items = [item for item, r in self.items if r == role]
            if items:
                usable += tcot_usage(items, reasoner.generate(items, role, use_tcot_cache=False,
                                                              show_progress=False))["usable"]
        model.train(was_training)
        return usable / len(self.items)

    def on_save(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        checkpoint = str(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        share = self.share(model)
        self.results = [r for r in self.results if r["step"] < state.global_step]
        self.results.append({"step": state.global_step, "checkpoint": checkpoint, "usable": share})
        best = self.best()
        state.best_model_checkpoint, state.best_metric = best["checkpoint"], best["usable"]
        logger.info("probe at step %d: %.1f%% of %d T-CoTs usable (best: step %d, %.1f%%)", state.global_step,
                    100 * share, len(self.items), best["step"], 100 * best["usable"])
        write_json(self.path, {"items": len(self.items), "checkpoints": self.results, "chosen": best})

    def best(self) -> dict[str, Any] | None:
        """The most usable checkpoint still on disk; of equals, the later one."""
        kept = [r for r in self.results if Path(r["checkpoint"]).is_dir()]
        return max(reversed(kept), key=lambda r: r["usable"]) if kept else None


class ReasonerSFTTrainer(ResumesFullWeights, SFTTrainer):
    """TRL's SFTTrainer whose resume restores the reasoner's weights (`ResumesFullWeights`)."""


def run_sft(config: SFTConfig, examples: list[dict], resume: bool = False) -> Path:
    """SFTTrainer on prompt-completion examples; saves the Reasoner to `config.output_dir` (T-CoT SFT and
    the perception warm-up both end here). LoRA when the config has `lora: true`."""
    from embedrl.models.reasoner import load_reasoner

    reasoner = load_reasoner(config.model, device="cpu",  # the Trainer places the model
                             processor_kwargs=getattr(config, "processor_kwargs", None),
                             prompt_set=getattr(config, "prompt_set", None) or None)
    model = reasoner.model
    if getattr(config, "lora", False):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                 lora_dropout=config.lora_dropout,
                                                 target_modules=config.lora_target_modules))
        model.print_trainable_parameters()
    if getattr(config, "freeze_vision", False):
        freeze_vision_tower(model, what=f"reasoner {config.model}")
    model.train()
    checkpoint = resume_checkpoint(config.output_dir, resume)
    probe = None
    if getattr(config, "probe_data", None):
        probe = UsableShareProbe(probe_items(config), reasoner.processor, config.output_dir, checkpoint,
                                 config.probe_max_new_tokens, reasoner.prompt_set.name)
    trainer = ReasonerSFTTrainer(model=model, args=config, train_dataset=make_dataset(examples),
                                 processing_class=reasoner.processor, callbacks=[probe] if probe else None)
    trainer.train(resume_from_checkpoint=checkpoint)
    out = Path(config.output_dir)
    trainer.save_state()  # trainer_state.json: the logged losses, for plots and checks
    if trainer.is_world_process_zero():
        reasoner.model = trainer.accelerator.unwrap_model(trainer.model)
        chosen = probe.best() if probe is not None else None
        if chosen and chosen["step"] != trainer.state.global_step:
            logger.info("keeping checkpoint %s (%.1f%% of probe T-CoTs usable) instead of the last step's",
                        chosen["checkpoint"], 100 * chosen["usable"])
            trainer._load_from_checkpoint(chosen["checkpoint"], reasoner.model)
        reasoner.save_pretrained(out, merge_lora=getattr(config, "merge_lora", False))
    trainer.accelerator.wait_for_everyone()
    return out
