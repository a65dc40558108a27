"""Contrastive Embedder training: `embedrl train embedder --config FILE [key=value ...]`.

A `transformers.Trainer` subclass, so accelerate (DDP), DeepSpeed ZeRO and FSDP work
unchanged. What it adds:
  - symmetric InfoNCE over the global batch: queries and targets of every process are
    gathered *with gradient* (`embedrl.core.dist.gather_with_grad`), plus hard negatives
    from the pairs' `neg_*` fields;
  - GradCache (`gradcache_chunk_size > 0`): embeddings are computed in chunks without a
    graph, the loss's gradient w.r.t. each embedding is taken once, then each chunk is
    re-run with its graph and back-propagated with that gradient. The contrastive batch can
    then exceed what fits in memory; loss and gradients equal one full-batch pass
    (tests/test_train_embedder.py checks within 1e-4). RNG state is replayed per chunk so
    dropout matches between the two passes;
  - per-dataset batches drawn with weights (`embedrl.train.data.DatasetBatchSampler`);
  - LoRA (PEFT) for VLM backends, checkpoints in the Embedder's own layout (loadable with
    `load_embedder`) plus an exact train-state file for `--resume`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from embedrl.core.errors import EmbedrlError
from embedrl.data.mmeb_train import read_mmeb_train
from embedrl.data.pairs import read_pairs
from embedrl.models.base import Embedder, load_embedder
from embedrl.train.checkpoints import resume_checkpoint
from embedrl.train.data import DatasetBatchSampler, PairCollator, PairDataset, check_tcot_coverage
from embedrl.train.losses import InfoNCELoss

logger = logging.getLogger(__name__)

TRAIN_STATE = "embedrl_train_state.safetensors"


@dataclass
class EmbedderTrainingConfig(TrainingArguments):
    """Everything `TrainingArguments` has, plus the contrastive-training fields below."""

    model: str = field(default="", metadata={"help": "Embedder to start from: a saved/preset directory, "
                                                     "open_clip:ARCH[:TAG], or a Hub id of a VLM."})
    format: str = field(default="", metadata={
        "help": "Embedding format of a VLM embedder (embed-rl, vlm2vec, gme, qwen3-vl-embedding); default: the one "
                "the model records or its files identify, else embed-rl, the paper's layout. Saved in embedrl.json."})
    train_data: str = field(default="", metadata={"help": "Pairs JSONL (MMEB-train style). Or give `data`."})
    data: dict[str, Any] | None = field(default=None, metadata={
        "help": "MMEB-train read from its published files: {mmeb_train: REPOSITORY_FOLDER, subsets: [ImageNet_1K, "
                "...] (default: all 20), split: original | diverse_instruction, num_sample_per_subset: N or "
                "{subset: N}}. Pairs are grouped by subset (dataset_weights keys)."})
    data_root: str | None = field(default=None, metadata={
        "help": "Folder that relative media paths in train_data are relative to (default: the file's folder)."})
    temperature: float = field(default=0.02, metadata={"help": "InfoNCE temperature (initial value if learnable)."})
    learnable_temperature: bool = field(default=False, metadata={"help": "Learn the temperature (not with GradCache)."})
    hard_negatives: int = field(default=1, metadata={"help": "Hard negatives per pair taken from neg_* fields.",
                                                     "min": 0})
    use_tcot: bool = field(default=False, metadata={"help": "Condition on the pairs' qry_tcot/pos_tcot annotations."})
    tcot_dropout: float = field(default=0.0, metadata={
        "help": "With use_tcot: chance that a batch's query (or target) side is left raw, so the embedder "
                "also serves raw input.", "min": 0})
    tcot_negatives: int = field(default=0, metadata={
        "help": "With use_tcot: per pair and side, candidates with the pair's own item and another pair's "
                "T-CoT, so the embedder learns whether evidence fits its item.", "min": 0})
    gradcache_chunk_size: int = field(default=0, metadata={
        "help": "GradCache chunk size in items (0: plain full-batch forward).", "min": 0})
    gather_negatives: bool = field(default=True, metadata={"help": "Use other processes' items as negatives."})
    dataset_weights: dict[str, float] | None = field(default=None, metadata={
        "help": "Sampling weight per dataset name (default: proportional to size)."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (VLM backend) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank.", "min": 1})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha.", "min": 1})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    skip_bad: bool = field(default=False, metadata={"help": "Skip (and count) bad pairs lines instead of failing."})
    check_media: bool = field(default=True, metadata={"help": "Open every image before training starts."})
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only the first N pairs.", "min": 1})

    def __post_init__(self):
        if self.learnable_temperature and self.gradcache_chunk_size:
            raise ValueError("learnable_temperature cannot be combined with gradcache_chunk_size")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        super().__post_init__()


class ContrastiveModel(nn.Module):
    """What the Trainer (and DDP) sees: the embedder's weights plus the (log) logit scale.

    `forward(*chunk_lists)` embeds each list of collated chunks and returns the embeddings
    followed by the logit scale, so everything trainable is used inside one forward call.
    """

    def __init__(self, embedder: Embedder, temperature: float, learnable: bool):
        super().__init__()
        self.encoder = embedder.module
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)), requires_grad=learnable)
        self._embedder = (embedder,)  # a tuple, so it is not registered as a submodule twice

    @property
    def embedder(self) -> Embedder:
        return self._embedder[0]

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Called by the Trainer for `gradient_checkpointing: true`; delegated to the backbone."""
        if not hasattr(self.encoder, "gradient_checkpointing_enable"):
            raise EmbedrlError(f"gradient checkpointing is not supported by the {self.embedder.backend} backend")
        self.encoder.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs or {"use_reentrant": False})
        if hasattr(self.encoder, "enable_input_require_grads"):  # LoRA: inputs must carry grad
            self.encoder.enable_input_require_grads()

    def forward(self, *chunk_lists: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        embs = tuple(torch.cat([self.embedder.forward(c) for c in chunks]) for chunks in chunk_lists)
        return (*embs, self.log_scale.exp().clamp(max=100.0))


class EmbedderTrainer(Trainer):
    def __init__(self, *args: Any, loss_fn: InfoNCELoss, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn

    @property
    def embedder(self) -> Embedder:
        return self.accelerator.unwrap_model(self.model).embedder

    def get_train_dataloader(self):
        from torch.utils.data import DataLoader

        sampler = DatasetBatchSampler(self.train_dataset.by_dataset(), self._train_batch_size,
                                      self.args.dataset_weights, seed=self.args.seed)
        loader = DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers)
        return self.accelerator.prepare(loader)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self.loss_fn.last_num_candidates:  # shows the global batch (all processes)
            logs["candidates_per_query"] = self.loss_fn.last_num_candidates
        super().log(logs, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        queries, targets, scale = model(inputs["query_chunks"], inputs["target_chunks"])
        loss = self.loss_fn(queries, targets, inputs["n_pos"], scale)
        return (loss, (queries, targets)) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.args.gradcache_chunk_size:
            return super().training_step(model, inputs, num_items_in_batch)
        return self._gradcache_step(model, self._prepare_inputs(inputs))

    def _gradcache_step(self, model, inputs) -> torch.Tensor:
        model.train()
        sides = [inputs["query_chunks"], inputs["target_chunks"]]
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        # Pass 1: embeddings without a graph, remembering each chunk's RNG state.
        states, reps = [], []
        with torch.no_grad(), self.compute_loss_context_manager():
            for chunks in sides:
                side = []
                for chunk in chunks:
                    states.append((torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]))
                    emb, scale = model([chunk])
                    side.append(emb)
                reps.append(torch.cat(side).detach().requires_grad_())
        # The loss and its gradient w.r.t. every embedding.
        loss = self.loss_fn(reps[0], reps[1], inputs["n_pos"], scale.detach())
        (loss / self.current_gradient_accumulation_steps).backward()
        # Pass 2: re-run each chunk with its graph and push the cached gradient through it.
        n_chunks = sum(len(chunks) for chunks in sides)
        k = 0
        for chunks, rep in zip(sides, reps):
            offset = 0
            for chunk in chunks:
                last = k == n_chunks - 1
                sync = contextlib.nullcontext() if last else self.accelerator.no_sync(model)
                cpu_state, cuda_states = states[k]
                with sync, torch.random.fork_rng(devices=devices), self.compute_loss_context_manager():
                    torch.set_rng_state(cpu_state)
                    for d, s in zip(devices, cuda_states):
                        torch.cuda.set_rng_state(s, d)
                    emb, _ = model([chunk])
                    emb.backward(rep.grad[offset:offset + emb.shape[0]])
                offset += emb.shape[0]
                k += 1
        return loss.detach() / self.current_gradient_accumulation_steps

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_model

        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        self.embedder.save_pretrained(output_dir)
        save_model(self.accelerator.unwrap_model(self.model), str(Path(output_dir) / TRAIN_STATE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        from safetensors.torch import load_model

        path = Path(resume_from_checkpoint) / TRAIN_STATE
        if not path.is_file():
            raise EmbedrlError(f"{resume_from_checkpoint} is not an embedrl checkpoint (no {TRAIN_STATE})")
        load_model(self.accelerator.unwrap_model(model or self.model), str(path))


def build_config(config_path: str | None, overrides: list[str] | None) -> EmbedderTrainingConfig:
    from embedrl.core.config import build_config as _build

    config = _build(EmbedderTrainingConfig, config_path, overrides, report_to="none",
                    remove_unused_columns=False, save_strategy="steps", save_steps=200, logging_steps=10)
    if not config.model or not (config.train_data or config.data):
        raise EmbedrlError("set `model` and the training data, `train_data` (pairs JSONL) or `data` (MMEB-train), "
                           "in the config file or as key=value")
    if config.train_data and config.data:
        raise EmbedrlError("set one of `train_data` and `data`, not both")
    return config


def training_format(model: str, asked: str) -> str | None:
    """The format to train a VLM in: the one asked for, else the model's own, else embed-rl (the default)."""
    from embedrl.models.base import backend_of
    from embedrl.models.formats import DEFAULT_VLM_FORMAT
    from embedrl.models.vlm_embedder import recorded_format

    if asked or backend_of(model) != "vlm":
        return asked or None
    return recorded_format(model) or DEFAULT_VLM_FORMAT


def train_embedder(config: EmbedderTrainingConfig, resume: bool = False) -> Path:
    """Train, save the final Embedder to `config.output_dir`, and return that path."""
    embedder = load_embedder(config.model, format=training_format(config.model, config.format))
    if config.lora:
        if not hasattr(embedder, "apply_lora"):
            raise EmbedrlError(f"LoRA is supported for VLM embedders; {config.model} is {embedder.backend}")
        embedder.apply_lora(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
    if config.data:
        pairs, skipped = read_mmeb_train(config.data, skip_bad=config.skip_bad)
    else:
        pairs, skipped = read_pairs(config.train_data, root=config.data_root, skip_bad=config.skip_bad,
                                    check_media=config.check_media)
    if skipped:
        logger.warning("skipped %d bad row(s) of the training data; first: %s", len(skipped), skipped[0])
    if config.max_train_pairs:
        pairs = pairs[: config.max_train_pairs]
    if config.use_tcot:
        check_tcot_coverage(pairs, config.hard_negatives)
    dataset = PairDataset(pairs)
    logger.info("%d pairs from %d dataset(s): %s", len(pairs), len(dataset.by_dataset()),
                ", ".join(f"{k or '(none)'}={len(v)}" for k, v in dataset.by_dataset().items()))
    trainer = EmbedderTrainer(
        model=ContrastiveModel(embedder, config.temperature, config.learnable_temperature),
        args=config,
        train_dataset=dataset,
        data_collator=PairCollator(embedder, config.hard_negatives, config.use_tcot, config.gradcache_chunk_size,
                                   config.tcot_dropout, config.tcot_negatives),
        loss_fn=InfoNCELoss(gather=config.gather_negatives),
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(config.output_dir, resume))
    trainer.save_model(config.output_dir)
    return Path(config.output_dir)
