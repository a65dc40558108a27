"""`embedrl eval ...`: MMEB-V2 / UVRB / synthetic-benchmark runs and reports.

    embedrl eval mmeb --model M --data-root D --out O [--registry mmeb_v2|PATH] [--datasets A B]
                      [--reasoner R --tcot none|query|target|both] [--tcot-set NAME=MODE ...]
                      [--rerank lcr|yes-prob --rerank-k K --rerank-model SPEC --rerank-option KEY=VALUE]
    embedrl eval uvrb --model M --data-root D --out O          (registry uvrb)
    embedrl eval report O [OTHER.json ...] [--registry R] [--plot P | --no-plot] [--per-dataset]

The library does the work (embedrl/eval/mmeb.py, report.py); this module only parses.
"""

from __future__ import annotations

from pathlib import Path

from embedrl.cli import (
    add_format_option,
    add_group,
    add_prompt_set_option,
    add_rerank_args,
    load_rerank_args,
)
from embedrl.core.errors import EmbedrlError
from embedrl.core.tcot import TCOT_MODES


def register(sub) -> None:
    ev = add_group(sub, "eval", "evaluate embedders on MMEB-V2, UVRB or a registry of your own; reports")
    for name, registry, help_text in (
            ("mmeb", "mmeb_v2", "run a registry of datasets (MMEB-V2 by default); resumable"),
            ("uvrb", "uvrb", "run the 16 UVRB video-retrieval datasets; resumable")):
        p = ev.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--model", required=True, help="embedder: a saved model dir, open_clip:ARCH[:TAG], a Hub id, "
                                                      "or the URL of an `embedrl serve`")
        add_format_option(p)
        p.add_argument("--data-root", required=True, help="folder the registry's paths are relative to")
        p.add_argument("--out", required=True, help="output folder (score/pred files, results.json); reruns resume")
        p.add_argument("--registry", default=registry, help=f"bundled registry name or YAML path (default {registry})")
        p.add_argument("--datasets", nargs="+", default=None, metavar="NAME", help="only these datasets")
        p.add_argument("--reasoner", default=None, help="reasoner model for T-CoTs, or an OpenAI-compatible chat endpoint "
                                                        "openai:BASE_URL#MODEL (needs --tcot or --tcot-set other than none)")
        add_prompt_set_option(p)
        p.add_argument("--tcot", choices=TCOT_MODES, default="none",
                       help="T-CoT side(s): none, query only, candidates only, or query and candidates")
        p.add_argument("--tcot-set", nargs="+", default=None, metavar="NAME=MODE",
                       help="a T-CoT mode of its own for these datasets, e.g. RefCOCO=target to embed its "
                            "queries raw where the reasoner's query T-CoTs mislead")
        p.add_argument("--tcot-modalities", nargs="+", default=None, metavar="M",
                       help="write T-CoTs only for items of these modalities (text image video document); "
                            "others are embedded raw (default: all)")
        p.add_argument("--reasoner-backend", choices=("hf", "vllm"), default="hf",
                       help="generate T-CoTs with transformers (hf) or vLLM's offline engine (vllm, GPU only)")
        p.add_argument("--batch-size", type=int, default=32, help="items per encode batch")
        add_rerank_args(p, "the --reasoner")
        p.add_argument("--overwrite", action="store_true",
                       help="recompute scores in --out made by another model, reasoner or T-CoT mode (refused "
                            "otherwise, so results.json never mixes runs)")
        p.add_argument("--no-report", action="store_true", help="do not print the summary table")
        p.set_defaults(func=cmd_run)

    quick = ev.add_parser("quick", help="held-out Hit@1 per evaluation set of a benchmark folder (no files written)",
                          description="Encode and score every set in DATA/registry.yaml (e.g. the synthetic "
                                      "benchmark) and print Hit@1 per set and their mean. For resumable runs with "
                                      "all metrics use `embedrl eval mmeb`.")
    quick.add_argument("--model", required=True, help="embedder: a saved model dir, open_clip:ARCH[:TAG] or a Hub id")
    add_format_option(quick)
    quick.add_argument("--data", required=True, help="benchmark folder with registry.yaml (e.g. runs/synth)")
    quick.add_argument("--datasets", nargs="+", default=None, metavar="NAME", help="only these sets")
    quick.add_argument("--batch-size", type=int, default=64, help="items per encode batch")
    quick.add_argument("--json", default=None, help="also write {set: hit@1} to this JSON file")
    quick.set_defaults(func=cmd_quick)

    rep = ev.add_parser("report", help="aggregate result JSONs / output folders like the MMEB-V2 leaderboard",
                        description="Category, modality and overall scores (overall = mean over all datasets), "
                                    "side by side with published baselines, plus a bar chart.")
    rep.add_argument("results", nargs="+", help="output folders of `embedrl eval` or leaderboard-format JSON files")
    rep.add_argument("--registry", default=None, help="registry name or YAML (default: from the first result, else mmeb_v2)")
    rep.add_argument("--plot", default=None, help="bar chart PNG path (default: report.png beside the first result)")
    rep.add_argument("--no-plot", action="store_true", help="skip the bar chart")
    rep.add_argument("--no-baselines", action="store_true", help="leave out the published baselines")
    rep.add_argument("--per-dataset", action="store_true", help="also print every dataset's main metric")
    rep.add_argument("--save", default=None, help="also write the markdown to this file")
    rep.set_defaults(func=cmd_report)


