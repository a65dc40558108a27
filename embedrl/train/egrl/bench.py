"""`embedrl bench rl`: where an EG-RL (GRPO) step's time goes: generation, each reward, the update.

Generation is timed around TRL's `_generate`, each reward function times itself, and the
rest of the step (log-probabilities, loss, backward, optimizer) is the update.

Rewards are only worth timing on rollouts that reach the embedder. A policy that cannot yet
write the T-CoT format (a tiny one from random weights) has its every rollout fall back before
the embedder, so `completions="annotation"` feeds annotated T-CoTs instead (`AnnotatedRollouts`):
the policy still generates, at full length, so generation costs what it costs, and then each
group's completions are replaced by the pairs' annotations: the prompt's own first, then those of
other pairs of its dataset and side (well formed, other content: a spread to rank). The update
runs on those. The share of rollouts the embedder could use is reported beside the timings.
"""

from __future__ import annotations

import random
import time
from typing import Any

from embedrl.train.egrl.config import EGRLConfig
from embedrl.train.egrl.trainer import EGRLTrainer, build_egrl_trainer

COMPLETIONS = ("policy", "annotation")


class AnnotatedRollouts(EGRLTrainer):
    """EGRLTrainer whose rollouts are the pairs' annotated T-CoTs (see the module docstring)."""

    def _generate_and_score_completions(self, inputs):
        self._rows = [(x["pair_index"], x["role"]) for x in inputs]  # what `_generate` is asked, in order
        return super()._generate_and_score_completions(inputs)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
        completion_ids, logprobs = super()._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                                 num_generations, *args, **kwargs)
        texts = self.annotated(self._rows)
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        eos = self.eos_token_ids[:1]
        limit = self.args.max_completion_length
        return [tokenizer(t, add_special_tokens=False)["input_ids"][: limit - 1] + eos for t in texts], None

    def annotated(self, rows: list[tuple[int, str]]) -> list[str]:
        """A group's k-th rollout: the prompt's own annotation (k = 0) or another pair's of its dataset and side."""
        dataset = self.reward_funcs[0].dataset
        pairs = dataset.pairs
        if not hasattr(self, "_by_dataset"):
            self._by_dataset: dict[str, list[int]] = {}
            for j, pair in enumerate(pairs):
                self._by_dataset.setdefault(pair.dataset, []).append(j)
            self._rng = random.Random(self.args.seed)
        texts, seen = [], {}
        for i, role in rows:
            k = seen[i, role] = seen.get((i, role), -1) + 1
            j = i if k == 0 else self._rng.choice(self._by_dataset[pairs[i].dataset])
            texts.append((pairs[j].qry_tcot if role == "query" else pairs[j].pos_tcot) or "")
        return texts


def bench_rl(config: EGRLConfig, completions: str = "policy") -> dict[str, Any]:
    """Seconds per part of the steps, shares, the usable share of rollouts and the candidate bank's size."""
    start = time.perf_counter()
    trainer = build_egrl_trainer(config, trainer_class=AnnotatedRollouts if completions == "annotation"
                                 else EGRLTrainer)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    rewards = {f.__name__: f.seconds for f in trainer.reward_funcs}
    reward_total = sum(rewards.values())
    update = total - trainer.generation_seconds - reward_total
    outcome = next((f for f in trainer.reward_funcs if f.__name__ == "outcome"), None)
    seen = outcome.rollouts_seen if outcome else 0
    return {"steps": trainer.state.global_step, "completions": completions,
            "rollouts_per_step": config.per_device_train_batch_size * config.steps_per_generation,
            "setup_s": setup, "total_s": total, "generation_s": trainer.generation_seconds, "reward_s": reward_total,
            "reward_by_function_s": rewards, "update_s": update, "reward_share": reward_total / total,
            "outcome_share": rewards.get("outcome", 0.0) / total,
            "generation_share": trainer.generation_seconds / total,
            "usable_share": outcome.rollouts_usable / seen if seen else None, "rollouts_scored": seen,
            "candidate_bank": len(outcome.bank.vectors) if outcome else 0,
            "outcome_negatives": config.outcome_negatives}


def format_breakdown(row: dict[str, Any]) -> str:
    steps = max(row["steps"], 1)
    lines = ["| stage | seconds/step | share of step |", "|---|---|---|"]
    parts = [("generation", row["generation_s"])]
    parts += [(f"reward: {name}", s) for name, s in row["reward_by_function_s"].items()]
    parts += [("update (logprobs, loss, backward, optimizer)", row["update_s"]), ("total", row["total_s"])]
    for name, seconds in parts:
        lines.append(f"| {name} | {seconds / steps:.3f} | {seconds / row['total_s']:.1%} |")
    usable = "n/a (no outcome reward)" if row["usable_share"] is None else f"{row['usable_share']:.1%}"
    lines.append(f"\nrollouts the embedder could use: {usable} of {row['rollouts_scored']} ({row['completions']} "
                 f"completions); outcome reward: {row['outcome_share']:.1%} of the step, rewards together "
                 f"{row['reward_share']:.1%} ({row['steps']} steps, {row['rollouts_per_step']} rollouts per step); "
                 f"candidate bank: {row['candidate_bank']} embedded candidates (outcome_negatives="
                 f"{row['outcome_negatives']}); once before the first step: {row['setup_s']:.1f} s (models, bank)")
    return "\n".join(lines)
