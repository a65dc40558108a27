"""EG-RL (Embedder-Guided RL): GRPO on the Reasoner where a frozen Embedder's retrieval is the reward.

`embedrl train eg-rl --config FILE [key=value ...]` runs TRL's `GRPOTrainer` with three reward
functions (`embedrl.train.egrl.rewards`), each logged on its own (`rewards/<name>/mean`):
format, process (a discriminator picks the positive among shuffled candidate T-CoTs; or, with
`process_reward: flip`, a backward model infers the other side of the pair from the T-CoT) and
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

The package by job: `config` (EGRLConfig), `rollouts` (prompts and the candidate bank),
`rewards` (the math and the callables), `flip` (the process reward's FLIP form), `judge` (the
models the process reward asks: discriminator, backward model),
`trainer` (this module: the GRPOTrainer subclass and `train_eg_rl`), `diagnostics` (a callback
that reads the reward logs at the end of a run), `bench` (`embedrl bench rl`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from trl import GRPOTrainer

from embedrl.data.pairs import read_pairs
from embedrl.models.base import Embedder, load_embedder
from embedrl.models.reasoner import check_modalities
from embedrl.train.checkpoints import ResumesFullWeights, resume_checkpoint
from embedrl.train.egrl.config import EGRLConfig
from embedrl.train.egrl.diagnostics import RewardDiagnostics
from embedrl.train.egrl.rewards import FormatReward, OutcomeReward, ProcessReward
from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

logger = logging.getLogger(__name__)


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
        elif config.process_reward == "flip":
            from embedrl.train.egrl.flip import FlipReward
            from embedrl.train.egrl.judge import load_backward_model

            rewards.append(FlipReward(dataset, load_backward_model(config.flip_model, config.reasoner),
                                      config.flip_reference, config.flip_max_new_tokens, config.flip_temperature))
        else:
            from embedrl.train.egrl.judge import load_discriminator

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
    trainer = EGRLTrainer(model=model, processing_class=processor, reward_funcs=rewards, args=config,
                          train_dataset=dataset.hf, peft_config=peft_config,
                          callbacks=[RewardDiagnostics(dict(config.active_weights()))])
    for reward in rewards:
        if getattr(reward, "backward", False) is None:  # FLIP with `flip_model: policy`: the policy infers
            from embedrl.models.chat import HFChat

            reward.backward = HFChat(trainer.model, processor, name="policy")
    return trainer


def train_eg_rl(config: EGRLConfig, resume: bool = False, embedder: Embedder | None = None) -> Path:
    """Run EG-RL and save the policy as a Reasoner directory at `config.output_dir`."""
    from embedrl.models.reasoner import Reasoner

    trainer = build_egrl_trainer(config, embedder)
    trainer.train(resume_from_checkpoint=resume_checkpoint(config.output_dir, resume))
    out = Path(config.output_dir)
    # last: the reasoner's config file marks the run complete
    Reasoner(trainer.model, trainer.processing_class, name_or_path=str(out)).save_pretrained(out)
    return out
