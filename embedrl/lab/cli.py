"""The lab's commands: the offline world a user (and the tests) run the library on.

    embedrl quickstart                      the whole pipeline on the tiny presets
    embedrl presets make | list             tiny models of the real architecture classes
    embedrl data synth                      the synthetic benchmark
    embedrl train reasoner-warmup | discriminator    warm-ups a from-scratch tiny model needs
    embedrl eval ablation                   raw vs SFT vs EG-RL over seeds

`embedrl.cli` calls `register_quickstart` first and `register` last, so the library's own
commands come first in each group's `--help`.
"""

from __future__ import annotations

import time

from embedrl.cli import add_group, lists_config_fields
from embedrl.cli.train import add_training_command

SIZE_CHOICES = ("tiny", "small", "medium")  # keep in step with embedrl.lab.synth.benchmark.SIZES

# the train group's lab commands, as embedrl.cli.train.COMMANDS holds the library's
TRAINING = {
    "reasoner-warmup": (
        "embedrl.lab.warmup", "ReasonerWarmupConfig", "build_config", "train_reasoner_warmup", "reasoner",
        "perception warm-up of a from-scratch reasoner (the tiny preset): SFT on synthetic scene captions",
        "Teach a reasoner that starts from random weights to read its image tokens, before T-CoT SFT: SFT on "
        "captions of freshly rendered synthetic scenes. Real (pretrained) reasoners skip this. Any "
        "ReasonerWarmupConfig / trl SFTConfig field can be set in the YAML file or as key=value."),
    "discriminator": (
        "embedrl.lab.discriminator", "DiscriminatorSFTConfig", "build_config", "train_discriminator", "discriminator",
        "teach a model the process reward's question (which candidate T-CoT matches the query's)",
        "SFT on multiple-choice questions built from a pairs file's annotated T-CoTs, exactly as EG-RL's process "
        "reward asks them; for presets that cannot answer them out of the box (the tiny one). Any "
        "DiscriminatorSFTConfig / trl SFTConfig field can be set in the YAML file or as key=value."),
}


def register_quickstart(sub) -> None:
    p = sub.add_parser(
        "quickstart", help="the whole pipeline offline: data, embedder, SFT, EG-RL, index, evaluation, report",
        description="Generate the synthetic benchmark, make the tiny presets, train the embedder, SFT the reasoner, "
                    "run EG-RL, build the index with cached target T-CoTs, evaluate raw vs SFT vs EG-RL T-CoTs and "
                    "write report.md / report.json. Every stage is kept; rerunning skips finished stages.")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.add_argument("--size", choices=("tiny", "small", "medium"), default="small",
                   help="benchmark size and training length (tiny: a smoke run; small: the default)")
    p.add_argument("--seed", type=int, default=0, help="seed for the reasoner's training (default: 0)")
    p.set_defaults(func=cmd_quickstart)


def register(sub) -> None:
    presets = add_group(sub, "presets", "tiny offline models of the real architecture classes")

    make = presets.add_parser("make", help="build a preset with random weights and save it to a directory")
    make.add_argument("name", help="preset name (see `embedrl presets list`)")
    make.add_argument("--out", required=True, help="output directory (new, empty, or an earlier preset)")
    make.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    make.set_defaults(func=cmd_make)

    listing = presets.add_parser("list", help="list the presets")
    listing.set_defaults(func=cmd_list)

    group = add_group(sub, "data")
    p = group.add_parser(
        "synth", help="generate the synthetic benchmark (train pairs, eval sets, registry)",
        description="Render the synthetic benchmark into DIR: training pairs with hard negatives and T-CoT "
                    "annotations, seven MMEB-V2-style evaluation sets, registry.yaml, corpus.jsonl and the "
                    "oracle evidence. The same seed and size always give byte-identical files; a DIR that "
                    "already holds that benchmark is left as it is.")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new or empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--size", choices=SIZE_CHOICES, default="small",
                   help="tiny (seconds, for tests), small (default), medium (~4x small)")
    p.add_argument("--overwrite", action="store_true", help="replace a different benchmark already in DIR")
    p.set_defaults(func=cmd_synth)

    train = add_group(sub, "train")
    for name, spec in TRAINING.items():
        add_training_command(train, name, spec)

    ev = add_group(sub, "eval")
    abl = ev.add_parser("ablation", help="raw vs SFT T-CoT vs EG-RL T-CoT (and reward ablations) over seeds",
                        description="The Embed-RL ablation on the synthetic benchmark: per seed, SFT the tiny "
                                    "reasoner, run EG-RL from it (all rewards / without process / without outcome), "
                                    "score each variant with one frozen embedder. Writes ablation.json, ablation.md "
                                    "and reward_curves.png under `out`; every stage resumes.")
    lists_config_fields(abl, "embedrl.lab.ablation.run", "AblationConfig")
    abl.add_argument("--config", help="YAML with AblationConfig fields (see eval/ablation_tiny.yaml)")
    abl.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (e.g. seeds=[0])")
    abl.set_defaults(func=cmd_ablation)


def cmd_quickstart(args) -> int:
    from embedrl.lab.quickstart import run_quickstart

    report = run_quickstart(args.out, args.size, args.seed)
    rows = report["ablation"]
    print(f"\nHit@1 overall: raw {rows['raw']['overall']:.1f} | SFT T-CoT {rows['sft']['overall']:.1f} | "
          f"EG-RL T-CoT {rows['eg_rl']['overall']:.1f}   (report: {args.out}/report.md)")
    print(f"look at it: {report['demo']}")
    return 0


def cmd_make(args) -> int:
    from embedrl.lab.presets import describe, make_preset

    start = time.perf_counter()
    out = make_preset(args.name, args.out, seed=args.seed)
    info = describe(out)
    print(f"{args.name} -> {out}  ({info['parameters'] / 1e6:.2f}M parameters, "
          f"{info['size_mb']:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return 0


def cmd_list(args) -> int:
    from embedrl.lab.presets import PRESETS

    width = max(map(len, PRESETS))
    for name, description in PRESETS.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_synth(args) -> int:
    from embedrl.lab.synth.benchmark import generate_benchmark

    summary = generate_benchmark(args.out, seed=args.seed, size=args.size, overwrite=args.overwrite)
    counts = summary["counts"]
    n_eval = {k.split("/")[1]: v for k, v in counts.items()
              if k.startswith("eval/") and not k.split("/")[1].endswith("-corpus")}
    if summary["skipped"]:
        print(f"{summary['out']}: already holds the complete benchmark (seed {summary['seed']}, "
              f"size {summary['size']}); nothing to do")
    else:
        print(f"wrote {summary['out']} in {summary['seconds']:.1f}s ({summary['bytes'] / 1e6:.1f} MB): "
              f"{counts['train/pairs.jsonl']} train pairs, {len(n_eval)} eval sets "
              f"({sum(n_eval.values())} queries), {counts['images']} images, {counts['crops']} crops, "
              f"{counts['videos']} videos")
    print(f"registry: {summary['paths']['registry']}")
    return 0


def cmd_ablation(args) -> int:
    from embedrl.core.config import build_config
    from embedrl.lab.ablation.config import AblationConfig
    from embedrl.lab.ablation.report import format_steps, format_table
    from embedrl.lab.ablation.run import run_ablation

    report = run_ablation(build_config(AblationConfig, args.config, args.overrides))
    print(format_table(report["summary"]) + format_steps(report["steps"]))
    return 0
