"""`embedrl bench index --engine ray`: index-build throughput, local against Ray, on the same corpus.

Each row is a whole `build_index` (encode every shard, then the same FAISS merge) into a fresh
directory, timed on the wall clock after one untimed warm-up build: `local` at this process's threads and at one thread (the
compute of one 1-CPU Ray worker), then Ray with 1, 2, ... workers of one CPU each. The Ray
cluster is started once before the rows (its start is reported, not counted: a cluster
outlives builds); each Ray row does count its workers' start (imports and model loading, once
per actor), and "after start" divides by the wall less that start: the rate a long build runs
at. Ratios are items/s over the local build's at this process's threads (the default).

Per-item overhead of Ray: the wall time of Ray x1 outside its worker start and outside the
shards' own encoding (scheduling, moving items and results, the object store, the driver),
less the same outside-the-shards time of the local 1-thread build (the driver's share: plan,
FAISS merge), per item. The shards' own time is reported too: in-worker compute against local.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_json
from embedrl.data.corpus import Corpus

logger = logging.getLogger(__name__)


@dataclass
class EngineRow:
    engine: str
    workers: int
    threads: int
    items: int
    wall_s: float
    encode_s: float  # the shards' own encoding time, summed (build_report.json)
    worker_start_s: float = 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.wall_s

    @property
    def steady_items_per_s(self) -> float:
        """Items/s once the workers are up: what a long build runs at."""
        return self.items / max(self.wall_s - self.worker_start_s, 1e-9)


def bench_engines(model: str, corpus: Corpus, workers: Sequence[int] = (1, 2), shard_size: int = 32,
                  batch_size: int = 32, address: str | None = None) -> dict[str, Any]:
    """Build the same index locally and on Ray; returns the rows, the cluster start and the per-item overhead."""
    import torch

    from embedrl.index.build import REPORT_FILE, build_index
    from embedrl.index.ray_engine import RayEngine
    from embedrl.models.base import load_embedder

    if not workers or min(workers) < 1:
        raise EmbedrlError("--workers: give one or more pool sizes, each at least 1")
    embedder = load_embedder(model, device="cpu")
    threads = torch.get_num_threads()
    rows: list[EngineRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        def timed(name: str, **kwargs: Any) -> tuple[float, float]:
            t0 = time.perf_counter()
            build_index(embedder, corpus, Path(tmp) / name, shard_size=shard_size, batch_size=batch_size,
                        distributed=False, **kwargs)
            return time.perf_counter() - t0, read_json(Path(tmp) / name / REPORT_FILE)["encode_seconds"]

        torch.set_num_threads(1)
        try:
            timed("warm-up")  # untimed: media into the page cache, lazy initialisation done
        finally:
            torch.set_num_threads(threads)
        # one thread first: threads left spinning by a wider run would slow a narrower one after it
        for n_threads in dict.fromkeys((1, threads)):
            torch.set_num_threads(n_threads)
            try:
                rows.append(EngineRow("local", 1, n_threads, len(corpus), *timed(f"local-{n_threads}")))
            finally:
                torch.set_num_threads(threads)
            logger.info("local, %d thread(s): %.1f s", n_threads, rows[-1].wall_s)
        t0 = time.perf_counter()
        started = RayEngine(address).connect()
        cluster_s = time.perf_counter() - t0
        try:
            for size in workers:
                engine = RayEngine(address, workers=size)
                rows.append(EngineRow("ray", size, 1, len(corpus), *timed(f"ray-{size}", engine=engine),
                                      engine.last_run.get("worker_start_seconds", 0.0)))
                logger.info("Ray, %d worker(s): %.1f s", size, rows[-1].wall_s)
        finally:
            if started:
                import ray

                ray.shutdown()
    one_thread = next(r for r in rows if r.engine == "local" and r.threads == 1)
    ray_one = next((r for r in rows if r.engine == "ray" and r.workers == 1), None)
    overhead = (None if ray_one is None else 1000 / len(corpus) * (
        (ray_one.wall_s - ray_one.worker_start_s - ray_one.encode_s) - (one_thread.wall_s - one_thread.encode_s)))
    return {"rows": rows, "cluster_start_s": cluster_s, "overhead_ms_per_item": overhead, "model": model,
            "items": len(corpus), "shard_size": shard_size}


def format_engines(result: dict[str, Any]) -> str:
    rows: list[EngineRow] = result["rows"]
    base = max((r for r in rows if r.engine == "local"), key=lambda r: r.threads)  # the default local build
    head = (f"index build of {result['items']} items ({result['model']}, shards of {result['shard_size']}): "
            f"local vs Ray\n{'engine':<8} {'workers':>7} {'threads':>7} {'wall s':>8} {'items/s':>9} "
            f"{'x local':>8} {'worker start s':>15} {'items/s after start':>20} {'x local':>8}")
    lines = [head, "-" * len(head.splitlines()[-1])]
    for r in rows:
        lines.append(f"{r.engine:<8} {r.workers:>7} {r.threads:>7} {r.wall_s:8.1f} {r.items_per_s:9.1f} "
                     f"{r.items_per_s / base.items_per_s:8.2f} {r.worker_start_s:15.1f} "
                     f"{r.steady_items_per_s:20.1f} {r.steady_items_per_s / base.items_per_s:8.2f}")
    lines.append(f"Ray cluster start: {result['cluster_start_s']:.1f} s (once per cluster, not in the walls)")
    if result["overhead_ms_per_item"] is not None:
        lines.append(f"per-item overhead of Ray (x1 outside worker start and shard encoding, less local's): "
                     f"{result['overhead_ms_per_item']:.2f} ms/item, "
                     f"{result['overhead_ms_per_item'] * result['shard_size']:.0f} ms per shard of {result['shard_size']}")
    lines.append("shards' own encoding time (s): " + ", ".join(
        f"{r.engine} x{r.workers} ({r.threads} thr) {r.encode_s:.1f}" for r in rows))
    return "\n".join(lines)
