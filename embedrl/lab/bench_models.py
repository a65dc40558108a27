"""The `embedrl bench` commands that time models: `encode` (items/s against the bare forward, per
architecture and modality), `video-frames` (embedder training with fewer frames a video) and `gpu`
(the GPU figures in one run). Listed in `embedrl.lab.bench.BENCHES` with the others.
"""

from __future__ import annotations

from embedrl.cli import add_format_option


def emit(table: str, json_path: str | None, figures) -> int:
    """Print a bench's table and, with --json, write its figures (every `embedrl bench` command)."""
    from embedrl.core.io import write_json

    print(table)
    if json_path:
        write_json(json_path, figures)
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
    return emit(format_rows(rows), args.json, rows)


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
    return emit(format_video_rows(rows), args.json, rows)


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
    p.add_argument("--n", type=int, default=256, help="items per encode set (default 256: 4 batches of 64)")
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
    return emit(format_gpu_report(report), args.json, report)
