"""`embedrl bench index`: FAISS index types compared on the same vectors, against exact search.

For each index: build time (train + add), size on disk, single-query latency (p50/p95),
batch throughput (QPS), recall@k against exact `Flat` search (k-recall@k: the share of the
true top-k found), and the speed-up over `Flat`. HNSW's efSearch and IVF's nprobe are
raised until recall@k reaches the target (0.95), so the speed-ups are at equal quality.

Vectors: N random unit vectors (the worst case for approximate search: no structure to
exploit; queries are independent random vectors), `structured` ones (a Gaussian mixture in a
64-dimensional subspace, a stand-in for learned embeddings), or real embeddings from a
`.npy` file or an index directory's shards (queries: `nq` rows held out of the database).
autofaiss's automatically chosen index is added when `autofaiss` is installed (`pip install autofaiss`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.index import faiss_index as fx

logger = logging.getLogger(__name__)

EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024, 2048)
K_FACTORS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class BenchRow:
    name: str
    factory: str
    params: dict[str, Any] = field(default_factory=dict)
    build_s: float = 0.0
    size_bytes: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    qps: float = 0.0
    recall: float = 0.0
    note: str = ""


def random_unit_vectors(n: int, dim: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32 rows uniform on the unit sphere, made in chunks (peak memory ~ the result)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + len(x)] = x
    return out


def structured_unit_vectors(n: int, nq: int, dim: int, seed: int = 0, clusters: int = 1000,
                            intrinsic: int = 64, spread: float = 0.5, noise: float = 0.05
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(database, queries) drawn from one mixture of `clusters` Gaussians in a random
    `intrinsic`-dimensional subspace plus a little isotropic noise, normalised: a stand-in for
    learned embeddings, which have low intrinsic dimension and clusters (unlike uniform noise)."""
    rng = np.random.default_rng(seed)
    intrinsic = min(intrinsic, dim)
    basis = np.linalg.qr(rng.standard_normal((dim, intrinsic)))[0].astype(np.float32)
    centers = rng.standard_normal((clusters, intrinsic)).astype(np.float32)

    def draw(count: int, sub_seed: int, chunk: int = 100_000) -> np.ndarray:
        r = np.random.default_rng([seed, sub_seed])
        out = np.empty((count, dim), np.float32)
        for start in range(0, count, chunk):
            m = min(chunk, count - start)
            z = centers[r.integers(0, clusters, m)] + spread * r.standard_normal((m, intrinsic), dtype=np.float32)
            x = z @ basis.T + noise * r.standard_normal((m, dim), dtype=np.float32)
            out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return draw(n, 1), draw(nq, 2)


def load_vectors(path: str | os.PathLike) -> np.ndarray:
    """Embeddings from a `.npy` file or from an index directory's shards."""
    path = Path(path)
    if path.is_dir():
        from embedrl.index.build import SHARDS_DIR

        files = sorted((path / SHARDS_DIR).glob("shard_*.npy"))
        if not files:
            raise EmbedrlError(f"{path}: no shards/shard_*.npy to read vectors from")
        return fx.normalize(np.concatenate([np.load(f) for f in files]))
    if not path.is_file():
        raise EmbedrlError(f"vectors file not found: {path}")
    try:
        x = np.load(path)
    except ValueError as e:
        raise EmbedrlError(f"{path}: not a .npy array ({e})") from e
    if x.ndim != 2:
        raise EmbedrlError(f"{path}: expected an (N, dim) array, got shape {x.shape}")
    return fx.normalize(x)


def _size(index) -> int:
    import faiss

    with tempfile.TemporaryDirectory() as tmp:
        faiss.write_index(index, os.path.join(tmp, "i"))
        return os.path.getsize(os.path.join(tmp, "i"))


