"""FAISS helpers over numpy arrays: choose a factory string, build, train, tune, measure recall.

Free functions, no embedder involved: the index build, `Retriever` and `embedrl bench index`
share them. Metric is always inner product on L2-normalised vectors (cosine similarity),
so scores equal the ones the evaluation harness computes.

How `choose_factory` decides (after FAISS's own "Guidelines to choose an index"):
  1. small corpus (n*d up to ~4e7, i.e. ~50k vectors at d=768): `Flat` — exact, no training,
     and brute force costs only milliseconds a query;
  2. HNSW32 fits in the memory budget (n*(4d + 2*32*4) bytes; default half of RAM): `HNSW32`
     — the best speed/accuracy trade-off when memory is not the constraint;
  3. otherwise compress: OPQ + IVF + PQ with M = min(64, d/4) bytes a vector and K inverted
     lists by size: K ~ 8*sqrt(n) (between the guideline's 4 and 16 sqrt(n)) under 1M,
     `IVF65536_HNSW32` up to 10M, `IVF262144_HNSW32` up to 100M, `IVF1048576_HNSW32` beyond.
IVF/PQ are trained on a sample of ~50 vectors per list (the guideline asks for 30 to 256).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import atomic_write

logger = logging.getLogger(__name__)

FLAT_MAX_CELLS = 4e7  # n * d up to which exact search is the default
HNSW_M = 32
DEFAULT_EF_SEARCH = 128
TRAIN_PER_LIST = 50
MIN_TRAIN = 10_000  # PQ: 256 centroids per sub-quantizer want ~39 points each


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise EmbedrlError("faiss is not installed: pip install faiss-cpu (or faiss-gpu-cu12)") from e
    return faiss


def memory_budget() -> int:
    """Default memory budget for an index: half of this machine's RAM."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def hnsw_bytes(n: int, dim: int, m: int = HNSW_M) -> int:
    return n * (dim * 4 + m * 2 * 4)


