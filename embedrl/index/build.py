"""Build an index: sharded, resumable, multi-process encoding, then one FAISS index + metadata store.

    build_index(embedder, corpus, out, reasoner=None, factory=None, ...)

1. The corpus is cut into shards of `shard_size` items (`embedrl.index.shards`). Under
   `accelerate launch` rank r encodes shards i with i % world_size == r; each finished shard
   is written atomically and skipped on a rerun, so a killed build resumes where it stopped.
2. With a reasoner, each item's target-role T-CoT comes from the shared T-CoT cache (or is
   generated once and cached) and is encoded with the item; a broken T-CoT leaves its item raw,
   and `build_report.json` counts those (`tcots`), with a warning when they pass a fifth.
3. An item whose image cannot be read is skipped, counted and listed in `build_report.json`.
4. Rank 0 then trains the FAISS index on a sample (IVF/PQ), adds the shards one by one,
   writes `index.faiss` and `store.sqlite`, then `build_report.json`, and `manifest.json`
   LAST: a directory without a manifest is an unfinished build, never an index.

The shards are kept: rerunning with another `factory` re-indexes without encoding again. Such a
rebuild (or an `--overwrite` one) writes its index and store beside the old ones under new names
and switches to them by replacing the manifest, so until it completes the old index stays whole
and loadable. `build_from_vectors` does the same from precomputed embeddings; appending is
`embedrl.index.add`, whose items a rebuild keeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import ensure_dir, read_json, write_json
from embedrl.core.items import Item
from embedrl.core.tcot import merge_usage, warn_broken
from embedrl.core.tcot_cache import ReasonerLike, TCoTCache, reasoner_key
from embedrl.data.corpus import Corpus, read_corpus
from embedrl.index import faiss_index as fx
from embedrl.index import sharded
from embedrl.index.shards import (
    SHARDS_DIR,
    EncodedShard,
    ShardEncoder,
    added_shards,
    encode_shards,
    make_item_encoder,
    num_shards,
    read_added,
    read_shard,
    remove_added,
    shard_done,
)
from embedrl.index.store import ItemStore

if TYPE_CHECKING:
    from embedrl.index.ray_engine import RayEngine
    from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SHARD_SIZE = 1024
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
STORE_FILE = "store.sqlite"
REPORT_FILE = "build_report.json"
PLAN_FILE = "plan.json"
METRIC = "inner_product"


# ---------------------------------------------------------------- plan, manifest, state

def process_state():
    """accelerate's process state: one process unless started by a launcher (accelerate, torchrun).

    Without a GPU (or under `accelerate launch --cpu`) the processes talk over gloo on CPU;
    accelerate only does that when told `cpu=True`, otherwise each rank would think it is
    alone. Note that `accelerate launch --cpu --num_processes N` starts a single process
    (multi-CPU launching goes through mpirun there); on a CPU machine use
    `accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`.
    """
    import torch
    from accelerate import PartialState

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


class _SingleProcess:
    num_processes, process_index, is_main_process = 1, 0, True

    def wait_for_everyone(self) -> None:
        pass


def versions() -> dict[str, str]:
    import embedrl

    out = {"embedrl": embedrl.__version__, "faiss": fx._faiss().__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    with contextlib.suppress(ImportError):
        import torch

        out["torch"] = torch.__version__
    return out


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_manifest(index_dir: str | os.PathLike) -> dict[str, Any]:
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise EmbedrlError(f"index directory not found: {index_dir}")
    if not (index_dir / MANIFEST).is_file():
        hint = (" (its build did not finish: rerun `embedrl index build` with the same arguments to resume)"
                if (index_dir / SHARDS_DIR).is_dir() else "")
        raise EmbedrlError(f"{index_dir} is not a complete index: no {MANIFEST}{hint}")
    manifest = read_json(index_dir / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise EmbedrlError(f"{index_dir / MANIFEST}: not an embedrl index manifest (format {FORMAT_VERSION})")
    return manifest


def _digest(plan: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def _prepare(out: Path, plan: dict[str, Any], factory: str | None, overwrite: bool, state,
             index_shards: int = 1) -> dict | None:
    """Check/record the build plan; returns the existing manifest when there is nothing to do.

    Every rank checks the plan on disk (so all fail together); rank 0 cleans up and writes it.
    The manifest of an earlier build stays until a new one replaces it.
    """
    plan_path = out / SHARDS_DIR / PLAN_FILE
    old = read_json(plan_path) if plan_path.is_file() else None
    if old is not None and old != plan and not overwrite:
        changed = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
        raise EmbedrlError(f"{out} holds a build of another corpus or model (differs in: "
                           f"{', '.join(changed)}); choose another --out or pass --overwrite")
    manifest = read_json(out / MANIFEST) if (out / MANIFEST).is_file() else None
    if state.is_main_process:
        shards = ensure_dir(out / SHARDS_DIR)
        for tmp in list(shards.glob(".*.tmp")) + list(out.glob(".*.tmp")) + list(out.glob("*.tmp-*")):
            tmp.unlink(missing_ok=True)  # left by a killed run
        if old is not None and old != plan:
            logger.info("--overwrite: replacing the previous build in %s (it stays usable until the new one is "
                        "complete)", out)
            for p in shards.glob("shard_*"):
                p.unlink()
            remove_added(out)
        write_json(plan_path, plan)
    state.wait_for_everyone()
    if manifest is None:
        return None
    # manifests written before plans were recorded in them: the plan on disk was theirs
    if manifest.get("plan", old is not None and _digest(old)) != _digest(plan):
        return None
    if factory is not None and factory != manifest.get("factory"):
        logger.info("re-indexing the kept shards as %s (the current index stays until the new one is complete)",
                    factory)
        return None
    if index_shards != len(manifest.get("index_shards") or [None]):
        logger.info("re-indexing the kept shards in %d index shard(s) (the current index stays until the new one "
                    "is complete)", index_shards)
        return None
    return manifest


def _corpus_digest(corpus: Corpus) -> str:
    h = hashlib.sha1()
    for item, fields in zip(corpus.items, corpus.fields):
        h.update(json.dumps([item.to_dict(), fields], sort_keys=True, default=str).encode())
    return h.hexdigest()


def _sample_rows(total: int, size: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))


def merge_shards(out: str | os.PathLike, n: int, shard_size: int, dim: int, item_of: Callable[[int], dict],
                 fields_of: Callable[[int], dict], factory: str | None = None, gpu: bool = False,
                 max_bytes: int | None = None, added_until: int = 0, stamp: str | None = None,
                 index_shards: int = 1) -> dict[str, Any]:
    """Train/fill the FAISS index from all shards (and the rows `add` appended before row `added_until`),
    write index + store + report; returns the manifest's index part.

    `stamp`: write the files under new names (`index.STAMP.faiss`, ...), beside an index being replaced.
    `index_shards` > 1: the index is written in that many parts trained once (`embedrl.index.sharded`).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    count_shards = num_shards(n, shard_size)
    missing = [i for i in range(count_shards) if not shard_done(out, i)]
    if missing:
        raise EmbedrlError(f"{len(missing)} shard(s) missing in {out / SHARDS_DIR} (first: {missing[0]}); "
                           "rerun the build to encode them")
    metas = [read_shard(out, i)[0] for i in range(count_shards)]
    added = [read_added(path) for start, path in added_shards(out) if start < added_until]
    sizes = [len(m["rows"]) for m in metas] + [len(a["items"]) for a, _ in added]
    total = sum(sizes)
    skipped = [s for m in metas for s in m["skipped"]] + [s for a, _ in added for s in a["skipped"]]
    report = {"count": total, "corpus_size": n, "skipped_count": len(skipped), "skipped": skipped,
              "shards": count_shards, "shard_size": shard_size}
    if total == 0:
        write_json(out / REPORT_FILE, {**report, "finished": now()})
        raise EmbedrlError(f"no item of the corpus could be encoded (see {out / REPORT_FILE})")

    def vectors(i: int) -> np.ndarray:
        return np.asarray(read_shard(out, i)[1] if i < count_shards else added[i - count_shards][1])

    reason = "given with --factory"
    if factory is None:
        factory, reason = fx.choose_factory(total, dim, max_bytes)
    logger.info("index type %s: %s", factory, reason)
    index = fx.new_index(factory, dim)
    train = None
    size = fx.train_size(index, total)
    if size:
        wanted = _sample_rows(total, size)
        offsets = np.cumsum([0] + sizes)
        parts = []
        for i in range(len(sizes)):
            local = wanted[(wanted >= offsets[i]) & (wanted < offsets[i + 1])] - offsets[i]
            if len(local):
                parts.append(vectors(i)[local])
        train = np.concatenate(parts)
    t0 = time.perf_counter()
    def rows_of(i: int) -> tuple[list[dict], list, list[dict]]:
        if i < count_shards:
            meta = metas[i]
            return [item_of(p) for p in meta["rows"]], meta["tcots"], [fields_of(p) for p in meta["rows"]]
        meta = added[i - count_shards][0]
        return meta["items"], meta["tcots"], meta["fields"]

    suffix = f".{stamp}" if stamp else ""
    if index_shards > 1:
        trained = fx.build(factory, dim, train, (), gpu=gpu)
        params = fx.default_search_params(trained)
        files: dict[str, Any] = {"index_shards": sharded.write_parts(
            out, trained, sharded.group_shards(sizes, index_shards), vectors, rows_of, gpu,
            folder=sharded.PARTS_DIR + suffix)}
        index_seconds = time.perf_counter() - t0
    else:
        chunks = (vectors(i) for i in tqdm(range(len(sizes)), desc="indexing", unit="shard", disable=None))
        index = fx.build(factory, dim, train, chunks, gpu=gpu)
        index_seconds = time.perf_counter() - t0
        params = fx.default_search_params(index)
        files = {"index_file": f"index{suffix}.faiss", "store_file": f"store{suffix}.sqlite"}
        fx.write_index(index, out / files["index_file"])
        tmp_store = out / f".{files['store_file']}.tmp-{os.getpid()}"
        tmp_store.unlink(missing_ok=True)
        with ItemStore(tmp_store) as store:
            row = 0
            for i in range(len(sizes)):
                items, tcots, fields = rows_of(i)
                store.put_many(row, items, tcots, fields)
                row += len(items)
        os.replace(tmp_store, out / files["store_file"])

    stats = [m.get("stats", {}) for m in metas] + [a.get("stats", {}) for a, _ in added]
    report.update({
        "factory": factory, "factory_reason": reason,
        "encode_seconds": round(sum(s.get("seconds", 0) for s in stats), 2),
        "index_seconds": round(index_seconds, 2),
        "tcot_cache": {"hits": sum(s.get("tcot_hits", 0) for s in stats),
                       "misses": sum(s.get("tcot_misses", 0) for s in stats)},
        "finished": now(),
    })
    if any("tcots" in s for s in stats):
        report["tcots"] = merge_usage(s["tcots"] for s in stats if "tcots" in s)
        warn_broken(report["tcots"], f"corpus T-CoTs (see {out / REPORT_FILE})")
    write_json(out / REPORT_FILE, report)
    if skipped:
        logger.warning("%d item(s) skipped, listed in %s", len(skipped), out / REPORT_FILE)
    return {"dim": dim, "metric": METRIC, "normalized": True, "factory": factory, "factory_reason": reason,
            "search_params": params, "count": total, "skipped": len(skipped), **files}


