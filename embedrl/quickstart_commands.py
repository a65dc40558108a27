"""`embedrl quickstart`: a single command (no sub-commands)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "quickstart", help="the whole pipeline offline: data, embedder, SFT, EG-RL, index, evaluation, report",
        description="Generate the synthetic benchmark, make the tiny presets, train the embedder, SFT the reasoner, "
                    "run EG-RL, build the index with cached target T-CoTs, evaluate raw vs SFT vs EG-RL T-CoTs and "
                    "write report.md / report.json. Every stage is kept; rerunning skips finished stages.")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.add_argument("--size", choices=("tiny", "small", "medium"), default="small",
                   help="benchmark size and training length (tiny: a smoke run; small: the default)")
    p.add_argument("--seed", type=int, default=0, help="seed for the reasoner's training (default: 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from embedrl.quickstart import run_quickstart

    report = run_quickstart(args.out, args.size, args.seed)
    rows = report["ablation"]
    print(f"\nHit@1 overall: raw {rows['raw']['overall']:.1f} | SFT T-CoT {rows['sft']['overall']:.1f} | "
          f"EG-RL T-CoT {rows['eg_rl']['overall']:.1f}   (report: {args.out}/report.md)")
    print(f"look at it: {report['demo']}")
    return 0
