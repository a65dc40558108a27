"""`embedrl bench rl`: where an EG-RL (GRPO) step's time goes: generation, each reward, the update.

Generation is timed around TRL's `_generate`, each reward function times itself, and the
rest of the step (log-probabilities, loss, backward, optimizer) is the update.
"""

from __future__ import annotations

import time
from typing import Any

from embedrl.train.egrl.config import EGRLConfig
from embedrl.train.egrl.trainer import build_egrl_trainer


def bench_rl(config: EGRLConfig) -> dict[str, Any]:
    start = time.perf_counter()
    trainer = build_egrl_trainer(config)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    rewards = {f.__name__: f.seconds for f in trainer.reward_funcs}
    reward_total = sum(rewards.values())
    update = total - trainer.generation_seconds - reward_total
    steps = trainer.state.global_step
    return {"steps": steps, "rollouts_per_step": config.per_device_train_batch_size * config.steps_per_generation,
            "setup_s": setup, "total_s": total, "generation_s": trainer.generation_seconds, "reward_s": reward_total,
            "reward_by_function_s": rewards, "update_s": update, "reward_share": reward_total / total,
            "generation_share": trainer.generation_seconds / total}


def format_breakdown(row: dict[str, Any]) -> str:
    steps = max(row["steps"], 1)
    lines = ["| stage | seconds/step | share of step |", "|---|---|---|"]
    parts = [("generation", row["generation_s"])]
    parts += [(f"reward: {name}", s) for name, s in row["reward_by_function_s"].items()]
    parts += [("update (logprobs, loss, backward, optimizer)", row["update_s"]), ("total", row["total_s"])]
    for name, seconds in parts:
        lines.append(f"| {name} | {seconds / steps:.3f} | {seconds / row['total_s']:.1%} |")
    lines.append(f"\nrewards together: {row['reward_share']:.1%} of the step ({row['steps']} steps, "
                 f"{row['rollouts_per_step']} rollouts per step); once before the first step: {row['setup_s']:.1f} s "
                 "(models, candidate bank)")
    return "\n".join(lines)