def choose_factory(n: int, dim: int, max_bytes: int | None = None) -> tuple[str, str]:
    """(factory string, reason) for `n` vectors of dimension `dim`; see the module docstring."""
    max_bytes = memory_budget() if max_bytes is None else max_bytes
    if n * dim <= FLAT_MAX_CELLS:
        return "Flat", (f"{n} vectors x {dim} dims is small: exact search (Flat) costs milliseconds "
                        "a query and needs no training")
    need = hnsw_bytes(n, dim)
    if need <= max_bytes:
        return f"HNSW{HNSW_M}", (f"HNSW{HNSW_M} needs ~{need / 2**30:.1f} GiB, within the "
                                 f"{max_bytes / 2**30:.1f} GiB budget: fast and accurate when memory allows")
    m = max(4, min(64, dim // 4))
    if n < 1_000_000:
        k = 2 ** round(math.log2(8 * math.sqrt(n)))
        ivf = f"IVF{k}"
    elif n < 10_000_000:
        ivf = "IVF65536_HNSW32"
    elif n < 100_000_000:
        ivf = "IVF262144_HNSW32"
    else:
        ivf = "IVF1048576_HNSW32"
    factory = f"OPQ{m}_{4 * m},{ivf},PQ{m}"
    return factory, (f"HNSW{HNSW_M} would need ~{need / 2**30:.1f} GiB, over the {max_bytes / 2**30:.1f} GiB "
                     f"budget: compressed to {m} bytes a vector with OPQ+PQ, {ivf} for {n} vectors")


def new_index(factory: str, dim: int):
    faiss = _faiss()
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise EmbedrlError(f"invalid FAISS factory string {factory!r} for dim {dim}: "
                           f"{str(e).strip().splitlines()[-1]}") from e
    # The factory turns on polysemous training for PQ codes; it only serves Hamming-filtered
    # search (polysemous_ht), which we never use, and makes training several times slower.
    for sub in _sub_indexes(index):
        if hasattr(sub, "do_polysemous_training"):
            sub.do_polysemous_training = False
    return index


def _sub_indexes(index) -> list:
    """The index and the indexes it wraps (pre-transform, refine, IVF), downcast."""
    faiss = _faiss()
    out, todo = [], [index]
    while todo:
        ix = faiss.downcast_index(todo.pop())
        out.append(ix)
        for attr in ("index", "base_index"):
            inner = getattr(ix, attr, None)
            if inner is not None and not isinstance(inner, (int, float)):
                todo.append(inner)
    return out


def nlist_of(index) -> int | None:
    """Number of inverted lists of an IVF index (through any pre-transform), else None."""
    faiss = _faiss()
    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except (RuntimeError, AttributeError):
        return None


def train_size(index, n: int) -> int:
    """How many vectors to train `index` on (0 when it needs no training)."""
    if index.is_trained:
        return 0
    nlist = nlist_of(index) or 0
    want = max(TRAIN_PER_LIST * nlist, MIN_TRAIN)
    if nlist and n < nlist:
        raise EmbedrlError(f"an index with {nlist} inverted lists needs at least {nlist} vectors to "
                           f"train; the corpus has {n}. Pick a smaller IVF or leave --factory out")
    if nlist and n < 30 * nlist:
        logger.warning("only %d vectors for %d inverted lists (FAISS advises 30-256 a list); "
                       "recall may suffer", n, nlist)
    return min(n, want)


def default_search_params(index) -> dict[str, int]:
    """Search-time parameters recorded in the manifest (override per search)."""
    params: dict[str, int] = {}
    nlist = nlist_of(index)
    if nlist:
        params["nprobe"] = min(nlist, max(16, nlist // 32))
        faiss = _faiss()
        ivf = faiss.extract_index_ivf(index)
        if isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
            params["quantizer_efSearch"] = max(DEFAULT_EF_SEARCH, 2 * params["nprobe"])
    elif "HNSW" in type(_faiss().downcast_index(index)).__name__:
        params["efSearch"] = DEFAULT_EF_SEARCH
    return params


def set_search_params(index, params: dict[str, Any] | None) -> None:
    if not params:
        return
    faiss = _faiss()
    text = ",".join(f"{k}={v}" for k, v in params.items())
    try:
        faiss.ParameterSpace().set_index_parameters(index, text)
    except RuntimeError as e:
        raise EmbedrlError(f"cannot set search parameters {text!r} on this index: "
                           f"{str(e).strip().splitlines()[-1]}") from e


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def require_gpu() -> None:
    if not gpu_available():
        raise EmbedrlError("--gpu needs faiss-gpu and a visible CUDA device; this faiss has "
                           f"{'no GPU support' if not hasattr(_faiss(), 'StandardGpuResources') else 'no GPU'} "
                           "(pip install 'embedrl[gpu]' on a CUDA machine, or drop --gpu)")


def to_gpu(index):
    """A GPU copy of `index` on all GPUs, or the index itself for types FAISS cannot move (HNSW)."""
    faiss = _faiss()
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError as e:
        logger.warning("this index type stays on CPU (%s)", str(e).strip().splitlines()[-1])
        return index


def to_cpu(index):
    faiss = _faiss()
    name = type(index).__name__
    if "Gpu" in name or name.startswith(("IndexShards", "IndexReplicas")):
        return faiss.index_gpu_to_cpu(index)
    return index


def build(factory: str, dim: int, train: np.ndarray | None, chunks: Iterable[np.ndarray],
          gpu: bool = False):
    """Create, train (on `train` when the index needs it) and fill an index chunk by chunk; returns a CPU index."""
    index = new_index(factory, dim)
    if gpu:
        require_gpu()
        index = to_gpu(index)
    if not index.is_trained:
        if train is None or not len(train):
            raise EmbedrlError(f"index {factory!r} needs training vectors")
        t0 = time.perf_counter()
        index.train(normalize(train))
        logger.info("trained %s on %d vectors in %.1fs", factory, len(train), time.perf_counter() - t0)
    for chunk in chunks:
        index.add(normalize(chunk))
    return to_cpu(index) if gpu else index


def write_index(index, path: str | os.PathLike) -> None:
    """Write atomically (a temp file beside `path`, then one rename), through Python's file objects, so a full
    disk is an error naming the file (FAISS's own writer can report a failed close on stderr and go on)."""
    faiss = _faiss()
    with atomic_write(path, "wb") as f:
        writer = faiss.PyCallbackIOWriter(f.write)
        faiss.write_index(index, writer)
        del writer  # flushes its buffer into f


def read_index(path: str | os.PathLike, flags: int = 0):
    """`flags`: FAISS IO flags, e.g. IO_FLAG_MMAP_IFC to memory-map flat codes."""
    faiss = _faiss()
    if not os.path.isfile(path):
        raise EmbedrlError(f"index file missing: {path}; rebuild with `embedrl index build`")
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as e:
        raise EmbedrlError(f"index file {path} is corrupt or unreadable "
                           f"({str(e).strip().splitlines()[-1][:200]}); rebuild with `embedrl index build`") from e


def exact_knn(xb: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product k-NN (ground truth)."""
    faiss = _faiss()
    return faiss.knn(np.ascontiguousarray(xq, dtype=np.float32), np.ascontiguousarray(xb, dtype=np.float32),
                     k, metric=faiss.METRIC_INNER_PRODUCT)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """k-recall@k: the mean share of the true top-k that the approximate top-k contains."""
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hits / (k * len(truth))


def tune(index, xq: np.ndarray, truth: np.ndarray, k: int, param: str, values: Iterable[int],
         target: float = 0.95) -> tuple[int, float, list[tuple[int, float]]]:
    """Smallest value of `param` reaching `target` recall@k (else the best tried), and the curve."""
    curve = []
    for value in values:
        set_search_params(index, {param: value})
        _, found = index.search(xq, k)
        curve.append((value, recall_at_k(found, truth, k)))
        if curve[-1][1] >= target:
            return value, curve[-1][1], curve
    best = max(curve, key=lambda c: c[1])
    set_search_params(index, {param: best[0]})
    return best[0], best[1], curve
