"""`embedrl bench <what>`: measurements users compare us by, printed as tables.

One function per bench: `_index(commands)` adds its sub-command and points it at a
`cmd_*` function that imports the heavy code it drives. To add a bench, write another
`_name(commands)` and list it in BENCHES.
"""

from __future__ import annotations

import logging

from embedrl.cli import add_group
from embedrl.lab.bench_models import _encode, _gpu, _video, emit

logger = logging.getLogger(__name__)


def _index(commands) -> None:
    p = commands.add_parser("index", help="FAISS index types vs exact search: build time, size, latency, QPS, recall; "
                            "with --engine ray: build throughput, local vs Ray workers")
    p.add_argument("--n", type=int, help="database vectors (random unit vectors; default 1000000); with --engine: "
                   "corpus items (the corpus repeated or cut to N; default: the corpus as it is)")
    p.add_argument("--dim", type=int, default=768, help="dimension of the random vectors")
    p.add_argument("--nq", type=int, default=1000, help="queries")
    p.add_argument("-k", "--k", type=int, default=10, help="recall@k and search depth")
    p.add_argument("--target", type=float, default=0.95, help="recall@k to tune efSearch / nprobe up to")
    p.add_argument("--data", choices=("random", "structured"), default="random",
                   help="random unit vectors (worst case) or a clustered low-rank mixture like real embeddings")
    p.add_argument("--vectors", help="real embeddings instead: an (N, dim) .npy file or an index directory "
                   "(queries: --nq rows held out)")
    p.add_argument("--latency-queries", type=int, default=200, help="queries timed one by one for p50/p95")
    p.add_argument("--threads", type=int, help="FAISS OpenMP threads (default: all cores)")
    p.add_argument("--no-autofaiss", action="store_true", help="skip autofaiss even when installed")
    p.add_argument("--json", help="also write the rows to this JSON file")
    engines = p.add_argument_group("build throughput (--engine)")
    engines.add_argument("--engine", choices=("ray",), help="instead of index types: time whole index builds, "
                         "local (this process's threads, and 1 thread) against Ray with --workers 1-CPU workers")
    engines.add_argument("--model", help="embedder (default: the tiny-clip preset, made in a temp folder)")
    engines.add_argument("--corpus", help="a corpus as `index build` reads it (default: the tiny synthetic "
                         "benchmark's corpus.jsonl)")
    engines.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray pool sizes to time (default: 1 2)")
    engines.add_argument("--address", help="Ray cluster to join (default: a local one on this machine)")
    engines.add_argument("--shard-size", type=int, default=32, help="items per shard (default: 32)")
    engines.add_argument("--batch-size", type=int, default=32, help="encoder batch size (default: 32)")
    p.set_defaults(func=cmd_index)


def cmd_index(args) -> int:
    if args.engine:
        return _cmd_engines(args)
    from dataclasses import asdict

    from embedrl.core.errors import EmbedrlError
    from embedrl.core.io import write_json
    from embedrl.index.bench import (
        format_table,
        load_vectors,
        random_unit_vectors,
        run_index_bench,
        structured_unit_vectors,
    )

    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    import numpy as np

    args.n = 1_000_000 if args.n is None else args.n
    if args.vectors:
        x = load_vectors(args.vectors)
        if len(x) <= args.nq:
            raise EmbedrlError(f"{args.vectors}: {len(x)} vectors, need more than --nq {args.nq}")
        perm = np.random.default_rng(0).permutation(len(x))
        xq, xb = x[perm[:args.nq]], x[perm[args.nq:]]
    else:
        if args.n < 1 or args.dim < 1 or args.nq < 1:
            raise EmbedrlError("--n, --dim and --nq must be positive")
        logger.info("generating %d + %d %s unit vectors of dim %d", args.n, args.nq, args.data, args.dim)
        if args.data == "structured":
            xb, xq = structured_unit_vectors(args.n, args.nq, args.dim, seed=0)
        else:
            xb = random_unit_vectors(args.n, args.dim, seed=0)
            xq = random_unit_vectors(args.nq, args.dim, seed=1)
    rows = run_index_bench(xb, xq, k=args.k, target=args.target, latency_queries=args.latency_queries,
                           with_autofaiss=not args.no_autofaiss)
    print(format_table(rows, len(xb), xb.shape[1], len(xq), args.k))
    if args.json:
        write_json(args.json, {"n": len(xb), "dim": xb.shape[1], "nq": len(xq), "k": args.k,
                               "source": args.vectors or args.data, "rows": [asdict(r) for r in rows]})
    return 0


