"""`embedrl bench serve`: a bounded load run of `/v1/search` on 127.0.0.1, three ways in one run.

1. the server with dynamic batching (`--max-batch`, `--max-wait-ms`),
2. the same server with batching off (`--max-batch 1`),
3. no server: `Retriever.search` called in-process, one query at a time (what a script does).

The two servers run side by side, each in its own process (`python -m embedrl serve`, as in
production), so the load generator (asyncio, `concurrency` requests in flight) does not share
their interpreter; each holds its own copy of the model. The same queries (texts and images
drawn from the index's own items, images sent as data URLs) go to all three. After a warm-up,
the modes take turns in `rounds` (so a shared machine whose load drifts during the run weighs
on each alike) until each has answered `requests`. Reported per mode: requests/s, p50 / p95 /
p99 latency in ms, errors, and the server's mean batch size (from its metrics); then the
ratios batching / off and server / in-process.
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


async def _load(url: str, bodies: list[bytes], requests: int, concurrency: int,
                offset: int = 0) -> tuple[list[float], float, list[str]]:
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
                    response = await http.post("/v1/search", content=bodies[(offset + i) % len(bodies)],
                                               headers=headers)
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


class ServerProcess:
    """`python -m embedrl serve` on a free port of 127.0.0.1, in a subprocess; `url` once it answers /health."""

    def __init__(self, index_dir: str | os.PathLike, max_batch: int, max_wait_ms: float):
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.command = [sys.executable, "-m", "embedrl", "-q", "serve", "--index", f"bench={index_dir}",
                        "--port", self.url.rsplit(":", 1)[1], "--max-batch", str(max_batch),
                        "--max-wait-ms", str(max_wait_ms)]

    def __enter__(self) -> ServerProcess:
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "EMBEDRL_API_KEY": ""})
        return self

    def wait_ready(self, timeout: float = 300.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise EmbedrlError(f"the server exited ({self.process.returncode}): {self.log.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise EmbedrlError(f"the server did not answer /health within {timeout:g} s")
            time.sleep(0.2)

    def mean_batch(self) -> float:
        """Jobs per embedding call, from the server's own metrics."""
        import httpx

        sample = {}
        for line in httpx.get(f"{self.url}/metrics", timeout=30).text.splitlines():
            for name in ("sum", "count"):
                if line.startswith(f'embedrl_batch_size_{name}{{stage="embed"}}'):
                    sample[name] = float(line.rsplit(" ", 1)[1])
        return round(sample["sum"] / sample["count"], 2) if sample.get("count") else 0.0

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def _in_process(retriever, queries: list[Item], count: int, offset: int, k: int,
                use_tcot: bool) -> tuple[list[float], float, list[str]]:
    latencies, errors = [], []
    begin = time.perf_counter()
    for i in range(offset, offset + count):
        start = time.perf_counter()
        if not retriever.search(queries[i % len(queries)], k=k, use_tcot=use_tcot)[0]:
            errors.append("no hits")
            continue
        latencies.append(time.perf_counter() - start)
    return latencies, time.perf_counter() - begin, errors


def bench_serve(index_dir: str | os.PathLike, requests: int = 500, concurrency: int = 16, max_batch: int = 32,
                max_wait_ms: float = 5.0, k: int = 10, use_tcot: bool = False, image_share: float = 0.25,
                rounds: int = 5, warmup: int = 32) -> dict:
    """The three modes on the same queries, interleaved in `rounds` (so a machine whose load changes during
    the run weighs on each mode alike); returns their rows and the ratios."""
    from embedrl.index.search import Retriever

    if min(requests, concurrency, max_batch, rounds) < 1:
        raise EmbedrlError("requests, concurrency, max batch and rounds must be at least 1")
    index_dir = Path(index_dir)
    queries = bench_queries(index_dir, image_share=image_share)
    bodies = [json.dumps({"query": item_input(q), "k": k, "use_tcot": use_tcot}).encode() for q in queries]
    names = [f"server, dynamic batching (max {max_batch}, {max_wait_ms:g} ms)", "server, batching off",
             "in-process Retriever.search, one query at a time"]
    runs: dict[str, tuple[list[float], list[float], list[str]]] = {n: ([], [], []) for n in names}
    with ServerProcess(index_dir, max_batch, max_wait_ms) as batching, ServerProcess(index_dir, 1, 0) as off:
        servers = dict(zip(names, (batching, off)))
        retriever = Retriever.from_dir(index_dir)
        try:
            for server in servers.values():
                server.wait_ready()
                asyncio.run(_load(server.url, bodies, warmup, concurrency))
            _in_process(retriever, queries, warmup, 0, k, use_tcot)
            done = 0
            for r in range(rounds):
                count = requests // rounds + (1 if r < requests % rounds else 0)
                logger.info("round %d of %d: %d requests per mode", r + 1, rounds, count)
                for name in names:
                    if name in servers:
                        latencies, wall, errors = asyncio.run(_load(servers[name].url, bodies, count, concurrency, done))
                    else:
                        latencies, wall, errors = _in_process(retriever, queries, count, done, k, use_tcot)
                    runs[name][0].extend(latencies)
                    runs[name][1].append(wall)
                    runs[name][2].extend(errors)
                done += count
        finally:
            retriever.close()
        batches = {name: server.mean_batch() for name, server in servers.items()}
    rows = {name: {**summary(lat, sum(walls), errors), "mean_batch": batches.get(name, 1.0)}
            for name, (lat, walls, errors) in runs.items()}
    batched, unbatched, local = (r["requests_per_s"] for r in rows.values())
    return {"index": str(index_dir), "requests": requests, "concurrency": concurrency, "k": k, "use_tcot": use_tcot,
            "rounds": rounds, "queries": {"distinct": len(queries), "images": sum(q.image is not None for q in queries)},
            "rows": rows, "ratios": {"batching_vs_off": round(batched / unbatched, 2) if unbatched else None,
                                     "server_vs_in_process": round(batched / local, 2) if local else None,
                                     "server_off_vs_in_process": round(unbatched / local, 2) if local else None}}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"`bench serve`: {report['requests']} /v1/search requests per mode, {report['concurrency']} at a time, "
             f"k={report['k']}, modes interleaved in {report['rounds']} rounds ({report['queries']['distinct']} distinct "
             f"queries, {report['queries']['images']} of them images)", "",
             "| mode | req/s | p50 ms | p95 ms | p99 ms | mean batch | errors |", "|---|---|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        lines.append(f"| {name} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} "
                     f"| {r['mean_batch']:.1f} | {r['errors']} |")
    ratios = report["ratios"]
    lines += ["", f"req/s ratios: batching / off {ratios['batching_vs_off']}x, server (batching) / in-process "
                  f"{ratios['server_vs_in_process']}x, server (off) / in-process {ratios['server_off_vs_in_process']}x"]
    return "\n".join(lines)
