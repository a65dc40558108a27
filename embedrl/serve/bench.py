"""`embedrl bench serve`: a bounded load run of `/v1/search` on 127.0.0.1, three ways in one run.

1. the server with dynamic batching (`--max-batch`, `--max-wait-ms`),
2. the same server with batching off (`--max-batch 1`),
3. no server: `Retriever.search` called in-process, one query at a time (what a script does).

Each server runs in its own process (`python -m embedrl serve`), as in production, so the
load generator (asyncio, `concurrency` requests in flight) does not share its interpreter.
The same queries (texts and images drawn from the index's own items, images sent as data
URLs) go to all three; after a warm-up, `requests` are timed. Reported per mode: requests/s,
p50 / p95 / p99 latency in ms, errors, and the server's mean batch size (from its metrics);
then the ratios batching / off and server / in-process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedrl.client import item_input
from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item

logger = logging.getLogger(__name__)


def bench_queries(index_dir: str | os.PathLike, n: int = 64, image_share: float = 0.25) -> list[Item]:
    """Up to `n` queries from the index's items: first sentences of its texts, and (a share of) its images."""
    from embedrl.index.search import Retriever

    retriever = Retriever.from_dir(index_dir, load_model=False)
    try:
        records = [r for r in retriever.store.get_many(range(min(len(retriever), 4 * n))) if r]
    finally:
        retriever.close()
    texts = [Item(text=r["item"]["text"].split(". ")[0]) for r in records if r["item"].get("text")]
    images = [Item(image=r["item"]["image"], instruction=r["item"].get("instruction", "")) for r in records
              if r["item"].get("image")]
    n_images = min(len(images), round(n * image_share)) if texts else min(len(images), n)
    queries = texts[: n - n_images] + images[:n_images]
    if not queries:
        raise EmbedrlError(f"{index_dir}: no text or image items to draw queries from")
    return queries


def summary(latencies_s: list[float], wall_s: float, errors: list[str]) -> dict[str, Any]:
    ms = np.asarray(latencies_s) * 1e3 if latencies_s else np.zeros(1)
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"requests": len(latencies_s) + len(errors), "errors": len(errors), "first_errors": errors[:3],
            "requests_per_s": round(len(latencies_s) / wall_s, 2) if wall_s else 0.0,
            "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "p99_ms": round(float(p99), 2)}


async def _load(url: str, bodies: list[bytes], requests: int, concurrency: int) -> tuple[list[float], float, list[str]]:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=concurrency)) as http:
        async def one(i: int) -> None:
            async with gate:
                start = time.perf_counter()
                try:
                    response = await http.post("/v1/search", content=bodies[i % len(bodies)], headers=headers)
                    if response.status_code != 200 or not response.json()["hits"]:
                        errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                        return
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    return
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return latencies, time.perf_counter() - begin, errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_server_load(index_dir: str | os.PathLike, queries: list[Item], requests: int, concurrency: int,
                    max_batch: int, max_wait_ms: float, k: int, use_tcot: bool, warmup: int = 32) -> dict[str, Any]:
    """Start `embedrl serve` in a subprocess, send the load, read its batch sizes, stop it."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    bodies = [json.dumps({"query": item_input(q), "k": k, "use_tcot": use_tcot}).encode() for q in queries]
    command = [sys.executable, "-m", "embedrl", "-q", "serve", "--index", f"bench={index_dir}", "--port", str(port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "EMBEDRL_API_KEY": ""})
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None:
                    log.seek(0)
                    raise EmbedrlError(f"the server exited ({server.returncode}): {log.read()[-2000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise EmbedrlError("the server did not answer /health within 300 s")
                time.sleep(0.2)
            asyncio.run(_load(url, bodies, warmup, concurrency))
            latencies, wall, errors = asyncio.run(_load(url, bodies, requests, concurrency))
            metrics = httpx.get(f"{url}/metrics", timeout=30).text
        finally:
            server.terminate()
            server.wait(timeout=60)
    row = summary(latencies, wall, errors)
    row["mean_batch"] = _mean_batch(metrics, "embed")
    return row


def _mean_batch(metrics: str, stage: str) -> float:
    values = {}
    for line in metrics.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f'embedrl_batch_size_{name}{{stage="{stage}"}}'):
                values[name] = float(line.rsplit(" ", 1)[1])
    return round(values["sum"] / values["count"], 2) if values.get("count") else 0.0


def run_in_process(index_dir: str | os.PathLike, queries: list[Item], requests: int, k: int, use_tcot: bool,
                   warmup: int = 32) -> dict[str, Any]:
    """`Retriever.search` one query at a time, in this process: the no-server baseline."""
    from embedrl.index.search import Retriever

    retriever = Retriever.from_dir(index_dir)
    try:
        for i in range(warmup):
            retriever.search(queries[i % len(queries)], k=k, use_tcot=use_tcot)
        latencies, errors = [], []
        begin = time.perf_counter()
        for i in range(requests):
            start = time.perf_counter()
            if not retriever.search(queries[i % len(queries)], k=k, use_tcot=use_tcot)[0]:
                errors.append("no hits")
                continue
            latencies.append(time.perf_counter() - start)
        wall = time.perf_counter() - begin
    finally:
        retriever.close()
    return {**summary(latencies, wall, errors), "mean_batch": 1.0}


def bench_serve(index_dir: str | os.PathLike, requests: int = 500, concurrency: int = 16, max_batch: int = 32,
                max_wait_ms: float = 5.0, k: int = 10, use_tcot: bool = False, image_share: float = 0.25) -> dict:
    """The three modes on the same queries; returns their rows and the ratios."""
    if requests < 1 or concurrency < 1 or max_batch < 1:
        raise EmbedrlError("requests, concurrency and max batch must be at least 1")
    index_dir = Path(index_dir)
    queries = bench_queries(index_dir, image_share=image_share)
    rows = {}
    for name, batch in ((f"server, dynamic batching (max {max_batch}, {max_wait_ms:g} ms)", max_batch),
                        ("server, batching off", 1)):
        logger.info("%s: %d requests, %d at a time", name, requests, concurrency)
        rows[name] = run_server_load(index_dir, queries, requests, concurrency, batch, max_wait_ms, k, use_tcot)
    logger.info("in-process Retriever.search: %d queries", requests)
    rows["in-process Retriever.search, one query at a time"] = run_in_process(index_dir, queries, requests, k, use_tcot)
    batched, off, local = (r["requests_per_s"] for r in rows.values())
    return {"index": str(index_dir), "requests": requests, "concurrency": concurrency, "k": k, "use_tcot": use_tcot,
            "queries": {"distinct": len(queries), "images": sum(q.image is not None for q in queries)},
            "rows": rows, "ratios": {"batching_vs_off": round(batched / off, 2) if off else None,
                                     "server_vs_in_process": round(batched / local, 2) if local else None,
                                     "server_off_vs_in_process": round(off / local, 2) if local else None}}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"`bench serve`: {report['requests']} /v1/search requests, {report['concurrency']} at a time, k={report['k']} "
             f"({report['queries']['distinct']} distinct queries, {report['queries']['images']} of them images)", "",
             "| mode | req/s | p50 ms | p95 ms | p99 ms | mean batch | errors |", "|---|---|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        lines.append(f"| {name} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} "
                     f"| {r['mean_batch']:.1f} | {r['errors']} |")
    ratios = report["ratios"]
    lines += ["", f"req/s ratios: batching / off {ratios['batching_vs_off']}x, server (batching) / in-process "
                  f"{ratios['server_vs_in_process']}x, server (off) / in-process {ratios['server_off_vs_in_process']}x"]
    return "\n".join(lines)