def _cmd_engines(args) -> int:
    import tempfile
    from dataclasses import asdict, replace
    from itertools import cycle, islice
    from pathlib import Path

    from embedrl.data.corpus import Corpus, read_corpus
    from embedrl.index.bench_engines import bench_engines, format_engines

    with tempfile.TemporaryDirectory() as tmp:
        model, spec = args.model, args.corpus
        if not model:
            from embedrl.lab.presets import make_preset

            model = str(make_preset("tiny-clip", Path(tmp) / "tiny-clip"))
        if not spec:
            from embedrl.lab.synth.benchmark import generate_benchmark

            generate_benchmark(Path(tmp) / "synth", seed=0, size="tiny")
            spec = str(Path(tmp) / "synth" / "corpus.jsonl")
        corpus = read_corpus(spec)
        if args.n:  # repeated (with new ids) or cut to --n items
            pairs = list(islice(cycle(zip(corpus.items, corpus.fields)), args.n))
            corpus = Corpus([replace(item, id=f"{i}:{item.id}") for i, (item, _) in enumerate(pairs)],
                            [f for _, f in pairs], source=corpus.source, kind=corpus.kind)
        result = bench_engines(model, corpus, args.workers, args.shard_size, args.batch_size, args.address)
    return emit(format_engines(result), args.json, {**result, "rows": [
        asdict(r) | {"items_per_s": r.items_per_s, "steady_items_per_s": r.steady_items_per_s}
        for r in result["rows"]]})


