"""`embedrl data ...`: dataset commands (hard-negative mining; the lab adds `data synth`)."""

from __future__ import annotations

from embedrl.cli import add_format_option, add_group


def register(sub) -> None:
    group = add_group(sub, "data", "datasets: mine hard negatives (and generate the synthetic benchmark)")
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
