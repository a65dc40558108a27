"""`embedrl data ...`: dataset commands (the synthetic benchmark)."""

from __future__ import annotations

from embedrl.cli import add_group

SIZE_CHOICES = ("tiny", "small", "medium")  # keep in step with embedrl.data.synth.SIZES


def register(sub) -> None:
    group = add_group(sub, "data", "datasets: generate the synthetic benchmark, mine hard negatives")
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
    p.set_defaults(func=synth)

    m = group.add_parser(
        "mine-negatives", help="mine hard negatives for a pairs file with a trained embedder",
        description="For each pair, rank the distinct positives of its dataset with the embedder, skip likely "
                    "false negatives (similarity above the positive's minus --margin) and append the top -k to "
                    "the pair's neg_* fields. Writes a new pairs file; the input is left as it is.")
    m.add_argument("--model", required=True, help="embedder: a saved model dir, open_clip:ARCH[:TAG] or a Hub id")
    m.add_argument("--pairs", required=True, help="pairs JSONL to mine for")
    m.add_argument("--out", required=True, help="pairs JSONL to write (same folder as --pairs keeps paths valid)")
    m.add_argument("--root", default=None, help="folder media paths are relative to (default: --pairs' folder)")
    m.add_argument("-k", type=int, default=3, help="negatives to add per pair (default: 3)")
    m.add_argument("--margin", type=float, default=0.05,
                   help="skip candidates scoring above sim(query, positive) - margin (default: 0.05)")
    m.add_argument("--batch-size", type=int, default=64, help="items per encode batch")
    m.set_defaults(func=mine_negatives)


def synth(args) -> int:
    from embedrl.data.synth import generate_benchmark

    summary = generate_benchmark(args.out, seed=args.seed, size=args.size, overwrite=args.overwrite)
    counts = summary["counts"]
    n_eval = {k.split("/", 1)[1][:-6]: v for k, v in counts.items() if k.startswith("eval/")}
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


def mine_negatives(args) -> int:
    from embedrl.errors import EmbedrlError
    from embedrl.models.base import load_embedder
    from embedrl.train.mining import mine_hard_negatives

    if args.k < 1:
        raise EmbedrlError("-k must be at least 1")
    stats = mine_hard_negatives(load_embedder(args.model), args.pairs, args.out, root=args.root, k=args.k,
                                margin=args.margin, batch_size=args.batch_size)
    print(f"wrote {args.out}: {stats['mined']} mined negatives for {stats['pairs']} pairs "
          f"({stats['skipped_false_negatives']} likely false negatives skipped)")
    return 0
