"""`embedrl index build | info | add | search`: parse arguments, call embedrl.index, print JSON."""

from __future__ import annotations

import json
from pathlib import Path

from embedrl.cli import (
    add_format_option,
    add_group,
    add_prompt_set_option,
    add_rerank_args,
    load_rerank_args,
)
from embedrl.core.errors import EmbedrlError


def register(sub) -> None:
    commands = add_group(sub, "index", "build, inspect, extend and search FAISS indexes of a corpus")

    p = commands.add_parser("build", help="encode a corpus (resumable, multi-process) and build an index")
    p.add_argument("--model", required=True, help="embedder: a saved model directory, open_clip:ARCH, a Hub id, or "
                                                  "the URL of an `embedrl serve`")
    add_format_option(p)
    p.add_argument("--reasoner", help="reasoner for target T-CoTs (cached; omit to index raw items): a model, or an "
                                      "OpenAI-compatible chat endpoint openai:BASE_URL#MODEL")
    add_prompt_set_option(p)
    p.add_argument("--tcot-modalities", nargs="+", default=None, metavar="M",
                   help="T-CoTs only for items of these modalities (text image video document); others are "
                        "indexed raw, and queries are treated alike at search time (default: all)")
    _corpus_args(p)
    p.add_argument("--out", required=True, help="index directory (rerun the same command to resume)")
    p.add_argument("--factory", help="FAISS factory string (Flat, HNSW32, IVF4096,PQ32, OPQ64_256,IVF...,PQ64); "
                   "default: chosen from corpus size and dimension")
    p.add_argument("--shard-size", type=int, default=1024, help="items per shard (the unit of resume)")
    p.add_argument("--batch-size", type=int, default=32, help="encoder batch size")
    p.add_argument("--gpu", action="store_true", help="train/add the FAISS index on GPU (needs faiss-gpu)")
    p.add_argument("--tcot-cache", help="T-CoT cache file (default: $EMBEDRL_TCOT_CACHE or ~/.cache/embedrl)")
    p.add_argument("--overwrite", action="store_true", help="replace a build of another corpus/model in --out")
    p.add_argument("--index-shards", type=int, default=1, metavar="N",
                   help="write the FAISS index in N parts trained once, searched as one (index_shards/)")
    p.add_argument("--reasoner-backend", choices=("hf", "vllm"), default="hf",
                   help="generate T-CoTs with transformers (hf) or vLLM's offline engine (vllm, GPU only)")
    ray = p.add_argument_group("Ray (--engine ray)")
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="encode in this process (or the ranks of accelerate launch / torchrun), or in a pool "
                          "of actors on a Ray cluster (pip install 'embedrl[ray]')")
    ray.add_argument("--address", help="Ray cluster to join: auto, HOST:6379 or ray://HOST:10001 "
                     "(default: $RAY_ADDRESS, else a local cluster on this machine)")
    ray.add_argument("--workers", type=int, help="actors in the pool (default: as many as the cluster's CPUs, "
                     "or GPUs with --gpus-per-worker, allow)")
    ray.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each actor takes (default: 1)")
    ray.add_argument("--gpus-per-worker", type=float, default=0.0,
                     help="GPUs each actor takes (e.g. 1, or 0.5 to share one); the models load on it")
    p.set_defaults(func=cmd_build)

    p = commands.add_parser("info", help="print an index's manifest and build report")
    p.add_argument("dir", help="index directory")
    p.set_defaults(func=cmd_info)

    p = commands.add_parser("add", help="append a corpus to an existing index")
    p.add_argument("dir", help="index directory")
    _corpus_args(p)
    p.add_argument("--model", help="another copy of the index's embedder (default: the one in the manifest)")
    add_format_option(p)
    p.add_argument("--reasoner", help="the index's reasoner (default: the one in the manifest)")
    p.add_argument("--batch-size", type=int, default=32, help="encoder batch size")
    p.add_argument("--duplicates", choices=("refuse", "skip"), default="refuse",
                   help="items whose id the index already holds: refuse the add (default) or leave them out "
                        "(listed in the output and in build_report.json)")
    p.add_argument("--tcot-cache", help="T-CoT cache file")
    p.set_defaults(func=cmd_add)

    p = commands.add_parser("search", help="search an index with a text and/or image query; prints JSON")
    p.add_argument("dir", help="index directory")
    p.add_argument("--text", default="", help="query text")
    p.add_argument("--image", help="query image file")
    p.add_argument("--frames", help="query video: a folder of frames")
    p.add_argument("--instruction", default="", help="task instruction for the query")
    p.add_argument("-k", type=int, default=10, help="number of hits")
    p.add_argument("--no-tcot", action="store_true", help="embed the raw query, without a reasoner T-CoT")
    p.add_argument("--model", help="another copy of the index's embedder (default: the one in the manifest)")
    add_format_option(p)
    p.add_argument("--reasoner", help="query reasoner (default: the one in the manifest)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="FAISS search parameter, e.g. nprobe=64 or efSearch=256 (repeatable)")
    p.add_argument("--tcot-cache", help="T-CoT cache file (the reranker's scores are cached there too)")
    add_rerank_args(p, "the query reasoner")
    p.set_defaults(func=cmd_search)


def _corpus_args(p) -> None:
    p.add_argument("--corpus", required=True,
                   help="a JSONL of items, a folder of images (or of frame folders), or REGISTRY.yaml:DATASET")
    p.add_argument("--corpus-type", default="auto", choices=("auto", "jsonl", "images", "videos", "eval"),
                   help="how to read --corpus (auto: JSONL file / image folder / registry:dataset)")
    p.add_argument("--data-root", help="data root for an evaluation set (default: the registry's folder)")


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def cmd_build(args) -> int:
    from embedrl.data.corpus import read_corpus
    from embedrl.index.build import build_index
    from embedrl.models.base import load_embedder
    from embedrl.models.reasoner import load_reasoner

    engine = None
    if args.engine == "ray":
        from embedrl.index.ray_engine import RayEngine

        engine = RayEngine(args.address, args.workers, args.cpus_per_worker, args.gpus_per_worker,
                           args.reasoner_backend)
    elif args.address or args.workers or args.gpus_per_worker or args.cpus_per_worker != 1.0:
        raise EmbedrlError("--address, --workers, --cpus-per-worker and --gpus-per-worker need --engine ray")
    # with Ray the actors load the models; the driver's copies (on CPU) only give their hashes
    device = {"device": "cpu"} if engine else {}
    backend = "hf" if engine else args.reasoner_backend
    reasoner = (load_reasoner(args.reasoner, backend=backend, modalities=args.tcot_modalities,
                              prompt_set=args.prompt_set, **device) if args.reasoner else None)
    corpus = read_corpus(args.corpus, args.corpus_type, args.data_root)
    embedder = load_embedder(args.model, format=args.format, **device)
    manifest = build_index(embedder, corpus, args.out, reasoner=reasoner, factory=args.factory,
                           shard_size=args.shard_size, gpu=args.gpu, cache=args.tcot_cache,
                           batch_size=args.batch_size, overwrite=args.overwrite, index_shards=args.index_shards,
                           engine=engine)
    from embedrl.index.build import process_state

    if process_state().is_main_process:
        _print({"index": str(args.out), "count": manifest["count"], "skipped": manifest.get("skipped", 0),
                "factory": manifest["factory"], "why": manifest.get("factory_reason"),
                "index_shards": len(manifest.get("index_shards") or [None])})
    return 0


def cmd_info(args) -> int:
    from embedrl.index.build import REPORT_FILE, load_manifest

    manifest = load_manifest(args.dir)
    report_path = Path(args.dir) / REPORT_FILE
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        manifest["build_report"] = {k: report[k] for k in ("skipped_count", "skipped", "encode_seconds",
                                                           "index_seconds", "tcot_cache", "tcots") if k in report}
    _print(manifest)
    return 0


def cmd_add(args) -> int:
    from embedrl.data.corpus import read_corpus
    from embedrl.index.add import add_to_index
    from embedrl.index.build import load_manifest
    from embedrl.models.base import load_embedder
    from embedrl.models.reasoner import load_reasoner

    manifest = load_manifest(args.dir)
    spec = args.model or manifest["embedder"].get("id")
    if not spec:
        raise EmbedrlError(f"{args.dir} was built from precomputed vectors; pass --model")
    built_with = manifest.get("reasoner") or {}
    reasoner_spec = args.reasoner or built_with.get("id")
    reasoner = (load_reasoner(reasoner_spec, modalities=built_with.get("modalities"),
                              prompt_set=built_with.get("prompt_set")) if reasoner_spec else None)
    corpus = read_corpus(args.corpus, args.corpus_type, args.data_root)
    embedder = load_embedder(spec, format=args.format or manifest["embedder"].get("format"))
    result = add_to_index(args.dir, corpus, embedder, reasoner=reasoner, cache=args.tcot_cache,
                          batch_size=args.batch_size, duplicates=args.duplicates)
    _print(result)
    return 0


def _params(pairs: list[str]) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            out[name.strip()] = float(value) if "." in value else int(value)
        except ValueError:
            sep = ""
        if not sep:
            raise EmbedrlError(f"--param {pair!r}: expected NAME=NUMBER, e.g. nprobe=64")
    return out


def cmd_search(args) -> int:
    from embedrl.core.items import Item
    from embedrl.index.search import Retriever

    if not (args.text or args.image or args.frames):
        raise EmbedrlError("give a query: --text, --image and/or --frames")
    if args.k < 1:
        raise EmbedrlError(f"-k {args.k}: the number of hits must be at least 1")
    frames = None
    if args.frames:
        from embedrl.data.corpus import read_video_folder

        videos = read_video_folder(args.frames).items
        if len(videos) != 1:
            raise EmbedrlError(f"--frames {args.frames}: expected one folder of frames, found {len(videos)} videos")
        frames = videos[0].frames
    query = Item(text=args.text, image=args.image, frames=frames, instruction=args.instruction)
    reasoner = args.reasoner
    if args.rerank and not (args.rerank_model or reasoner):  # the reranker reads with the index's reasoner
        from embedrl.index.build import load_manifest

        reasoner = (load_manifest(args.dir).get("reasoner") or {}).get("id")
    retriever = Retriever.from_dir(args.dir, model=args.model, reasoner=reasoner, cache=args.tcot_cache,
                                   format=args.format)
    try:
        reranker = load_rerank_args(args, retriever.reasoner, cache=retriever.cache.path)
        hits = retriever.search(query, k=args.k, use_tcot=not args.no_tcot, params=_params(args.param),
                                reranker=reranker, rerank_k=args.rerank_k)[0]
    finally:
        retriever.close()
    _print([h.to_dict() for h in hits])
    return 0
