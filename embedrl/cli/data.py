"""`embedrl data ...`: dataset commands (check a download, annotate T-CoTs with a teacher, mine hard
negatives; the lab adds `data synth`)."""

from __future__ import annotations

from embedrl.cli import add_format_option, add_group, add_prompt_set_option


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
    a = group.add_parser(
        "annotate", help="write T-CoTs for pairs with a teacher (a local model or an OpenAI-compatible endpoint)",
        description="Run a teacher reasoner over a pairs source (both roles, the embed-rl prompt set by default), keep "
                    "the T-CoTs whose evidence fits their item (structure, boxes inside the picture, key frames in "
                    "range, a text's keywords present) and write SFT-ready pairs with qry_tcot / pos_tcot / neg_tcot, "
                    "plus OUT.report.json (what was kept, and why not). Generations go through the T-CoT cache: "
                    "a rerun after a kill generates nothing twice.")
    source = a.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", help="pairs JSONL (MMEB-train style)")
    source.add_argument("--mmeb-train", metavar="ROOT", help="the downloaded TIGER-Lab/MMEB-train repository folder")
    a.add_argument("--root", default=None, help="--pairs: folder media paths are relative to (default: its folder)")
    a.add_argument("--subsets", nargs="+", default=None, help="--mmeb-train: subsets (default: all 20)")
    a.add_argument("--split", default="original", help="--mmeb-train: original or diverse_instruction")
    a.add_argument("--num-per-subset", type=int, default=None, help="--mmeb-train: first N rows of each subset")
    teacher = a.add_mutually_exclusive_group(required=True)
    teacher.add_argument("--teacher", help="local teacher: a model directory or Hub id (a VLM reasoner)")
    teacher.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    add_prompt_set_option(a)
    a.add_argument("--out", required=True, help="pairs JSONL to write (archive images are copied beside it)")
    for flag, text in (("--endpoint-model", "--endpoint: the served model's name"),
                       ("--report", "report JSON (default: OUT with .report.json)"),
                       ("--cache", "T-CoT cache file (default: $EMBEDRL_TCOT_CACHE or ~/.cache/embedrl)")):
        a.add_argument(flag, default=None, help=text)
    a.add_argument("--batch-size", type=int, default=64, help="pairs per chunk (generated, then cached)")
    a.add_argument("--max-new-tokens", type=int, default=512, help="tokens per T-CoT")
    a.add_argument("--endpoint-workers", type=int, default=8, help="--endpoint: requests in flight at once")
    a.set_defaults(func=annotate)

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


def annotate(args) -> int:
    from embedrl.core.errors import EmbedrlError
    from embedrl.core.tcot_cache import TCoTCache
    from embedrl.data.annotate import ChatEndpointTeacher, annotate_pairs

    if args.batch_size < 1:
        raise EmbedrlError("--batch-size must be at least 1")
    if args.mmeb_train:
        from embedrl.data.mmeb_train import read_mmeb_train

        pairs, _ = read_mmeb_train({"mmeb_train": args.mmeb_train, "subsets": args.subsets, "split": args.split,
                                    "num_sample_per_subset": args.num_per_subset}, skip_bad=True)
    else:
        from embedrl.data.pairs import read_pairs

        pairs, _ = read_pairs(args.pairs, root=args.root, skip_bad=True, check_media=False)
    prompt_set = args.prompt_set or "embed-rl"
    if args.endpoint:
        if not args.endpoint_model:
            raise EmbedrlError("--endpoint needs --endpoint-model (the served model's name)")
        teacher = ChatEndpointTeacher(args.endpoint, args.endpoint_model, prompt_set, max_tokens=args.max_new_tokens,
                                      workers=args.endpoint_workers)
    else:
        from embedrl.models.reasoner import load_reasoner

        teacher = load_reasoner(args.teacher, prompt_set=prompt_set, max_new_tokens=args.max_new_tokens)
    with TCoTCache(args.cache) as cache:
        report = annotate_pairs(pairs, teacher, args.out, cache, batch_size=args.batch_size, report_path=args.report)
    print(f"wrote {args.out}: kept {report['kept']} of {report['pairs']} pairs "
          f"({report['negatives_with_tcot']} of {report['negatives']} negatives with a T-CoT); "
          f"generated {report['generated']}")
    for role, reasons in report["not_fitting"].items():
        if reasons:
            print(f"  {role} T-CoTs that did not fit: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    return 0