def embedder_info(embedder: Embedder) -> dict[str, Any]:
    return {"id": str(embedder.name_or_path), "backend": embedder.backend, "fingerprint": embedder.fingerprint(),
            "dim": int(embedder.dim), "format": embedder.embedrl_config().get("format")}


def reasoner_info(reasoner: ReasonerLike | None) -> dict[str, str] | None:
    if reasoner is None:
        return None
    rid, rhash, version = reasoner_key(reasoner)
    info = {"id": rid, "hash": rhash, "prompt_version": version}
    if getattr(reasoner, "modalities", None) is not None:
        info["modalities"] = list(reasoner.modalities)
    if getattr(reasoner, "prompt_set", None) is not None:
        info["prompt_set"] = reasoner.prompt_set.name
    return info


def _run(out: Path, n: int, plan: dict[str, Any], encode: ShardEncoder, dim: int, manifest_head: dict[str, Any],
         item_of: Callable[[int], dict], fields_of: Callable[[int], dict], factory: str | None, shard_size: int,
         gpu: bool, overwrite: bool, max_bytes: int | None, state, index_shards: int = 1,
         encode_all: Callable[[], dict[str, int]] | None = None) -> dict[str, Any]:
    if shard_size < 1:
        raise EmbedrlError("shard size must be at least 1")
    if gpu:
        fx.require_gpu()
    if factory is not None:
        fx.new_index(factory, dim)  # a bad factory string fails now, not after hours of encoding
    done = _prepare(out, plan, factory, overwrite, state, index_shards)
    if done is not None:
        logger.info("%s is already a complete index (%d vectors); nothing to do", out, done.get("count", 0))
        return done
    counts = encode_all() if encode_all else encode_shards(out, n, shard_size, encode, state.process_index,
                                                           state.num_processes)
    logger.info("rank %d: encoded %d shard(s), reused %d", state.process_index, counts["encoded"], counts["reused"])
    state.wait_for_everyone()
    if state.is_main_process:
        previous = read_json(out / MANIFEST) if (out / MANIFEST).is_file() else None
        same_plan = previous is not None and previous.get("plan", _digest(plan)) == _digest(plan)
        # a rebuild keeps what `add` appended to the same build, and writes beside the index it replaces
        added_until = int(previous["count"]) if same_plan else 0
        stamp = None if previous is None else uuid.uuid4().hex[:8]
        part = merge_shards(out, n, shard_size, dim, item_of, fields_of, factory, gpu, max_bytes, added_until,
                            stamp, index_shards)
        manifest = {"format": FORMAT_VERSION, **manifest_head, **part, "plan": _digest(plan), "versions": versions(),
                    "created": now()}
        write_json(out / MANIFEST, manifest)  # LAST: from here on the directory is this index
        remove_added(out, added_until)  # appended by an add that never finished
        remove_unused(out, manifest)
        logger.info("index ready: %s (%d vectors, %s)", out, part["count"], part["factory"])
    state.wait_for_everyone()
    return load_manifest(out)


