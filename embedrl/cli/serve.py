"""`embedrl serve --index [NAME=]DIR ... [--model M] [--reasoner R|URL]`: the HTTP search and embeddings service."""

from __future__ import annotations

from embedrl.cli import add_format_option, add_prompt_set_option, add_rerank_args


def register(sub) -> None:
    p = sub.add_parser("serve", help="HTTP service: OpenAI-compatible embeddings, JSON search, metrics",
                       description="Serve an embedder and indexes built with it over HTTP: POST /v1/embeddings "
                                   "(OpenAI-compatible), POST /v1/search, GET /v1/indexes, /v1/items/INDEX/ID, "
                                   "/health and /metrics (Prometheus). Concurrent requests are encoded together "
                                   "(dynamic batching). Indexes changed by `embedrl index add` are picked up "
                                   "without a restart. README: Serving.")
    p.add_argument("--index", action="append", default=[], metavar="[NAME=]DIR",
                   help="an index to serve, by name (default: the directory's name); repeatable")
    p.add_argument("--model", help="embedder to serve (default: the first index's); every index must have been "
                                   "built with it")
    add_format_option(p)
    p.add_argument("--reasoner", help="query reasoner for searches with T-CoT: a model directory, Hub id or an "
                                      "OpenAI-compatible chat URL (default: each index's own); a local one is also "
                                      "served at /v1/chat/completions")
    add_prompt_set_option(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only; any other needs an API key)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="require this key (Authorization: Bearer KEY); default $EMBEDRL_API_KEY")
    p.add_argument("--model-name", help="name the embedder is served under (default: its directory's name)")
    p.add_argument("--max-batch", type=int, default=32,
                   help="most inputs encoded in one model call (1 switches dynamic batching off; default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first waiting input waits for others to join its batch (default 5 ms)")
    p.add_argument("--tcot-cache", help="T-CoT cache file for query T-CoTs (default: $EMBEDRL_TCOT_CACHE or "
                                        "~/.cache/embedrl)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (default 64 MB)")
    p.add_argument("--max-image-mb", type=float, default=10.0, help="largest image in a request (default 10 MB)")
    p.add_argument("--max-pixels", type=int, default=16_000_000,
                   help="largest image in pixels, checked before decoding (default 16M)")
    p.add_argument("--max-inputs", type=int, default=256, help="most inputs per embeddings request (default 256)")
    add_rerank_args(p, "the served reasoner, else the first index's")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from embedrl.core.errors import EmbedrlError
    from embedrl.core.media import ImageLimits
    from embedrl.serve.server import run
    from embedrl.serve.service import ServeOptions
    from embedrl.serve.wire import Limits

    if not 0 < args.port < 65536:
        raise EmbedrlError(f"--port {args.port} is not a TCP port")
    if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_inputs < 1:
        raise EmbedrlError("--max-batch and --max-inputs must be at least 1, --max-wait-ms at least 0")
    if args.max_body_mb <= 0 or args.max_image_mb <= 0 or args.max_pixels < 1:
        raise EmbedrlError("--max-body-mb, --max-image-mb and --max-pixels must be positive")
    limits = Limits(max_body_mb=args.max_body_mb, max_inputs=args.max_inputs,
                    image=ImageLimits(args.max_image_mb, args.max_pixels))
    if args.rerank_k < 1:
        raise EmbedrlError("--rerank-k must be at least 1")
    options = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, limits=limits,
                           model_name=args.model_name, tcot_cache=args.tcot_cache, rerank=args.rerank,
                           rerank_k=args.rerank_k, rerank_model=args.rerank_model, rerank_options=args.rerank_option)
    run(args.index, model=args.model, reasoner=args.reasoner, host=args.host, port=args.port,
        api_key=args.api_key, options=options, format=args.format, prompt_set=args.prompt_set)
    return 0
