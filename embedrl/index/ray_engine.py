"""Encode a corpus into index shards on a Ray cluster: `embedrl index build --engine ray`.

The unit of work is the shard of `embedrl.index.shards`. The corpus is listed on the driver
by `read_corpus` (every kind the local path reads: JSONL, image and frame folders, the
published evaluation layouts; listing opens no media) and becomes a Ray dataset with one row
per unfinished shard: its number, its position range and its items. `map_batches` runs it
through a pool of actors (`ShardWorker`): each loads the embedder, and the reasoner when
there is one, once; per call it encodes one shard with the local path's `make_item_encoder`
(T-CoTs from the shared cache or generated, media, embedder) and writes it in the local
path's format. So `--engine ray` and `--engine local` write the same shards, and either
resumes the other's build. The driver then merges the shards into the index as usual.

Fault tolerance is Ray Data's: an actor that dies is restarted and its shard retried. A
shard is written atomically, vectors then the metadata that marks it complete, under its own
number, so a retried shard is written once; a rerun skips finished shards.

On a multi-node cluster every node needs embedrl installed, and the same paths for `--out`,
the media and the model directories (shared storage); the T-CoT cache path is opened by each
node (a node-local cache regenerates what it misses; greedy T-CoTs are the same anywhere).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot_cache import ReasonerLike, TCoTCache, reasoner_key
from embedrl.data.corpus import Corpus
from embedrl.index.shards import (
    EncodedShard,
    make_item_encoder,
    num_shards,
    shard_done,
    write_shard,
)

if TYPE_CHECKING:
    from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)

def _portable(item: Item) -> dict[str, Any]:
    """The item as JSON with absolute media paths (workers do not share the driver's working directory)."""
    row = item.to_dict()
    if "image" in row:
        row["image"] = os.path.abspath(row["image"])
    if "frames" in row:
        row["frames"] = [os.path.abspath(f) for f in row["frames"]]
    return row


def _model_spec(name_or_path: str) -> str:
    """A spec another process can load: local directories absolute, ids as they are."""
    return str(Path(name_or_path).resolve()) if Path(name_or_path).is_dir() else str(name_or_path)


def _at(shard: EncodedShard, start: int) -> EncodedShard:
    """A shard encoded from its own items (positions 0..) moved to corpus positions from `start`."""
    return replace(shard, rows=[start + r for r in shard.rows],
                   skipped=[{**s, "pos": start + s["pos"]} for s in shard.skipped])


class ShardWorker:
    """A Ray Data actor: loads the models once, then encodes and writes one shard per row."""

    def __init__(self, out: str, embedder: str, fingerprint: str, batch_size: int, reasoner: str | None = None,
                 key: list[str] | None = None, reasoner_kwargs: dict[str, Any] | None = None,
                 cache: str | None = None, format: str | None = None):
        from embedrl.models.base import load_embedder

        self.out, self.batch_size = out, batch_size
        self.embedder = load_embedder(embedder, format=format)
        if self.embedder.fingerprint() != fingerprint:
            raise EmbedrlError(f"embedder {embedder} on this worker (hash {self.embedder.fingerprint()}) is not the "
                               f"driver's (hash {fingerprint}); give every node the same model files")
        self.reasoner, self.cache = None, None
        if reasoner is not None:
            from embedrl.models.reasoner import load_reasoner

            self.reasoner = load_reasoner(reasoner, **(reasoner_kwargs or {}))
            if list(reasoner_key(self.reasoner)) != list(key or []):
                raise EmbedrlError(f"reasoner {reasoner} on this worker ({reasoner_key(self.reasoner)}) is not the "
                                   f"driver's ({key}); give every node the same model files")
            self.cache = TCoTCache(cache)
        import ray

        self.worker = f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done, seconds = [], []
        for shard, start, stop, items in zip(batch["shard"], batch["start"], batch["stop"], batch["items"]):
            shard, start, stop = int(shard), int(start), int(stop)
            t0 = time.perf_counter()
            if shard_done(self.out, shard):  # a retried row whose shard was written before the worker died
                done.append(False)
            else:
                corpus = Corpus([Item.from_dict(row) for row in json.loads(items)])
                encoded = make_item_encoder(self.embedder, corpus, self.reasoner, self.cache, self.batch_size)(
                    0, len(corpus))
                encoded = _at(encoded, start)
                encoded.stats.update(seconds=round(time.perf_counter() - t0, 3), worker=self.worker)
                write_shard(self.out, shard, encoded, start, stop)
                done.append(True)
            seconds.append(time.perf_counter() - t0)
        return {"shard": batch["shard"], "encoded": np.array(done), "seconds": np.array(seconds)}


@dataclass
class RayEngine:
    """Where and how wide the encoding runs.

    `address`: a Ray cluster to join ("auto", "HOST:6379", "ray://HOST:10001"); None joins
    $RAY_ADDRESS or starts a local cluster (shut down again at the end). `workers`: actors in
    the pool (default: as many as the cluster's CPUs, or GPUs, allow). `cpus_per_worker`,
    `gpus_per_worker`: each actor's share (a GPU actor loads its models on the GPU).
    `reasoner_backend`: how actors generate T-CoTs, "hf" (transformers) or "vllm" (GPU).
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    reasoner_backend: str = "hf"
    last_run: dict[str, Any] = field(default_factory=dict, init=False)  # counts of the last `encode_shards`

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise EmbedrlError("--workers must be at least 1")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise EmbedrlError("--cpus-per-worker must be positive and --gpus-per-worker not negative")
        from embedrl.models.reasoner import BACKENDS

        if self.reasoner_backend not in BACKENDS:
            raise EmbedrlError(f"reasoner backend must be one of {', '.join(BACKENDS)}, not {self.reasoner_backend!r}")

    def connect(self) -> bool:
        """Join or start the cluster; True when this call started it (the caller then shuts it down)."""
        try:
            import ray
        except ImportError as e:
            raise EmbedrlError("--engine ray needs Ray Data: pip install 'embedrl[ray]'") from e
        if ray.is_initialized():
            return False
        local = self.address is None and not os.environ.get("RAY_ADDRESS")
        try:
            ray.init(address=self.address, logging_level=logging.WARNING,
                     **({"include_dashboard": False} if local else {}))
        except ConnectionError as e:
            raise EmbedrlError(f"cannot join the Ray cluster at {self.address or os.environ['RAY_ADDRESS']}: "
                               f"{e} (start it with `ray start --head`, or leave --address out for a local one)") from e
        return True

    def pool_size(self, shards: int) -> int:
        import ray

        resources = ray.cluster_resources()
        fit = (resources.get("GPU", 0) / self.gpus_per_worker if self.gpus_per_worker
               else resources.get("CPU", 1) / self.cpus_per_worker)
        if fit < 1:  # no actor could ever start: Ray would wait for ever
            raise EmbedrlError(f"the Ray cluster has {resources.get('CPU', 0):g} CPU(s) and {resources.get('GPU', 0):g} "
                               f"GPU(s): not enough for one worker of {self.cpus_per_worker:g} CPU(s) and "
                               f"{self.gpus_per_worker:g} GPU(s); lower --cpus-per-worker / --gpus-per-worker")
        if self.workers is not None and self.workers > fit:
            logger.warning("%d workers asked, the cluster fits %d now (%s); the rest wait for resources",
                           self.workers, int(fit), {k: resources.get(k) for k in ("CPU", "GPU")})
        return max(1, min(self.workers or int(fit), shards))

    def encode_shards(self, out: str | os.PathLike, corpus: Corpus, shard_size: int, embedder: Embedder,
                      reasoner: ReasonerLike | None = None, cache: TCoTCache | None = None,
                      batch_size: int = 32) -> dict[str, Any]:
        """Encode the unfinished shards of `corpus` into `out` on the cluster; returns counts (as `encode_shards`)."""
        from tqdm.auto import tqdm

        n = len(corpus)
        todo = [i for i in range(num_shards(n, shard_size)) if not shard_done(out, i)]
        counts: dict[str, Any] = {"encoded": 0, "reused": num_shards(n, shard_size) - len(todo)}
        self.last_run = counts
        if counts["reused"]:
            logger.info("%d of %d shard(s) already done, resuming", counts["reused"], num_shards(n, shard_size))
        if not todo:
            return counts
        started = self.connect()
        import ray
        import ray.data

        try:
            ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts shards
            workers = self.pool_size(len(todo))
            rows = [{"shard": i, "start": i * shard_size, "stop": min(n, (i + 1) * shard_size),
                     "items": json.dumps([_portable(it) for it in corpus.items[i * shard_size:(i + 1) * shard_size]])}
                    for i in todo]
            init = {"out": str(Path(out).resolve()), "embedder": _model_spec(str(embedder.name_or_path)),
                    "fingerprint": embedder.fingerprint(), "batch_size": batch_size,
                    "format": embedder.embedrl_config().get("format")}
            if reasoner is not None:
                init.update(reasoner=_model_spec(str(getattr(reasoner, "name_or_path", ""))),
                            key=list(reasoner_key(reasoner)), cache=str(cache.path) if cache is not None else None,
                            reasoner_kwargs={"backend": self.reasoner_backend,
                                             "modalities": getattr(reasoner, "modalities", None),
                                             "prompt_set": getattr(getattr(reasoner, "prompt_set", None), "name", None),
                                             **{k: getattr(reasoner, k) for k in ("max_new_tokens", "batch_size")
                                                if hasattr(reasoner, k)}})
            results = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                ShardWorker, fn_constructor_kwargs=init, batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=self.cpus_per_worker,
                num_gpus=self.gpus_per_worker or None)
            logger.info("encoding %d shard(s) on %d Ray worker(s)", len(todo), workers)
            t0, start = time.perf_counter(), None
            with tqdm(total=len(todo), unit="shard", desc=f"encoding (ray x{workers})", disable=None) as bar:
                for row in results.iter_rows():
                    if start is None:  # launch to first result, less its encoding: actors' start and model loading
                        start = time.perf_counter() - t0 - float(row["seconds"])
                    counts["encoded" if row["encoded"] else "reused"] += 1
                    bar.update(1)
        except ray.exceptions.RayError as e:
            raise _clear(e) from e
        finally:
            if started:
                ray.shutdown()
        counts.update(workers=workers, worker_start_seconds=start or 0.0)
        logger.info("Ray: %d shard(s) encoded, %d reused; the first worker was ready after %.1f s",
                    counts["encoded"], counts["reused"], counts["worker_start_seconds"])
        return counts


def _clear(error: Exception) -> EmbedrlError:
    """The EmbedrlError a worker raised (one line, as the local path would show it), else Ray's message."""
    text = str(error)
    marker = "EmbedrlError: "
    if marker in text:
        return EmbedrlError(text[text.rindex(marker) + len(marker):].strip().splitlines()[0])
    return EmbedrlError(f"the Ray build failed: {text.strip().splitlines()[-1][:300]} (rerun to resume)")
