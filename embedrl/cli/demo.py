"""`embedrl demo --index DIR | --server URL`: serve the Gradio retrieval demo over an index, here or on a server."""

from __future__ import annotations

from embedrl.cli import add_format_option, add_rerank_args


def register(sub) -> None:
    p = sub.add_parser("demo", help="interactive retrieval demo (Gradio) over an index",
                       description="Serve a Gradio app that searches an index by text and/or image and "
                                   "shows the query's and each result's T-CoT evidence.")
    p.add_argument("--index", help="index directory (from `embedrl index build`); with --server, the name of one "
                                   "of the server's indexes (default: its only one)")
    p.add_argument("--server", help="run against an `embedrl serve` at this URL instead: it searches, this "
                                    "process only shows")
    p.add_argument("--api-key", help="the server's API key (default $EMBEDRL_API_KEY)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 exposes the demo)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--model", help="another copy of the index's embedder (default: the one in the manifest)")
    add_format_option(p)
    p.add_argument("--reasoner", help="query reasoner (default: the one in the manifest, if any)")
    p.add_argument("--tcot-cache", help="T-CoT cache file (default: $EMBEDRL_TCOT_CACHE or ~/.cache/embedrl)")
    p.add_argument("--concurrency", type=int, default=2,
                   help="requests processed at once; the rest wait in Gradio's queue (default 2)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload (default 10 MB)")
    p.add_argument("--max-pixels", type=int, default=16_000_000,
                   help="largest accepted image in pixels, checked before decoding (default 16M)")
    add_rerank_args(p, "the query reasoner")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from embedrl.core.errors import EmbedrlError
    from embedrl.demo.app import launch

    if args.concurrency < 1:
        raise EmbedrlError("--concurrency must be at least 1")
    if not args.max_upload_mb > 0 or args.max_pixels < 1:  # (not > 0: NaN too)
        raise EmbedrlError("--max-upload-mb and --max-pixels must be positive")
    if args.rerank_k < 1:
        raise EmbedrlError("--rerank-k must be at least 1")
    if not 0 < args.port < 65536:
        raise EmbedrlError(f"--port {args.port} is not a TCP port")
    limits = dict(concurrency=args.concurrency, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels)
    if args.server:
        from embedrl.demo.remote import launch as launch_remote

        if args.model or args.reasoner or args.tcot_cache or args.format or args.rerank:
            raise EmbedrlError("--model, --format, --reasoner, --tcot-cache and --rerank are the server's; give "
                               "them to `embedrl serve`")
        launch_remote(args.server, args.index, args.api_key, host=args.host, port=args.port, share=args.share,
                      **limits)
        return 0
    if not args.index:
        raise EmbedrlError("give --index DIR (or --server URL)")
    launch(args.index, host=args.host, port=args.port, share=args.share, model=args.model,
           reasoner=args.reasoner, tcot_cache=args.tcot_cache, format=args.format, rerank=args.rerank,
           rerank_k=args.rerank_k, rerank_model=args.rerank_model, rerank_options=args.rerank_option, **limits)
    return 0
