"""Search an index: `Retriever.from_dir(DIR).search(item_or_items, k=10)`.

Queries go through the same steps as in training and evaluation: the reasoner writes a
query-role T-CoT (read from the shared T-CoT cache when present), then the embedder
encodes item + T-CoT into a normalised vector; the score of a hit is the inner product,
i.e. the cosine similarity the evaluation harness computes for the same pair (exactly so
for a `Flat` index, approximately for HNSW / IVF-PQ).

The embedder is the one the manifest names, or `model` (a spec or a loaded Embedder);
either way its weights hash and dimension must match the manifest's.

`search(..., reranker=R, rerank_k=K)` reorders each query's top K hits with a second stage
(`embedrl.rerank`); a hit then says where the first stage put it (`first_rank`) and the
reranker's score (`rerank_score`, None where LCR kept a confident query's order).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import parse_tcot
from embedrl.core.tcot_cache import ReasonerLike, TCoTCache
from embedrl.index import faiss_index as fx
from embedrl.index.build import check_embedder, load_manifest, reasoner_info
from embedrl.index.sharded import ShardedStore, open_index
from embedrl.index.store import ItemStore

if TYPE_CHECKING:
    from embedrl.models.base import Embedder
    from embedrl.rerank.base import Reranker

logger = logging.getLogger(__name__)


@dataclass
class Hit:
    """One search result: row in the index, item id, score (cosine), the item, its T-CoT and evidence."""

    row: int
    id: str
    score: float
    item: dict[str, Any]
    tcot: str | None = None
    evidence: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    first_rank: int | None = None  # with a reranker: the hit's rank in the first stage (1: its top)
    rerank_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tcot_evidence(tcot_text: str | None) -> dict[str, Any] | None:
    if not tcot_text:
        return None
    t = parse_tcot(tcot_text)
    return {"keywords": t.keywords, "boxes": t.boxes, "key_frames": t.key_frames, "answer": t.answer}


class Retriever:
    """A loaded index with its embedder (and reasoner, loaded when first needed)."""

    def __init__(self, index_dir: str | os.PathLike, manifest: dict[str, Any], index, store: ItemStore | ShardedStore,
                 embedder: Embedder | None, reasoner: ReasonerLike | None = None,
                 cache: TCoTCache | str | os.PathLike | None = None):
        self.index_dir = Path(index_dir)
        self.manifest = manifest
        self.index = index
        self.store = store
        self.embedder = embedder
        self.reasoner = reasoner
        self._cache = cache
        fx.set_search_params(index, manifest.get("search_params"))

    @classmethod
    def from_dir(cls, index_dir: str | os.PathLike, model: Embedder | str | None = None,
                 reasoner: ReasonerLike | str | None = None, cache: TCoTCache | str | os.PathLike | None = None,
                 load_model: bool = True, format: str | None = None) -> Retriever:
        index_dir = Path(index_dir)
        manifest = load_manifest(index_dir)
        index, store = open_index(index_dir, manifest)  # one file, or index shards served as one
        count = int(manifest.get("count", -1))
        if index.ntotal != count or index.d != int(manifest.get("dim", -1)):
            raise EmbedrlError(f"{index_dir}: index file holds {index.ntotal} vectors of dim {index.d}, the manifest "
                               f"says {count} of dim {manifest.get('dim')}; rebuild the index")
        if store.count() < count:
            raise EmbedrlError(f"{index_dir}: metadata store holds {store.count()} rows for {count} vectors; "
                               "rebuild the index")
        embedder = None
        if isinstance(model, str) or (model is None and load_model):
            from embedrl.models.base import load_embedder

            spec = model or (manifest.get("embedder") or {}).get("id")
            if not spec:
                raise EmbedrlError(f"{index_dir} was built from precomputed vectors; pass the model that made them")
            embedder = load_embedder(spec, format=format or (manifest.get("embedder") or {}).get("format"))
        elif model is not None:
            embedder = model
        if embedder is not None:
            check_embedder(manifest, embedder, index_dir)
        if isinstance(reasoner, str):
            from embedrl.models.reasoner import load_reasoner

            built_with = manifest.get("reasoner") or {}
            reasoner = load_reasoner(reasoner, modalities=built_with.get("modalities"),
                                     prompt_set=built_with.get("prompt_set"))
        return cls(index_dir, manifest, index, store, embedder, reasoner, cache)

    def close(self) -> None:
        self.store.close()
        if isinstance(self._cache, TCoTCache):
            self._cache.close()

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def cache(self) -> TCoTCache:
        if not isinstance(self._cache, TCoTCache):
            self._cache = TCoTCache(self._cache)
        return self._cache

    def _query_reasoner(self) -> ReasonerLike | None:
        built_with = self.manifest.get("reasoner")
        if self.reasoner is None and built_with:
            from embedrl.models.reasoner import load_reasoner

            self.reasoner = load_reasoner(built_with["id"], modalities=built_with.get("modalities"),
                                          prompt_set=built_with.get("prompt_set"))
        if self.reasoner is not None and built_with and reasoner_info(self.reasoner) != built_with:
            logger.warning("query reasoner %s differs from the one the index was built with (%s)",
                           reasoner_info(self.reasoner), built_with)
        return self.reasoner

    def encode_queries(self, items: Sequence[Item], use_tcot: bool = True, batch_size: int = 32) -> np.ndarray:
        if self.embedder is None:
            raise EmbedrlError("this Retriever has no embedder; pass model= to from_dir")
        tcots = None
        reasoner = self._query_reasoner() if use_tcot else None
        if reasoner is not None:
            tcots = self.cache.get_or_generate(items, "query", reasoner)
        x = self.embedder.encode(list(items), tcots=tcots, batch_size=batch_size, show_progress=False)
        return x.detach().cpu().numpy().astype(np.float32)

    def search_vectors(self, queries: np.ndarray, k: int = 10,
                       params: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids), each (nq, k); row id -1 where fewer than k results exist."""
        queries = fx.normalize(np.atleast_2d(queries))
        if queries.shape[1] != self.index.d:
            raise EmbedrlError(f"query vectors have dim {queries.shape[1]}, the index {self.index.d}")
        if params:
            fx.set_search_params(self.index, params)
        return self.index.search(queries, k)

    def hits(self, scores: np.ndarray, rows: np.ndarray) -> list[list[Hit]]:
        out = []
        for row_scores, row_ids in zip(scores, rows):
            # equal scores in row (= corpus) order, the tie rule of embedrl.eval.metrics
            valid = sorted(((float(s), int(r)) for s, r in zip(row_scores, row_ids) if r >= 0),
                           key=lambda sr: (-sr[0], sr[1]))
            records = self.store.get_many([r for _, r in valid])
            out.append([Hit(row=r, id=rec["id"], score=s, item=rec["item"], tcot=rec["tcot"],
                            evidence=tcot_evidence(rec["tcot"]), fields=rec["fields"])
                        for (s, r), rec in zip(valid, records) if rec is not None])
        return out

    def search(self, queries: Item | Sequence[Item], k: int = 10, use_tcot: bool = True,
               params: dict[str, Any] | None = None, reranker: Reranker | None = None,
               rerank_k: int = 10) -> list[list[Hit]]:
        """Top-k hits for each query item (a single Item gives a one-element list), the first
        `rerank_k` reordered by `reranker` when given."""
        items = [queries] if isinstance(queries, Item) else list(queries)
        if not items:
            return []
        k = max(1, min(int(k), len(self)))
        depth = max(k, rerank_k) if reranker is not None else k
        # a few extra results so that candidates tied at the k-th score are cut in row order
        scores, rows = self.search_vectors(self.encode_queries(items, use_tcot), min(len(self), depth + 8), params)
        hits = [h[:depth] for h in self.hits(scores, rows)]
        return [h[:k] for h in (self.rerank(items, hits, reranker, rerank_k) if reranker is not None else hits)]

    def rerank(self, items: Sequence[Item], hits: list[list[Hit]], reranker: Reranker, k: int) -> list[list[Hit]]:
        """Each query's first k hits in the reranker's order, marked with their first-stage rank."""
        from embedrl.rerank.base import rerank_lists

        for ranked in hits:
            for rank, hit in enumerate(ranked, start=1):
                hit.first_rank = rank
        reordered, said = rerank_lists(reranker, items, hits, k, item_of=lambda h: Item.from_dict(h.item),
                                       score_of=lambda h: h.score)
        for ranked, result in zip(hits, said):
            for hit, value in zip(ranked, result.scores):
                hit.rerank_score = value
        return reordered
