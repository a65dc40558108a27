"""A bounded load test of a running demo through `gradio_client`: N queries from T threads.

    python -m embedrl.demo.loadtest --url http://127.0.0.1:7860 --queries 50 --threads 8
    python -m embedrl.demo.loadtest --index runs/index        # serve the index here, then test it

Each thread has its own client (as separate users would) and calls the demo's `/search`
endpoint, so requests go through Gradio's queue exactly as a browser's do. Latency is
measured per request on the client side (queue wait included). Prints one JSON object:
count, errors, p50/p95/max latency in ms, throughput.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

QUERIES = (
    "a huge violet box at the centre",
    "a small pink star on the right",
    "a little yellow lozenge at the top",
    "two circles, one red and one blue",
    "a turquoise hex tile near the top edge",
    "a green ring at the bottom left",
    "an orange triangle moving down",
    "a scarlet plus shape to the right",
)


def run_load_test(url: str, queries: int = 50, threads: int = 8, k: int = 10,
                  texts: tuple[str, ...] = QUERIES, use_tcot: bool = True) -> dict[str, Any]:
    """Send `queries` searches from `threads` threads; returns latency percentiles (ms) and error count."""
    from gradio_client import Client

    local = threading.local()
    errors: list[str] = []

    def one(i: int) -> float | None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = Client(url, verbose=False, download_files=False)
        t0 = time.perf_counter()
        try:
            out = client.predict(texts[i % len(texts)], None, "", k, use_tcot, api_name="/search")
            if not out[0]:
                raise RuntimeError(f"no results: {out[4]}")
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported, none stops the test
            errors.append(f"{type(e).__name__}: {e}")
            return None
        return (time.perf_counter() - t0) * 1e3

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        latencies = [ms for ms in pool.map(one, range(queries)) if ms is not None]
    wall = time.perf_counter() - start
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return {"queries": queries, "threads": threads, "ok": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1), "max_ms": round(float(lat.max()), 1),
            "wall_s": round(wall, 2), "queries_per_s": round(len(latencies) / wall, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m embedrl.demo.loadtest", description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running demo")
    where.add_argument("--index", help="serve this index on 127.0.0.1 for the test")
    p.add_argument("--reasoner", help="query reasoner when serving --index")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=2, help="the demo's concurrency when serving --index")
    p.add_argument("-k", type=int, default=10)
    args = p.parse_args(argv)
    demo = None
    url = args.url
    if args.index:
        import socket

        from embedrl.demo.app import build_app, load_backend, serve

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        demo = build_app(load_backend(args.index, reasoner=args.reasoner), concurrency=args.concurrency)
        _, url, _ = serve(demo, port=port, block=False, quiet=True)
    try:
        report = run_load_test(url, args.queries, args.threads, args.k)
    finally:
        if demo is not None:
            demo.close()
    print(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
