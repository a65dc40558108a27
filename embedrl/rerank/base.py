"""What the rerankers share: how a query and a candidate are shown to the model, the result of
reranking one list, and reranking the top of a first stage's ranked lists (the index's hits, the
evaluation runner's candidate indices)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from embedrl.core.items import Item
from embedrl.models.chat import Chat
from embedrl.rerank.cache import ScoreCache

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Reranked:
    """One reranked list: `order` (positions in the list given, best first), the reranker's own score
    for each entry as given (LCR: its bin, +1 / 0 / -1; yes-prob: P(yes)), and what else it found."""

    order: list[int]
    scores: list[float]
    detail: dict[str, Any] = field(default_factory=dict)


class Reranker(Protocol):
    name: str
    seconds: float

    def rerank(self, queries: Sequence[Item], candidates: Sequence[Sequence[Item]],
               prev_scores: Sequence[Sequence[float]], show_progress: bool = False) -> list[Reranked]: ...


def item_text(item: Item, with_instruction: bool = True) -> str:
    return "\n".join(p for p in ((item.instruction if with_instruction else ""), item.text) if p).strip()


def _item_parts(item: Item, label: str, with_instruction: bool) -> tuple[list[dict[str, Any]], list[Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"{label}:"}]
    images = list(item.frames or []) or ([item.image] if item.image is not None else [])
    parts += [{"type": "image"} for _ in images]
    text = item_text(item, with_instruction)
    if text:
        parts.append({"type": "text", "text": text})
    return parts, images


def conversation(query: Item, candidate: Item | None, question: str) -> Chat:
    """The query (its media, instruction and text), the candidate if any (media and text: its
    instruction is the embedder's, e.g. "Represent the given image."), then the question."""
    parts, images = _item_parts(query, "Query", True)
    if candidate is not None:
        more, more_images = _item_parts(candidate, "Candidate", False)
        parts, images = parts + more, images + more_images
    parts.append({"type": "text", "text": question})
    return [{"role": "user", "content": parts}], images


def settings_digest(config: Any, leave_out: Sequence[str] = ()) -> str:
    """A digest of a reranker config's fields that change its scores (every field but `leave_out`)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in leave_out}
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


class ScoringReranker:
    """Base of the rerankers: a chat model, a score cache and the time spent (`seconds`, `computed`:
    model inputs actually scored, cache misses)."""

    name = ""

    def __init__(self, chat, config, cache: ScoreCache | None = None):
        self.chat, self.config, self.cache = chat, config, cache
        self.seconds = 0.0
        self.computed = 0

    def scope(self, leave_out: Sequence[str] = ()) -> tuple[str, str, str]:
        model_id, weights = self.chat.cache_key
        return model_id, weights, f"{self.name}-{settings_digest(self.config, leave_out)}"

    def cached(self, kind: str, keys: Sequence[str],
               compute: Callable[[list[int]], list[tuple[float, dict[str, Any]]]],
               leave_out: Sequence[str] = ()) -> list[float]:
        """Values for keys, through the cache when there is one."""
        def counted(positions: list[int]) -> list[tuple[float, dict[str, Any]]]:
            self.computed += len(positions)
            return compute(positions)

        if self.cache is None:
            return [value for value, _ in counted(list(range(len(keys))))]
        return self.cache.get_or_compute(self.scope(leave_out), kind, keys, counted)

    def rerank(self, queries: Sequence[Item], candidates: Sequence[Sequence[Item]],
               prev_scores: Sequence[Sequence[float]], show_progress: bool = False,
               chunk: int = 8) -> list[Reranked]:
        """Rerank each query's candidates, `chunk` queries a model batch."""
        from tqdm.auto import tqdm

        start = time.perf_counter()
        out: list[Reranked] = []
        try:
            for first in tqdm(range(0, len(queries), chunk), desc=f"rerank ({self.name})", unit="batch",
                              disable=not show_progress):
                out += self.rerank_chunk(queries[first:first + chunk], candidates[first:first + chunk],
                                         prev_scores[first:first + chunk])
        finally:
            self.seconds += time.perf_counter() - start
        return out

    def rerank_chunk(self, queries: Sequence[Item], candidates: Sequence[Sequence[Item]],
                     prev_scores: Sequence[Sequence[float]]) -> list[Reranked]:
        """What each reranker does: order one chunk of queries' candidates (lcr, yes-prob implement it)."""
        raise NotImplementedError


def rerank_lists(reranker: Reranker, queries: Sequence[Item], lists: Sequence[Sequence[T]], k: int,
                 item_of: Callable[[T], Item], score_of: Callable[[T], float],
                 show_progress: bool = False) -> tuple[list[list[T]], list[Reranked]]:
    """Each list's first `k` entries in the reranker's order (the rest keep their places), and
    what the reranker said about each top k."""
    tops = [list(entries[:k]) for entries in lists]
    results = reranker.rerank(queries, [[item_of(e) for e in top] for top in tops],
                              [[score_of(e) for e in top] for top in tops], show_progress=show_progress)
    reordered = [[top[i] for i in result.order] + list(entries[k:])
                 for top, result, entries in zip(tops, results, lists, strict=True)]
    return reordered, results
