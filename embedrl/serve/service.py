"""What `embedrl serve` serves: one embedder, named indexes searched with it, reasoners; no HTTP here.

    service = Service(load_embedder(M), {"photos": "runs/index"}, reasoner=None, options=ServeOptions())
    await service.start()                      # on the event loop: the batchers' workers
    vectors = await service.embed([(item, None)])
    found = await service.search("photos", item, None, k=10, use_tcot=True, filters={})

Model calls go through batchers (`embedrl.serve.batching`): `embed` (items + T-CoTs ->
vectors), one `reason` per query reasoner (query T-CoTs, through the T-CoT cache), and `chat`
when a local reasoner is served (`/v1/chat/completions`). Everything that touches an index
(FAISS search, the sqlite store, reloading) runs on one index thread, so the sqlite
connections are never used concurrently.

With `ServeOptions.rerank` (`embedrl serve --rerank lcr|yes-prob`), searches rerank the first
stage's top `rerank_k` (`embedrl.rerank`) unless a request says `"rerank": false`; the reranker
runs on its model's thread (the reasoner's, when it reads with the reasoner's weights) and each
hit says its first-stage rank and the reranker's score.

Indexes are picked up as `embedrl index add` changes them: before each use the manifest is
stat'ed, and a changed one (add writes it last, atomically) is loaded beside the old index and
swapped in; the embedder is the served one, checked against each manifest's fingerprint. A
manifest that fails to load is logged and the previous index stays in service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedrl.client import tcot_text
from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, load_image
from embedrl.core.tcot import TCoT
from embedrl.core.tcot_cache import ReasonerLike, TCoTCache
from embedrl.index.build import MANIFEST, check_embedder, load_manifest, reasoner_info
from embedrl.index.search import Retriever, tcot_evidence
from embedrl.serve.batching import Batcher
from embedrl.serve.metrics import Metrics
from embedrl.serve.wire import Limits, RequestError

if TYPE_CHECKING:
    from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)

MEDIA_PIXEL_LIMIT = 64_000_000  # an index's own media (trusted, but still bounded)


@dataclass
class ServeOptions:
    """Batching and limits of a server (the `embedrl serve` flags)."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    limits: Limits = field(default_factory=Limits)
    model_name: str | None = None
    reasoner_name: str | None = None
    tcot_cache: str | None = None
    rerank: str | None = None  # a reranker name (embedrl.rerank.RERANKERS), or None: no second stage
    rerank_k: int = 10
    rerank_model: str | None = None  # default: the served reasoner, else the first index's
    rerank_options: list[str] = field(default_factory=list)


def served_name(spec: str) -> str:
    """The name a model is served under: a directory's last part, a Hub id or spec as is."""
    path = Path(spec)
    return path.name if path.is_absolute() or path.exists() else spec


def record(rec: dict[str, Any]) -> dict[str, Any]:
    """A store row as the API returns it: row, id, item, fields, T-CoT text and its parsed evidence."""
    return {"row": rec["row"], "id": rec["id"], "item": rec["item"], "fields": rec["fields"], "tcot": rec["tcot"],
            "evidence": tcot_evidence(rec["tcot"])}