def _latency(index, xq: np.ndarray, k: int, n: int) -> tuple[float, float]:
    """Single-query latency on one thread (a server runs one query a thread; OpenMP's
    start-up per call would otherwise dominate small searches)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    times = []
    try:
        for q in xq[:n]:
            t0 = time.perf_counter()
            index.search(q[None], k)
            times.append(time.perf_counter() - t0)
    finally:
        faiss.omp_set_num_threads(threads)
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def measure(name: str, factory: str, index, build_s: float, xq: np.ndarray, truth: np.ndarray, k: int,
            latency_queries: int, params: dict[str, Any] | None = None, note: str = "") -> BenchRow:
    fx.set_search_params(index, params)
    t0 = time.perf_counter()
    _, found = index.search(xq, k)
    batch_s = time.perf_counter() - t0
    p50, p95 = _latency(index, xq, k, latency_queries)
    row = BenchRow(name, factory, dict(params or {}), build_s, _size(index), p50, p95, len(xq) / batch_s,
                   fx.recall_at_k(found, truth, k), note)
    logger.info("%s: %s", name, row)
    return row


def _build(factory: str, xb: np.ndarray, train_n: int | None = None):
    t0 = time.perf_counter()
    index = fx.new_index(factory, xb.shape[1])
    train = None
    if not index.is_trained:
        size = fx.train_size(index, len(xb)) if train_n is None else min(train_n, len(xb))
        train = xb[np.sort(np.random.default_rng(0).choice(len(xb), size, replace=False))]
    index = fx.build(factory, xb.shape[1], train, (xb[s:s + 100_000] for s in range(0, len(xb), 100_000)))
    return index, time.perf_counter() - t0


def _ivf_factory(n: int, dim: int) -> tuple[str, int]:
    """IVF with ~4 sqrt(n) lists (FAISS guideline: 4 to 16 sqrt(n)); PQ with ~4 dims a code byte."""
    nlist = 2 ** max(4, min(16, round(np.log2(4 * np.sqrt(n)))))
    m = max(4, min(128, dim // 4))
    while dim % m:
        m -= 1
    return f"IVF{nlist},PQ{m}", nlist


def run_index_bench(xb: np.ndarray, xq: np.ndarray, k: int = 10, target: float = 0.95,
                    latency_queries: int = 200, with_autofaiss: bool = True) -> list[BenchRow]:
    """Flat, HNSW32, IVF-PQ (+ exact re-ranking) and autofaiss's choice on the same vectors."""
    n, dim = xb.shape
    rows: list[BenchRow] = []

    index, build_s = _build("Flat", xb)
    t0 = time.perf_counter()
    _, truth = index.search(xq, k)
    logger.info("exact ground truth for %d queries in %.1fs", len(xq), time.perf_counter() - t0)
    rows.append(measure("Flat (exact)", "Flat", index, build_s, xq, truth, k, latency_queries))
    del index

    index, build_s = _build("HNSW32", xb)
    ef, _, curve = fx.tune(index, xq, truth, k, "efSearch", EF_SEARCH, target)
    rows.append(measure("HNSW32", "HNSW32", index, build_s, xq, truth, k, latency_queries, {"efSearch": ef},
                        note="efSearch tuned: " + " ".join(f"{v}:{r:.3f}" for v, r in curve)))
    del index

    # IVF-PQ, trained once; then the same trained index with its top k*k_factor re-ranked by
    # exact inner products (IndexRefineFlat: keeps the full vectors beside the codes)
    factory, nlist = _ivf_factory(n, dim)
    t0 = time.perf_counter()
    trained = fx.new_index(factory, dim)
    trained.train(xb[np.sort(np.random.default_rng(0).choice(n, fx.train_size(trained, n), replace=False))])
    train_s = time.perf_counter() - t0
    probes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192) if p <= nlist]
    for refine in (False, True):
        import faiss

        t0 = time.perf_counter()
        index = faiss.clone_index(trained)
        if refine:
            index = faiss.IndexRefineFlat(index)
        for s in range(0, n, 100_000):
            index.add(xb[s:s + 100_000])
        build_s = train_s + time.perf_counter() - t0
        if not refine:
            nprobe, _, curve = fx.tune(index, xq, truth, k, "nprobe", probes, target)
            note = "nprobe tuned: " + " ".join(f"{v}:{r:.3f}" for v, r in curve)
            params: dict[str, Any] = {"nprobe": nprobe}
        else:  # nprobe tuned with deep re-ranking, then the re-ranking depth cut back
            fx.set_search_params(index, {"k_factor_rf": K_FACTORS[-2]})
            nprobe, _, curve = fx.tune(index, xq, truth, k, "nprobe", probes, target)
            note = f"nprobe tuned (k_factor {K_FACTORS[-2]}): " + " ".join(f"{v}:{r:.3f}" for v, r in curve)
            kf, _, curve = fx.tune(index, xq, truth, k, "k_factor_rf", K_FACTORS, target)
            note += "; k_factor tuned: " + " ".join(f"{v}:{r:.3f}" for v, r in curve)
            params = {"nprobe": nprobe, "k_factor_rf": kf}
        rows.append(measure("IVF-PQ+refine" if refine else "IVF-PQ", factory + (",RFlat" if refine else ""),
                            index, build_s, xq, truth, k, latency_queries, params, note=note))
        del index
    del trained

    if with_autofaiss:
        row = _autofaiss_row(xb, xq, truth, k, latency_queries)
        if row is not None:
            rows.append(row)
    return rows


def _autofaiss_row(xb, xq, truth, k, latency_queries) -> BenchRow | None:
    try:
        from autofaiss import build_index as autofaiss_build
    except ImportError:
        logger.info("autofaiss is not installed (pip install autofaiss); skipping its row")
        return None
    t0 = time.perf_counter()
    budget_gb = fx.memory_budget() >> 30  # half of RAM for the index, three quarters to build it
    index, infos = autofaiss_build(embeddings=xb, save_on_disk=False, metric_type="ip", verbose=logging.WARNING,
                                   max_index_memory_usage=f"{budget_gb}G",
                                   current_memory_available=f"{budget_gb * 3 // 2}G")
    if index is None:
        logger.warning("autofaiss built no index (%s); skipping its row", infos)
        return None
    build_s = time.perf_counter() - t0
    factory = (infos or {}).get("index_key", type(index).__name__)
    params = (infos or {}).get("index_param", "")
    row = measure("autofaiss", factory, index, build_s, xq, truth, k, latency_queries,
                  note=f"autofaiss search params: {params}")
    return row


def format_table(rows: list[BenchRow], n: int, dim: int, nq: int, k: int) -> str:
    flat = next((r for r in rows if r.factory == "Flat"), rows[0])
    head = (f"{n} vectors x {dim} dims, {nq} queries, recall@{k} vs exact Flat\n"
            f"{'index':<14} {'factory':<22} {'params':<30} {'build s':>8} {'size MB':>8} {'p50 ms':>8} "
            f"{'p95 ms':>8} {'QPS':>9} {'QPS x':>7} {'p50 x':>7} {f'R@{k}':>6}")
    lines = [head, "-" * len(head.splitlines()[-1])]
    for r in rows:
        params = ",".join(f"{key}={v}" for key, v in r.params.items())
        lines.append(f"{r.name:<14} {r.factory[:22]:<22} {params[:30]:<30} {r.build_s:8.1f} "
                     f"{r.size_bytes / 1e6:8.1f} {r.p50_ms:8.3f} {r.p95_ms:8.3f} {r.qps:9.0f} "
                     f"{r.qps / flat.qps:7.1f} {flat.p50_ms / max(r.p50_ms, 1e-9):7.1f} {r.recall:6.3f}")
    notes = [f"  {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["notes:"] + notes if notes else []))