def _rl(commands) -> None:
    p = commands.add_parser("rl", help="EG-RL (GRPO) step time: generation / each reward / update",
                            description="Run a few EG-RL steps and break each step's time down, with the share of "
                                        "rollouts the embedder could use and the candidate bank's size. Without --config, "
                                        "the tiny presets and a tiny synthetic benchmark are made in a temp folder. "
                                        "key=value overrides any EGRLConfig field (e.g. num_generations=8).")
    p.add_argument("--config", help="an EG-RL recipe (YAML); its reasoner/embedder/data are used")
    p.add_argument("--steps", type=int, default=4, help="GRPO steps to time (default: 4)")
    p.add_argument("--completions", choices=("policy", "annotation"),
                   help="rollouts scored and trained on: the policy's own, or the pairs' annotated T-CoTs in their "
                        "place after the policy generated (rewards timed on rollouts that reach the embedder; "
                        "default: annotation without --config, policy with it)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="EGRLConfig overrides")
    p.set_defaults(func=cmd_rl)


def cmd_rl(args) -> int:
    import tempfile
    from pathlib import Path

    from embedrl.train.egrl.bench import bench_rl, format_breakdown
    from embedrl.train.egrl.config import build_egrl_config

    with tempfile.TemporaryDirectory() as tmp:
        defaults = []
        if not args.config:
            from embedrl.lab.presets import make_preset
            from embedrl.lab.synth.benchmark import generate_benchmark

            data = Path(tmp) / "synth"
            generate_benchmark(data, seed=0, size="tiny")
            defaults = [f"reasoner={make_preset('tiny-reasoner', Path(tmp) / 'reasoner')}",
                        f"embedder={make_preset('tiny-clip', Path(tmp) / 'clip')}",
                        f"train_data={data / 'train' / 'pairs.jsonl'}", f"data_root={data}",
                        "per_device_train_batch_size=8", "num_generations=4", "max_completion_length=112",
                        "use_cpu=true"]
        config = build_egrl_config(args.config, defaults + list(args.overrides) + [
            f"max_steps={args.steps}", f"output_dir={Path(tmp) / 'out'}", "save_strategy=no",
            "logging_steps=1000"])
        row = bench_rl(config, args.completions or ("policy" if args.config else "annotation"))
    return emit(format_breakdown(row), args.json, row)


def _data(commands) -> None:
    p = commands.add_parser("data", help="read throughput of each published-layout reader vs PIL alone")
    p.description = ("Read a synthetic benchmark in the published MMEB-V2 layout, an MMEB-train repository with "
                     "zipped images and a BEIR visdoc repository (made in a temp folder) with their readers, decode "
                     "every picture, and compare with decoding the same pictures with PIL alone.")
    p.add_argument("--size", choices=("tiny", "small", "medium"), default="small", help="benchmark size")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(func=cmd_data)


def cmd_data(args) -> int:
    import tempfile

    from embedrl.lab.bench_data import bench_readers, format_rows

    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_readers(tmp, args.size)
    return emit(format_rows(rows), args.json, rows)


def _serve(commands) -> None:
    p = commands.add_parser("serve", help="HTTP search load: dynamic batching vs batching off vs in-process",
                            description="Send a bounded load of /v1/search requests to `embedrl serve` on "
                                        "127.0.0.1 with dynamic batching and with batching off (two servers side "
                                        "by side), and run the same queries through Retriever.search in-process, "
                                        "the three taking turns; print requests/s and "
                                        "p50/p95/p99 latency with ratios. Without --index, the tiny CLIP preset "
                                        "and an index of the tiny synthetic benchmark's corpus are made in a temp "
                                        "folder.")
    p.add_argument("--index", help="index directory to serve (default: a tiny synthetic one)")
    p.add_argument("--requests", type=int, default=500, help="timed requests per mode (default 500)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument("--max-batch", type=int, default=32, help="the batching server's max batch (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="the batching server's max wait (default 5 ms)")
    p.add_argument("-k", type=int, default=10, help="hits per query (default 10)")
    p.add_argument("--rounds", type=int, default=5, help="turns the modes take (default 5)")
    p.add_argument("--tcot", action="store_true", help="queries with their T-CoT (the index's reasoner)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    import tempfile
    from pathlib import Path

    from embedrl.serve.bench import bench_serve, format_report

    with tempfile.TemporaryDirectory() as tmp:
        index = args.index
        if index is None:
            from embedrl.index.build import build_index
            from embedrl.lab.presets import make_preset
            from embedrl.lab.synth.benchmark import generate_benchmark
            from embedrl.models.base import load_embedder

            data = Path(tmp) / "synth"
            generate_benchmark(data, seed=0, size="tiny")
            model = load_embedder(str(make_preset("tiny-clip", Path(tmp) / "clip")))
            index = Path(tmp) / "index"
            build_index(model, data / "corpus.jsonl", index, distributed=False)
        report = bench_serve(index, args.requests, args.concurrency, args.max_batch, args.max_wait_ms, args.k,
                             args.tcot, rounds=args.rounds)
    emit(format_report(report), args.json, report)
    return 0 if all(r["errors"] == 0 for r in report["rows"].values()) else 1


def _rerank(commands) -> None:
    p = commands.add_parser("rerank", help="second-stage rerankers: seconds a query, and the ratio to the first stage",
                            description="On the first --queries of each set of a benchmark: the first stage (query "
                                        "T-CoT without cache, embedding, ranking) and each reranker on its top k "
                                        "(no score cache), timed in one run.")
    p.add_argument("--queries", type=int, default=10, help="queries per set")
    p.add_argument("--model", required=True, help="the embedder")
    p.add_argument("--data", required=True, help="benchmark folder with registry.yaml")
    p.add_argument("--reasoner", help="writes the queries' T-CoTs (default: raw queries)")
    p.add_argument("--tcot-modalities", nargs="+", default=None, metavar="M", help="T-CoTs for these modalities only")
    p.add_argument("--rerank", nargs="+", default=["yes-prob", "lcr"], help="rerankers (default: yes-prob lcr)")
    p.add_argument("--rerank-model", help="their model (default: --reasoner)")
    p.add_argument("--rerank-option", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="a setting of one reranker, e.g. lcr:samples=5 (repeatable)")
    p.add_argument("--rerank-k", type=int, default=10, help="how many of the top are reranked")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME", help="only these sets")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(func=cmd_rerank)


def cmd_rerank(args) -> int:
    from embedrl.core.errors import EmbedrlError
    from embedrl.eval.bench import bench_rerank, format_rows
    from embedrl.models.base import load_embedder
    from embedrl.rerank import load_reranker

    reasoner = None
    if args.reasoner:
        from embedrl.models.reasoner import load_reasoner

        reasoner = load_reasoner(args.reasoner, modalities=args.tcot_modalities)  # no T-CoT cache
    model = args.rerank_model or reasoner
    if model is None:
        raise EmbedrlError("give --rerank-model (or --reasoner)")
    options: dict[str, list[str]] = {}
    for option in args.rerank_option:
        name, sep, setting = option.partition(":")
        if not sep or name not in args.rerank:
            raise EmbedrlError(f"--rerank-option {option!r}: write NAME:KEY=VALUE with NAME one of {args.rerank}")
        options.setdefault(name, []).append(setting)
    rerankers = [load_reranker(name, model, options.get(name), cache=None) for name in args.rerank]
    rows = bench_rerank(load_embedder(args.model), args.data, rerankers, reasoner, args.queries, args.rerank_k,
                        args.datasets)
    return emit(format_rows(rows), args.json, rows)


def _faults(commands) -> None:
    from embedrl.lab import faults
    from embedrl.lab.faults import CASES, FAST_CASES

    what = "kill -9 and a full disk against the long jobs, then the rerun: what survived"
    p = commands.add_parser("faults", help=what, description=faults.__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--cases", nargs="+", default=list(FAST_CASES), choices=CASES, metavar="CASE",
                   help=f"cases to run (default: {' '.join(FAST_CASES)}; also: "
                        f"{' '.join(c for c in CASES if c not in FAST_CASES)}, minutes each)")
    p.add_argument("--work", help="folder for presets, data and runs (default: a temporary folder)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(func=cmd_faults)


def cmd_faults(args) -> int:
    import tempfile

    from embedrl.lab.faults import format_rows, rows_json, run_fault_bench

    with tempfile.TemporaryDirectory() as tmp:
        rows = run_fault_bench(args.work or tmp, args.cases)
    return emit(format_rows(rows), args.json, rows_json(rows))


BENCHES = [_index, _encode, _rl, _video, _gpu, _data, _serve, _rerank, _faults]


def register(sub) -> None:
    commands = add_group(sub, "bench", "benchmarks: index types, encoding throughput, EG-RL step time, reading "
                                       "data, serving load, rerankers, faults")
    for add in BENCHES:
        add(commands)

