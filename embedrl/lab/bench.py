"""`embedrl bench <what>`: measurements users compare us by, printed as tables.

One function per bench: `_index(commands)` adds its sub-command and points it at a
`cmd_*` function that imports the heavy code it drives. To add a bench, write another
`_name(commands)` and list it in BENCHES.
"""

from __future__ import annotations

import logging

from embedrl.cli import add_format_option, add_group

logger = logging.getLogger(__name__)


def _emit(table: str, json_path: str | None, figures) -> int:
    """Print a bench's table and, with --json, write its figures."""
    from embedrl.core.io import write_json

    print(table)
    if json_path:
        write_json(json_path, figures)
    return 0


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

    from embedrl.core.io import write_json
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
    print(format_engines(result))
    if args.json:
        write_json(args.json, {**result, "rows": [asdict(r) | {"items_per_s": r.items_per_s,
                                                                "steady_items_per_s": r.steady_items_per_s}
                                                               for r in result["rows"]]})
    return 0


def _encode(commands) -> None:
    from embedrl.lab.archs import ARCHS
    from embedrl.lab.encode_bench import MODALITIES

    p = commands.add_parser("encode", help="encode items/s per backend and modality against the bare model forward",
                            description="Time encode (decoding, resizing, evidence crops, tokenising in the input "
                                        "pipeline, forward, pooling), encode with the pipeline off, our forward and "
                                        "the model's bare forward on the same batches, taking turns; print items/s "
                                        "and each as a share of the bare forward's. Without --model or --arch, the "
                                        "tiny presets are made in a temp folder; without --data, a tiny synthetic "
                                        "benchmark is.")
    p.add_argument("--model", nargs="+", default=[], help="embedders to compare (saved dirs, open_clip:ARCH[:TAG], Hub ids)")
    p.add_argument("--arch", nargs="+", default=[], choices=list(ARCHS), metavar="NAME",
                   help="real-size architectures built from config with random weights: " + ", ".join(ARCHS))
    p.add_argument("--depth", type=int, help="with --arch: keep the widths, cut the layers to this many "
                   "(text and vision), for a CPU")
    p.add_argument("--tiny", action="store_true", help="also the tiny presets (their rows beside the others)")
    add_format_option(p)
    p.add_argument("--data", help="benchmark folder with train/pairs.jsonl (default: a tiny synthetic benchmark)")
    p.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES),
                   help="item sets to time (default: all)")
    p.add_argument("--n", type=int, default=64, help="items per set (video sets: n / 8 clips of 8 frames)")
    p.add_argument("--image-px", type=int, help="re-save images and frames at this size first (e.g. 224)")
    p.add_argument("--batch-size", type=int, default=64, help="items per batch")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after a warm-up (the best is kept)")
    p.add_argument("--workers", type=int, default=1, help="input pipeline workers (0: collate inline)")
    p.add_argument("--worker-kind", choices=("thread", "process"), default="thread", help="threads or processes")
    p.add_argument("--device", help="where the models run (default: cuda if available, else cpu)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(func=cmd_encode)


def cmd_encode(args) -> int:
    import tempfile
    from pathlib import Path

    from embedrl.lab.archs import build_arch
    from embedrl.lab.encode_bench import modality_sets, run_encode_bench
    from embedrl.models.base import backend_of, load_embedder
    from embedrl.models.bench import format_rows
    from embedrl.models.pipeline import InputPipeline

    pipeline = InputPipeline(workers=args.workers, kind=args.worker_kind)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else None
        if data is None:
            from embedrl.lab.synth.benchmark import generate_benchmark

            data = Path(tmp) / "synth"
            generate_benchmark(data, seed=0, size="tiny")
        models = list(args.model)
        if args.tiny or not (args.model or args.arch):
            from embedrl.lab.presets import make_preset

            models += [str(make_preset(name, Path(tmp) / name)) for name in ("tiny-clip", "tiny-vlm-embedder")]
        sets = modality_sets(data, args.n, args.modalities, args.image_px, Path(tmp) / "resized")
        rows = []
        for arch in args.arch:  # one at a time: a 2B model is not kept beside the next
            rows += run_encode_bench([build_arch(arch, args.depth, args.format, args.device)], sets,
                                     args.batch_size, args.repeats, pipeline)
        for m in models:
            embedder = load_embedder(m, format=args.format if backend_of(m) == "vlm" else None, device=args.device)
            rows += run_encode_bench([embedder], sets, args.batch_size, args.repeats, pipeline)
    return _emit(format_rows(rows), args.json, rows)


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
    return _emit(format_breakdown(row), args.json, row)


def _video(commands) -> None:
    p = commands.add_parser("video-frames", help="embedder training with fewer frames per video: video share of "
                            "step time and VideoRet Hit@1 (8 frames at evaluation) per setting, over seeds",
                            description="Train the embedder recipe once per --frames setting and seed, score "
                                        "Synth-VideoRet with the frames evaluation takes, and print the video "
                                        "share of step time beside Hit@1 mean ± std. Finished runs under --out "
                                        "are reused. key=value overrides the recipe (e.g. max_steps=200).")
    p.add_argument("--config", default="train/embedder_tiny_clip.yaml", help="embedder recipe")
    p.add_argument("--model", help="embedder to start from (default: the tiny-clip preset, made under --out)")
    p.add_argument("--data", help="synthetic benchmark (default: the small one, made under --out)")
    p.add_argument("--out", default="runs/bench-video-frames", help="where the runs go")
    p.add_argument("--frames", type=int, nargs="+", default=[0, 4, 2], help="train_frames settings (0: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--video-only", action="store_true", help="train on Synth-VideoRet alone (the quality side, "
                   "cheaply: set max_steps to the video steps of a full run)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    p.set_defaults(func=cmd_video)


def cmd_video(args) -> int:
    from pathlib import Path

    from embedrl.lab.video_bench import format_video_rows, run_video_bench

    out = Path(args.out)
    data, model = Path(args.data) if args.data else out / "synth", args.model
    if not args.data and not (data / "registry.yaml").is_file():
        from embedrl.lab.synth.benchmark import generate_benchmark

        generate_benchmark(data, seed=0, size="small")
    if not model:
        from embedrl.lab.presets import make_preset

        model = str(out / "tiny-clip")
        if not (out / "tiny-clip" / "embedrl.json").is_file():
            make_preset("tiny-clip", out / "tiny-clip")
    rows = run_video_bench(args.config, model, data, out, args.frames, args.seeds, list(args.overrides),
                           args.video_only)
    return _emit(format_video_rows(rows), args.json, rows)


def _gpu(commands) -> None:
    p = commands.add_parser("gpu", help="GPU figures in one run: bf16 encode vs bare forward, faiss-gpu vs faiss-cpu, "
                            "an EG-RL step with and without vLLM",
                            description="On one GPU, in a few minutes: encode items/s against the bare forward "
                                        "(bf16) for the real-size architectures, FAISS build/search on GPU against "
                                        "CPU on the same vectors, and an EG-RL step (generation / rewards / update) "
                                        "with transformers and, when installed, vLLM. --dry-run runs every part on "
                                        "the CPU at toy sizes, to check the script without a GPU.")
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: checks the paths, not the speed")
    p.add_argument("--arch", nargs="+", choices=list(_archs()), metavar="NAME", help="architectures (default: all)")
    p.add_argument("--n", type=int, default=512, help="items per encode set (default 512)")
    p.add_argument("--batch-size", type=int, default=64, help="encode batch (default 64)")
    p.add_argument("--faiss-n", type=int, default=500_000, help="database vectors (default 500000)")
    p.add_argument("--dim", type=int, default=768, help="vector dimension (default 768)")
    p.add_argument("--rl-steps", type=int, default=3, help="EG-RL steps per engine (default 3)")
    p.add_argument("--reasoner", help="EG-RL policy (default: the tiny reasoner preset)")
    p.add_argument("--embedder", help="EG-RL embedder (default: the tiny CLIP preset)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_gpu)


def _archs():
    from embedrl.lab.archs import ARCHS

    return ARCHS


def cmd_gpu(args) -> int:
    from embedrl.lab.gpu_bench import format_gpu_report, run_gpu_bench

    report = run_gpu_bench(args.dry_run, args.arch, args.n, args.batch_size, args.faiss_n, args.dim,
                           rl_steps=args.rl_steps, reasoner=args.reasoner, embedder=args.embedder)
    return _emit(format_gpu_report(report), args.json, report)


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

    from embedrl.core.io import write_json
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
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return 0 if all(r["errors"] == 0 for r in report["rows"].values()) else 1


BENCHES = [_index, _encode, _rl, _video, _gpu, _serve]


def register(sub) -> None:
    commands = add_group(sub, "bench", "benchmarks: index types, encoding throughput, EG-RL step time, serving load")
    for add in BENCHES:
        add(commands)