def _default_plot(first: str) -> Path:
    path = Path(first)
    return path / "report.png" if path.is_dir() else path.with_name(f"{path.stem}_report.png")


def parse_tcot_sets(pairs: list[str] | None) -> dict[str, str]:
    """`--tcot-set NAME=MODE ...` as {dataset: mode}."""
    by_set = {}
    for pair in pairs or []:
        name, sep, mode = pair.partition("=")
        if not sep or not name or mode not in TCOT_MODES:
            raise EmbedrlError(f"--tcot-set {pair!r} is not NAME=MODE with MODE one of {', '.join(TCOT_MODES)}")
        by_set[name] = mode
    return by_set


def cmd_run(args) -> int:
    from embedrl.eval.mmeb import check_inputs, check_tcot_modes, evaluate
    from embedrl.eval.report import report
    from embedrl.models.base import load_embedder

    by_set = parse_tcot_sets(args.tcot_set)
    if args.tcot != "none" and not args.reasoner:
        raise EmbedrlError(f"--tcot {args.tcot} needs --reasoner")
    if args.reasoner and args.tcot == "none" and set(by_set.values()) <= {"none"}:
        raise EmbedrlError("--reasoner given but --tcot is none; choose --tcot query, target or both")
    if args.batch_size < 1:
        raise EmbedrlError("--batch-size must be at least 1")
    all_specs, specs = check_inputs(args.registry, args.data_root, args.datasets)  # before the models load
    check_tcot_modes(args.tcot, by_set, args.reasoner, [s.name for s in all_specs])
    print_data_summary(specs, args.data_root)
    embedder = load_embedder(args.model, format=args.format)
    from embedrl.models.reasoner import load_reasoner

    # cache=True: target T-CoTs are shared with indexing and training
    reasoner = (load_reasoner(args.reasoner, backend=args.reasoner_backend, cache=True, modalities=args.tcot_modalities,
                              prompt_set=args.prompt_set)
                if args.reasoner else None)
    # the reranker shares the reasoner's weights when transformers holds them, else loads its own copy
    reranker = load_rerank_args(args, reasoner if args.reasoner_backend == "hf" else args.reasoner)
    run = evaluate(embedder, args.registry, args.data_root, args.out, datasets=args.datasets,
                   reasoner=reasoner, tcot_mode=args.tcot, tcot_mode_by_set=by_set, batch_size=args.batch_size,
                   metadata={"model_name": args.model, "format": embedder.embedrl_config().get("format")},
                   reranker=reranker, rerank_k=args.rerank_k, overwrite=args.overwrite)
    print(f"computed {len(run.computed)}, resumed {len(run.resumed)}, missing {len(run.missing)} "
          f"-> {run.path}")
    for name, reason in run.recomputed.items():
        print(f"  recomputed {name}: {reason}")
    for _name, reason in run.missing.items():
        print(f"  missing: {reason}")
    if run.timings:
        q = sum(t["encode_queries_s"] for t in run.timings.values())
        c = sum(t["encode_candidates_s"] for t in run.timings.values())
        print(f"  encode time: queries {q:.1f} s, candidates {c:.1f} s")
    if reranker is not None:
        print_rerank_summary(run.results)
    if not args.no_report and (run.computed or run.resumed):
        md, _ = report([args.out], registry=args.registry, with_baselines=False)
        print(md)
    return 0


def print_rerank_summary(results: dict) -> None:
    """Per dataset: its main metric before and after reranking, and the reranker's cost."""
    main = results["metadata"]["main_metrics"]
    for sets in results["metrics"].values():
        for name, score in sets.items():
            cost = score.get("rerank")
            if cost:
                metric = main[name]
                print(f"  {name}: {metric} {100 * score['first_stage'][metric]:.1f} -> {100 * score[metric]:.1f} "
                      f"after {cost['name']}@{cost['k']} ({cost['reordered']} of {score['num_data']} queries reordered); "
                      f"{cost['seconds_per_query']:.3f} s a query, {cost['cost_ratio']:.1f}x the first stage's")


def print_data_summary(specs, root: str) -> None:
    """What of these datasets is on disk (as `embedrl data check` prints it), before a run starts."""
    from embedrl.data.check import check_datasets, format_summary

    print(format_summary(check_datasets(specs, root), f"data under {root}"), flush=True)


def cmd_report(args) -> int:
    from embedrl.eval.report import report

    plot_path = None if args.no_plot else (args.plot or _default_plot(args.results[0]))
    md, _ = report(args.results, registry=args.registry, with_baselines=not args.no_baselines,
                   plot_path=plot_path, per_dataset=args.per_dataset)
    print(md)
    if args.save:
        from embedrl.core.io import atomic_write

        with atomic_write(args.save) as f:
            f.write(md)
    if plot_path is not None:
        print(f"bar chart: {plot_path}")
    return 0


def cmd_quick(args) -> int:
    from embedrl.core.io import write_json
    from embedrl.eval.mmeb import quick_eval
    from embedrl.models.base import load_embedder

    scores = quick_eval(load_embedder(args.model, format=args.format), args.data, datasets=args.datasets, batch_size=args.batch_size)
    width = max(len(k) for k in scores)
    print(f"{'set':<{width}}  hit@1")
    for name, value in scores.items():
        print(f"{name:<{width}}  {value:6.2f}")
    if args.json:
        write_json(args.json, scores)
    return 0
