"""`embedrl train ...`: training commands (config = YAML file + key=value overrides).

Each command is a (module, config builder, train function) triple; all take `--config`,
`--resume`, `--skip-bad` and key=value overrides, and run unchanged under
`accelerate launch -m embedrl train ...`.
"""

from __future__ import annotations

import argparse
import importlib

from embedrl.cli import add_group, lists_config_fields

# name -> (module, config class, build-config function, train function (or "module:function"), what it
# saves, help, description)
COMMANDS = {
    "embedder": (
        "embedrl.train.embedder", "EmbedderTrainingConfig", "build_config", "train_embedder", "embedder",
        "contrastive Embedder training (InfoNCE, GradCache, hard negatives, LoRA)",
        "Train an Embedder on a pairs JSONL. Any EmbedderTrainingConfig / TrainingArguments field can be set in "
        "the YAML file or as key=value (e.g. max_steps=200 lora=true)."),
    "reasoner-sft": (
        "embedrl.train.reasoner_sft", "ReasonerSFTConfig", "build_config", "train_reasoner_sft", "reasoner",
        "T-CoT SFT of the Reasoner on a pairs file's annotations (TRL SFTTrainer, LoRA)",
        "Fine-tune a Reasoner to write the T-CoTs in a pairs JSONL (qry_tcot / pos_tcot, both roles; loss on "
        "the T-CoT only). Any ReasonerSFTConfig / trl SFTConfig field can be set in the YAML file or as key=value."),
    "eg-rl": (
        "embedrl.train.egrl.config", "EGRLConfig", "build_egrl_config", "embedrl.train.egrl.trainer:train_eg_rl",
        "reasoner",
        "EG-RL: GRPO on the Reasoner with the frozen Embedder's retrieval as reward (TRL GRPOTrainer)",
        "Embedder-guided RL: rollouts for both sides of each pair, rewarded by format, a discriminator (process) "
        "and the embedder's retrieval of the positive against other pairs' items (the batch's, or a pool: "
        "`outcome_negatives`) and hard negatives (outcome). Any "
        "EGRLConfig / trl GRPOConfig field can be set in the YAML file or as key=value."),
}


def _run(args: argparse.Namespace) -> int:
    module, _, build, train, saved, *_ = args.training_command
    overrides = list(args.overrides) + (["skip_bad=true"] if args.skip_bad else [])
    config = getattr(importlib.import_module(module), build)(args.config, overrides)
    train_module, _, train = train.rpartition(":")
    out = getattr(importlib.import_module(train_module or module), train)(config, resume=args.resume)
    from embedrl.core.dist import rank

    if rank() == 0:
        print(f"saved {saved} to {out}")
    return 0


def add_training_command(commands, name: str, spec: tuple) -> None:
    """One config-driven training command (`spec` as in COMMANDS) in the `train` group's sub-parsers."""
    module, config_class, *_, help_text, description = spec
    p = commands.add_parser(name, help=help_text, description=description)
    lists_config_fields(p, module, config_class)
    p.add_argument("--config", help="YAML recipe (see train/ for examples)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad pairs lines instead of failing")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_run, training_command=spec)


def register(sub) -> None:
    commands = add_group(sub, "train", "train the Embedder (contrastive) and the Reasoner (SFT, EG-RL)")
    for name, spec in COMMANDS.items():
        add_training_command(commands, name, spec)
