"""Shared by the EG-RL tests."""

from __future__ import annotations


def tiny_eg_rl_overrides(reasoner, embedder, synth, out) -> list[str]:
    """EG-RL for one step of 4 rollouts of 16 tokens on the tiny presets and benchmark, on CPU."""
    return [f"reasoner={reasoner}", f"embedder={embedder}", f"data_root={synth}",
            f"train_data={synth / 'train' / 'pairs.jsonl'}", f"output_dir={out}", "max_steps=1",
            "per_device_train_batch_size=4", "num_generations=2", "max_completion_length=16", "use_cpu=true",
            "logging_steps=1", "max_train_pairs=8"]