def matches(fields: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Stored fields equal to each filter's value (one of them, for a list)."""
    return all(fields.get(k) in v if isinstance(v, list) else fields.get(k) == v for k, v in filters.items())


class ServedIndex:
    """An index directory in service: its Retriever, swapped for a fresh one when the manifest changes."""

    def __init__(self, name: str, path: str | os.PathLike, embedder: Embedder, fingerprint: str,
                 reasoner: ReasonerLike | None):
        self.name, self.path, self.embedder, self.fingerprint = name, Path(path), embedder, fingerprint
        self.reasoner = reasoner
        self.stamp = self._stamp()
        self.retriever = self._open()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path / MANIFEST)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _open(self) -> Retriever:
        retriever = Retriever.from_dir(self.path, load_model=False, reasoner=self.reasoner)
        check_embedder(retriever.manifest, self.embedder, self.path, self.fingerprint)
        retriever.embedder = self.embedder
        return retriever

    def current(self) -> Retriever:
        """The Retriever, reloaded first if the manifest changed (call on the index thread)."""
        stamp = self._stamp()
        if stamp != self.stamp:
            self.stamp = stamp
            try:
                fresh = self._open()
            except EmbedrlError as e:
                logger.error("index %s changed but does not load (%s); still serving the previous one", self.name, e)
            else:
                old, self.retriever = self.retriever, fresh
                old.close()
                logger.info("index %s reloaded: %d vectors", self.name, len(fresh))
        return self.retriever

    def describe(self) -> dict[str, Any]:
        r = self.current()
        m = r.manifest
        return {"name": self.name, "count": len(r), "dim": m.get("dim"), "factory": m.get("factory"),
                "embedder": (m.get("embedder") or {}).get("id"), "reasoner": (m.get("reasoner") or {}).get("id"),
                "query_reasoner": (reasoner_info(self.reasoner) or {}).get("id"),
                "updated": m.get("updated") or m.get("created")}

    def search(self, vector: np.ndarray, k: int, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """Top-k hits for one query vector; with filters, deeper searches until k hits pass them (or none is left)."""
        r = self.current()
        n = len(r)
        fetch = min(n, k + 8 if not filters else max(4 * k, 64))  # +8: ties at the k-th score cut in row order
        while True:
            scores, rows = r.search_vectors(vector, fetch)
            hits = [h for h in r.hits(scores, rows)[0] if matches(h.fields, filters)]
            if len(hits) >= k or fetch >= n:
                return [{"rank": i + 1, **h.to_dict()} for i, h in enumerate(hits[:k])]
            fetch = min(n, fetch * 4)

    def item(self, item_id: str) -> dict[str, Any] | None:
        r = self.current()
        found = r.store.find(item_id, below=len(r))
        return None if found is None else record(found)

    def items(self, offset: int, limit: int) -> list[dict[str, Any]]:
        r = self.current()
        return [record(rec) for rec in r.store.get_many(range(offset, min(len(r), offset + limit))) if rec]

    def media(self, row: int, frame: int | None) -> bytes:
        """PNG bytes of a row's image (or of its `frame`-th frame): paths come from the index's own store only."""
        import io

        r = self.current()
        rec = r.store.get_many([row])[0] if 0 <= row < len(r) else None
        if rec is None:
            raise RequestError(f"index {self.name} has no row {row}", 404, "not_found")
        item = rec["item"]
        frames = item.get("frames") or []
        if frame is not None and not 0 <= frame < len(frames):
            raise RequestError(f"row {row} has {len(frames)} frame(s); frame {frame} is out of range", 404, "not_found")
        path = frames[frame] if frame is not None else item.get("image") or (frames[0] if frames else None)
        if path is None:
            raise RequestError(f"row {row} of index {self.name} is text; it has no image", 404, "not_found")
        try:
            image = load_image(path, max_pixels=MEDIA_PIXEL_LIMIT)
        except EmbedrlError as e:
            logger.warning("index %s row %d: %s", self.name, row, e)
            raise RequestError(f"the image of row {row} is not readable on the server", 404, "not_found") from None
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()


class Service:
    """The served embedder, indexes and reasoners, with their batchers and metrics."""

    def __init__(self, embedder: Embedder, indexes: dict[str, str | os.PathLike] | None = None,
                 reasoner: ReasonerLike | None = None, options: ServeOptions | None = None):
        from embedrl.models.reasoner import Reasoner, load_reasoner
        from embedrl.models.remote_reasoner import RemoteReasoner

        self.options = options = options or ServeOptions()
        self.limits = options.limits
        self.embedder = embedder
        self.fingerprint = embedder.fingerprint()  # the served weights are frozen: hashed once
        self.model_name = options.model_name or served_name(str(embedder.name_or_path))
        self.metrics = Metrics()
        self.started = int(time.time())
        self.reasoner = reasoner
        loaded: dict[tuple, ReasonerLike] = {}  # manifests' reasoners, each loaded once

        def query_reasoner(path) -> ReasonerLike | None:
            if reasoner is not None:
                return reasoner
            built = load_manifest(path).get("reasoner")
            if not built:
                return None
            key = (built["id"], tuple(built.get("modalities") or ()), built.get("prompt_set"))
            if key not in loaded:
                loaded[key] = load_reasoner(built["id"], modalities=built.get("modalities"),
                                            prompt_set=built.get("prompt_set"))
            return loaded[key]

        self.indexes = {name: ServedIndex(name, path, embedder, self.fingerprint, query_reasoner(path))
                        for name, path in (indexes or {}).items()}
        self.index_thread = ThreadPoolExecutor(1, thread_name_prefix="embedrl-index")
        b = dict(max_batch=options.max_batch, max_wait_ms=options.max_wait_ms, metrics=self.metrics)
        self.embed_batcher = Batcher("embed", self._encode, **b)
        # one thread per reasoner: its query T-CoTs and its chats never run the model at the same time
        self.reasoner_threads: dict[int, ThreadPoolExecutor] = {}
        self.reason_batchers: dict[int, Batcher] = {}
        for served in self.indexes.values():
            if served.reasoner is not None and id(served.reasoner) not in self.reason_batchers:
                self.reason_batchers[id(served.reasoner)] = Batcher(  # stage label: reason:<reasoner>
                    f"reason:{served_name(reasoner_info(served.reasoner)['id'])}",
                    self._reasoning(served.reasoner, options.tcot_cache),
                    executor=self._reasoner_thread(served.reasoner), **b)
        self.reranker, self.rerank_thread = self._load_reranker(options)
        self.chat_reasoner = reasoner if isinstance(reasoner, Reasoner) and not isinstance(
            reasoner, RemoteReasoner) else None
        self.reasoner_name = None
        self.chat_batcher = None
        if self.chat_reasoner is not None:
            self.reasoner_name = options.reasoner_name or served_name(self.chat_reasoner.name_or_path)
            self.chat_batcher = Batcher("chat", self._chat, executor=self._reasoner_thread(self.chat_reasoner), **b)

    def _load_reranker(self, options: ServeOptions):
        """The second stage and the thread it runs on (its model's: a reasoner's T-CoTs and its reranking never
        run the model at once), or (None, None)."""
        if not options.rerank:
            return None, None
        from embedrl.rerank import load_reranker

        model = options.rerank_model or self.reasoner or next(
            (s.reasoner for s in self.indexes.values() if s.reasoner is not None), None)
        if model is None:
            raise EmbedrlError(f"--rerank {options.rerank} needs a model: --rerank-model, or a reasoner (--reasoner, "
                               "or an index built with one)")
        reranker = load_reranker(options.rerank, model, options.rerank_options, cache=options.tcot_cache or True)
        return reranker, self._reasoner_thread(reranker if isinstance(model, str) else model)

    def _rerank(self, item: Item, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The first stage's top `rerank_k` hits in the reranker's order, each with its first-stage rank and score."""
        from embedrl.rerank.base import rerank_lists

        k = self.options.rerank_k
        reordered, said = rerank_lists(self.reranker, [item], [hits], k, item_of=lambda h: Item.from_dict(h["item"]),
                                       score_of=lambda h: h["score"])
        scores = dict(zip(range(1, k + 1), said[0].scores))  # first-stage rank -> the reranker's score
        return [{**h, "rank": rank, "first_rank": h["rank"], "rerank_score": scores.get(h["rank"])}
                for rank, h in enumerate(reordered[0], start=1)]

    def _reasoner_thread(self, reasoner: ReasonerLike) -> ThreadPoolExecutor:
        if id(reasoner) not in self.reasoner_threads:
            self.reasoner_threads[id(reasoner)] = ThreadPoolExecutor(1, thread_name_prefix="embedrl-reasoner")
        return self.reasoner_threads[id(reasoner)]

    @property
    def batchers(self) -> list[Batcher]:
        return [self.embed_batcher, *self.reason_batchers.values(), *([self.chat_batcher] if self.chat_batcher else [])]

    async def start(self) -> None:
        for batcher in self.batchers:
            batcher.start()
        await self.on_index_thread(self._count_items)

    async def stop(self) -> None:
        for batcher in self.batchers:
            await batcher.stop()
        for thread in [self.index_thread, *self.reasoner_threads.values()]:
            thread.shutdown(wait=True)
        for served in self.indexes.values():
            served.retriever.close()

    async def on_index_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.index_thread, fn, *args)

    def _count_items(self) -> None:
        for served in self.indexes.values():
            self.metrics.index_items.labels(served.name).set(len(served.current()))

    # -- model calls (on the batchers' threads) -----------------------------------------------

    def _encode(self, jobs: list[tuple[Item, TCoT | None]]) -> list[np.ndarray]:
        items, tcots = zip(*jobs)
        x = self.embedder.encode(list(items), list(tcots), batch_size=len(items), show_progress=False)
        return list(x.numpy().astype(np.float32))

    @staticmethod
    def _reasoning(reasoner: ReasonerLike, cache_path: str | None):
        cache = TCoTCache(cache_path)  # this batcher's own connection (sqlite connections are not shared)

        def write(items: list[Item]) -> list[TCoT | None]:
            return cache.get_or_generate(items, "query", reasoner, show_progress=False)

        return write

    def _chat(self, jobs: list[tuple[tuple, tuple]]) -> list[list[str]]:
        """Chats grouped by their generation settings, each group in one `complete` call."""
        out: list[list[str] | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for k, (_, settings) in enumerate(jobs):
            groups.setdefault(settings, []).append(k)
        for (n, max_tokens, sampling), ks in groups.items():
            replies = self.chat_reasoner.complete([jobs[k][0] for k in ks], n, max_tokens, **dict(sampling))
            for k, reply in zip(ks, replies):
                out[k] = reply
        return out  # type: ignore[return-value]

    # -- what the routes call ------------------------------------------------------------------

    def index(self, name: str | None) -> ServedIndex:
        if name is None:
            if len(self.indexes) == 1:
                return next(iter(self.indexes.values()))
            raise RequestError(f"name the index to search: one of {sorted(self.indexes)}", param="index")
        if name not in self.indexes:
            raise RequestError(f"no index named {name!r}; this server has {sorted(self.indexes)}", 404, "not_found")
        return self.indexes[name]

    async def embed(self, inputs: list[tuple[Item, TCoT | None]]) -> list[np.ndarray]:
        return await self.embed_batcher.submit(inputs)

    async def search(self, index: str | None, item: Item, tcot: TCoT | None, k: int, use_tcot: bool,
                     filters: dict[str, Any], rerank: bool = True) -> dict[str, Any]:
        served = self.index(index)
        rerank = rerank and self.reranker is not None
        timings: dict[str, float] = {}
        if not use_tcot:
            tcot = None
        elif tcot is None and served.reasoner is not None:
            start = time.perf_counter()
            tcot = (await self.reason_batchers[id(served.reasoner)].submit([item]))[0]
            timings["reasoning"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        vector = (await self.embed_batcher.submit([(item, tcot)]))[0]
        timings["embedding"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        depth = max(k, self.options.rerank_k) if rerank else k
        hits = await self.on_index_thread(served.search, vector[None], depth, filters)
        timings["search"] = (time.perf_counter() - start) * 1e3
        if rerank:
            start = time.perf_counter()
            hits = await asyncio.get_running_loop().run_in_executor(self.rerank_thread, self._rerank, item, hits)
            timings["rerank"] = (time.perf_counter() - start) * 1e3
        text = None if tcot is None else tcot_text(tcot)
        return {"index": served.name, "k": k, "use_tcot": use_tcot, "rerank": self.reranker.name if rerank else None,
                "query": {"tcot": text, "evidence": tcot_evidence(text)}, "hits": hits[:k],
                "timings_ms": {name: round(ms, 3) for name, ms in timings.items()}}

    async def chat(self, chat: tuple, n: int, max_tokens: int, sampling: tuple) -> list[str]:
        if self.chat_batcher is None:
            raise RequestError("this server serves no local reasoner; start it with --reasoner MODEL", 404,
                               "not_found")
        return (await self.chat_batcher.submit([(chat, (n, max_tokens, sampling))]))[0]

    def models(self) -> list[dict[str, Any]]:
        """`/v1/models` entries, with what a remote embedder / reasoner needs to check identity."""
        base = {"object": "model", "created": self.started, "owned_by": "embedrl"}
        out = [{"id": self.model_name, **base, "embedrl": {
            "kind": "embedder", "fingerprint": self.fingerprint, "dim": int(self.embedder.dim),
            "backend": self.embedder.backend, "format": self.embedder.embedrl_config().get("format")}}]
        if self.chat_reasoner is not None:
            rid, rhash, version = self.chat_reasoner.cache_key
            out.append({"id": self.reasoner_name, **base, "embedrl": {
                "kind": "reasoner", "reasoner_id": rid, "hash": rhash, "prompt_version": version,
                "prompt_set": self.chat_reasoner.prompt_set.name}})
        return out