def remove_unused(out: Path, manifest: dict[str, Any]) -> None:
    """Index and store files (and index-shard folders) the manifest no longer names: the index a rebuild or an
    add replaced."""
    keep = {manifest.get("index_file"), manifest.get("store_file")}
    keep_parts = {Path(p["index"]).parent.name for p in manifest.get("index_shards") or []}
    for path in [*out.glob("index*.faiss"), *out.glob("store*.sqlite")]:
        if path.name not in keep:
            for stale in (path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm"))):
                stale.unlink(missing_ok=True)
    for folder in out.glob(f"{sharded.PARTS_DIR}*"):
        if folder.is_dir() and folder.name not in keep_parts:
            shutil.rmtree(folder, ignore_errors=True)


def build_index(embedder: Embedder, corpus: Corpus | str | os.PathLike, out: str | os.PathLike,
                reasoner: ReasonerLike | None = None, factory: str | None = None,
                shard_size: int = SHARD_SIZE, gpu: bool = False, cache: TCoTCache | str | os.PathLike | None = None,
                batch_size: int = 32, overwrite: bool = False, max_bytes: int | None = None,
                distributed: bool = True, index_shards: int = 1, engine: RayEngine | None = None) -> dict[str, Any]:
    """Build (or resume building) an index of `corpus` in `out`; returns the manifest.

    `corpus`: a `Corpus` or a spec for `read_corpus`. `factory`: a FAISS factory string, or
    None to choose from size and dimension. `cache`: the T-CoT cache (path or object;
    default: the shared one). `distributed`: use accelerate's process state, so under
    `accelerate launch` the ranks share the work. `index_shards`: write the FAISS index in
    that many parts (`embedrl.index.sharded`). `engine`: encode the shards on a Ray cluster
    (`embedrl.index.ray_engine.RayEngine`) instead of in this process.
    """
    if not isinstance(corpus, Corpus):
        corpus = read_corpus(corpus)
    out = Path(out)
    state = process_state() if distributed and engine is None else _SingleProcess()
    if reasoner is not None and not isinstance(cache, TCoTCache):
        cache = TCoTCache(cache)
    info = embedder_info(embedder)
    plan = {"format": FORMAT_VERSION, "count": len(corpus), "shard_size": shard_size,
            "corpus": _corpus_digest(corpus), "embedder": info["fingerprint"], "dim": info["dim"],
            "reasoner": reasoner_info(reasoner)}
    head = {"embedder": info, "reasoner": reasoner_info(reasoner), "corpus": corpus.describe()}
    encode = make_item_encoder(embedder, corpus, reasoner, cache, batch_size)  # type: ignore[arg-type]
    encode_all = None if engine is None else (
        lambda: engine.encode_shards(out, corpus, shard_size, embedder, reasoner, cache, batch_size))
    return _run(out, len(corpus), plan, encode, info["dim"], head,
                lambda p: corpus.items[p].to_dict(), lambda p: corpus.fields[p], factory, shard_size,
                gpu, overwrite, max_bytes, state, index_shards, encode_all)


def build_from_vectors(vectors: np.ndarray, out: str | os.PathLike, items: Sequence[Item] | None = None,
                       fields: Sequence[dict] | None = None, factory: str | None = None,
                       shard_size: int = SHARD_SIZE * 16, gpu: bool = False, overwrite: bool = False, max_bytes: int | None = None,
                       embedder: dict[str, Any] | None = None, index_shards: int = 1) -> dict[str, Any]:
    """Index precomputed embeddings (rows of `vectors`), resumable like `build_index`.

    `items`/`fields` describe the rows for the store (default: ids "0", "1", ...);
    `embedder` is what the manifest records about the model that made them.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors):
        raise EmbedrlError(f"expected a non-empty (N, dim) array, got shape {vectors.shape}")
    corpus = Corpus(list(items) if items is not None else [Item(id=str(i)) for i in range(len(vectors))],
                    list(fields) if fields is not None else [])
    if len(corpus) != len(vectors):
        raise EmbedrlError(f"{len(corpus)} items for {len(vectors)} vectors")
    dim = vectors.shape[1]
    info = {"id": None, "backend": "precomputed", "fingerprint": None, "dim": dim, **(embedder or {})}
    plan = {"format": FORMAT_VERSION, "count": len(vectors), "shard_size": shard_size,
            "corpus": _corpus_digest(corpus), "vectors": hashlib.sha1(vectors.tobytes()).hexdigest(),
            "embedder": info.get("fingerprint"), "dim": dim, "reasoner": None}

    def encode(start: int, stop: int) -> EncodedShard:
        return EncodedShard(fx.normalize(vectors[start:stop]), list(range(start, stop)), [None] * (stop - start))

    return _run(Path(out), len(vectors), plan, encode, dim, {"embedder": info, "reasoner": None,
                "corpus": {"source": "vectors", "kind": "vectors", "count": len(vectors)}},
                lambda p: corpus.items[p].to_dict(), lambda p: corpus.fields[p], factory, shard_size,
                gpu, overwrite, max_bytes, _SingleProcess(), index_shards)


def check_embedder(manifest: dict[str, Any], embedder: Embedder, index_dir: str | os.PathLike,
                   fingerprint: str | None = None) -> None:
    """Refuse an embedder whose weights hash, dimension or embedding format differ from the index's.

    `fingerprint`: the embedder's, when already computed (a server checks each index it reloads)."""
    want = manifest.get("embedder") or {}
    fingerprint, dim = fingerprint or embedder.fingerprint(), int(embedder.dim)
    if want.get("fingerprint") not in (None, fingerprint) or int(manifest.get("dim", dim)) != dim:
        raise EmbedrlError(
            f"model {embedder.name_or_path} (hash {fingerprint}, dim {dim}) does not match the index "
            f"{index_dir}, built with {want.get('id')} (hash {want.get('fingerprint')}, dim {manifest.get('dim')}); "
            "use that model or rebuild the index")
    fmt = embedder.embedrl_config().get("format")
    if want.get("format") not in (None, fmt):  # same weights, another input layout: other vectors
        raise EmbedrlError(f"the index {index_dir} was built in the {want['format']} embedding format, not {fmt}; "
                           f"load the model with --format {want['format']} or rebuild the index")

