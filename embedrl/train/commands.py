"""`embedrl train ...`: training commands (config = YAML file + key=value overrides)."""

from __future__ import annotations

import argparse

from embedrl.cli import add_group


def _embedder(args: argparse.Namespace) -> int:
    from embedrl.train.embedder import build_config, train_embedder

    overrides = list(args.overrides) + (["skip_bad=true"] if args.skip_bad else [])
    config = build_config(args.config, overrides)
    out = train_embedder(config, resume=args.resume)
    print(f"saved embedder to {out}")
    return 0


def _reasoner_sft(args: argparse.Namespace) -> int:
    from embedrl.train.reasoner_sft import build_config, train_reasoner_sft

    overrides = list(args.overrides) + (["skip_bad=true"] if args.skip_bad else [])
    config = build_config(args.config, overrides)
    out = train_reasoner_sft(config, resume=args.resume)
    print(f"saved reasoner to {out}")
    return 0


def register(sub) -> None:
    commands = add_group(sub, "train", "train the Embedder (contrastive) and the Reasoner")
    p = commands.add_parser(
        "embedder", help="contrastive Embedder training (InfoNCE, GradCache, hard negatives, LoRA)",
        description="Train an Embedder on a pairs JSONL. Any EmbedderTrainingConfig / TrainingArguments "
                    "field can be set in the YAML file or as key=value (e.g. max_steps=200 lora=true). "
                    "Runs under `accelerate launch -m embedrl train embedder ...` for multi-process.")
    p.add_argument("--config", help="YAML recipe (see train/ for examples)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad pairs lines instead of failing")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_embedder)

    p = commands.add_parser(
        "reasoner-sft", help="T-CoT SFT of the Reasoner on a pairs file's annotations (TRL SFTTrainer, LoRA)",
        description="Fine-tune a Reasoner to write the T-CoTs in a pairs JSONL (qry_tcot / pos_tcot, both roles; "
                    "loss on the T-CoT only). Any ReasonerSFTConfig / trl SFTConfig field can be set in the YAML "
                    "file or as key=value (e.g. max_steps=200 lora=true).")
    p.add_argument("--config", help="YAML recipe (see train/ for examples)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad pairs lines instead of failing")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_reasoner_sft)
