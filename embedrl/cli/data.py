"""`embedrl data ...`: dataset commands (check a download, annotate T-CoTs with a teacher, mine hard
negatives; the lab adds `data synth`)."""

from __future__ import annotations

from embedrl.cli import add_format_option, add_group


def register(sub) -> None:
    group = add_group(sub, "data", "datasets: check a download, annotate T-CoTs, mine hard negatives "
                                   "(and generate the synthetic benchmark)")
    c = group.add_parser(
        "check", help="what of MMEB-V2, MMEB-train or UVRB is on disk, and the commands for what is missing",
        description="Per dataset: present, partial (frames missing for N videos, images missing for N files, "
                    "malformed rows: those queries would count as missed) or missing, with the commands that "
                    "download and extract what is missing. Exit status 1 if anything asked for is not present.")
    c.add_argument("benchmark", choices=("mmeb-v2", "mmeb-train", "uvrb"), help="which release to check")
    c.add_argument("--root", required=True, help="the data root (mmeb-train: the MMEB-train repository folder)")
    c.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help="only these datasets (mmeb-train: subsets); default: all")
    c.add_argument("--registry", default=None, help="registry name or YAML (default: mmeb_v2 / uvrb)")
    c.add_argument("--split", default="original", help="mmeb-train split: original or diverse_instruction")
    c.set_defaults(func=check)
    m = group.add_parser(
        "mine-negatives", help="mine hard negatives for a pairs file with a trained embedder",
        description="For each pair, rank the distinct positives of its dataset with the embedder, skip likely "
                    "false negatives (similarity above the positive's minus --margin) and append the top -k to "
                    "the pair's neg_* fields. Writes a new pairs file; the input is left as it is.")
    m.add_argument("--model", required=True, help="embedder: a saved model dir, open_clip:ARCH[:TAG] or a Hub id")
    add_format_option(m)
    m.add_argument("--pairs", required=True, help="pairs JSONL to mine for")
    m.add_argument("--out", required=True, help="pairs JSONL to write (same folder as --pairs keeps paths valid)")
    m.add_argument("--root", default=None, help="folder media paths are relative to (default: --pairs' folder)")
    m.add_argument("-k", type=int, default=3, help="negatives to add per pair (default: 3)")
    m.add_argument("--margin", type=float, default=0.05,
                   help="skip candidates scoring above sim(query, positive) - margin (default: 0.05)")
    m.add_argument("--batch-size", type=int, default=64, help="items per encode batch")
    m.set_defaults(func=mine_negatives)


def mine_negatives(args) -> int:
    from embedrl.core.errors import EmbedrlError
    from embedrl.models.base import load_embedder
    from embedrl.train.mining import mine_hard_negatives

    if args.k < 1:
        raise EmbedrlError("-k must be at least 1")
    stats = mine_hard_negatives(load_embedder(args.model, format=args.format), args.pairs, args.out, root=args.root, k=args.k,
                                margin=args.margin, batch_size=args.batch_size)
    print(f"wrote {args.out}: {stats['mined']} mined negatives for {stats['pairs']} pairs "
          f"({stats['skipped_false_negatives']} likely false negatives skipped)")
    return 0


def check(args) -> int:
    from embedrl.data.check import check_datasets, format_summary

    if args.benchmark == "mmeb-train":
        from embedrl.data.mmeb_train import check_mmeb_train

        statuses = check_mmeb_train(args.root, args.datasets, args.split)
    else:
        from embedrl.eval.mmeb import load_specs

        registry = args.registry or args.benchmark.replace("-", "_")
        statuses = check_datasets(load_specs(registry, args.datasets), args.root)
    print(format_summary(statuses, f"{args.benchmark} under {args.root}"))
    return 0 if all(s.state == "present" for s in statuses) else 1
