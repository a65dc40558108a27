"""The demo's Python side, without Gradio: run a query, compare with/without T-CoT, render hits.

`DemoBackend(retriever)` wraps a loaded `Retriever`. Its methods are what the Gradio
callbacks call, and what the tests call directly:

    backend = DemoBackend(Retriever.from_dir("runs/index"))
    result = backend.query(text="a small red circle", image=None, k=8)
    result.hits, result.tcot, result.timings       # hits, the query's T-CoT, ms per stage

Stages are timed around the Retriever's public steps: reasoning (the query T-CoT, from
the T-CoT cache or generated), embedding (item + T-CoT -> vector), search (FAISS plus the
metadata lookup) and, with a reranker (`DemoBackend(retriever, reranker, rerank_k)`), rerank:
the results then say how far each moved from its first-stage rank (`result.moves`). Model calls are serialised by a lock: the embedder, the reasoner and the
sqlite connections are shared by all sessions, and on a CPU one query already uses every
core; Gradio's queue decides how many requests wait.

Media are read only through the index's own metadata (row -> item paths), never from a
path a request supplies; images leave as PIL images that Gradio serves from its cache.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, load_image
from embedrl.core.tcot import TCoT, parse_tcot, render_tcot
from embedrl.demo import views

if TYPE_CHECKING:
    from embedrl.index.search import Hit, Retriever
    from embedrl.rerank.base import Reranker

logger = logging.getLogger(__name__)

MAX_K = 50
MAX_QUERY_CHARS = 2000
MEDIA_PIXEL_LIMIT = 64_000_000


@dataclass
class QueryResult:
    """One search: hits, the query item and its T-CoT (None without a reasoner), stage timings in ms."""

    query: Item
    hits: list[Hit]
    tcot: TCoT | None
    timings: dict[str, float] = field(default_factory=dict)
    use_tcot: bool = True
    moves: list[str] | None = None  # reranked: each hit's move from its first-stage rank (▲n / ▼n / =)

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]


def item_kind(item: dict[str, Any]) -> str:
    if item.get("frames"):
        return "video"
    if item.get("image"):
        return "image"
    return "text"


def hit_label(hit: Hit, width: int = 48) -> str:
    """A short human name for a hit: its text's start, or its kind and id."""
    text = " ".join(str(hit.item.get("text") or "").split())
    kind = item_kind(hit.item)
    if text:
        return text if len(text) <= width else text[: width - 1] + "…"
    return f"{kind} {hit.id}"


class DemoBackend:
    """Queries, comparisons and rendering over one loaded index."""

    def __init__(self, retriever: Retriever, reranker: Reranker | None = None, rerank_k: int = 10):
        if retriever.embedder is None:
            raise EmbedrlError("the demo needs the index's embedder; load the Retriever with its model")
        self.retriever = retriever
        self.reranker, self.rerank_k = reranker, rerank_k
        self._lock = threading.Lock()
        self._thumb = functools.lru_cache(maxsize=2048)(self._render_thumb)

    # -- facts about the index ------------------------------------------------------------

    @property
    def reasoner(self):
        return self.retriever.reasoner

    @property
    def has_reasoner(self) -> bool:
        return self.retriever.reasoner is not None

    def describe(self) -> dict[str, Any]:
        m = self.retriever.manifest
        reasoner = self.retriever.reasoner
        return {
            "count": len(self.retriever),
            "embedder": (m.get("embedder") or {}).get("id") or "precomputed",
            "index_reasoner": (m.get("reasoner") or {}).get("id"),
            "query_reasoner": getattr(reasoner, "name_or_path", None) or (
                reasoner.cache_key[0] if reasoner is not None else None),
            "factory": m.get("factory"),
            "corpus": (m.get("corpus") or {}).get("source"),
        }

    # -- searching --------------------------------------------------------------------------

    def make_query(self, text: str = "", image: Image.Image | None = None, instruction: str = "") -> Item:
        text = (text or "").strip()[:MAX_QUERY_CHARS]
        instruction = (instruction or "").strip()[:MAX_QUERY_CHARS]
        if not text and image is None:
            raise EmbedrlError("type a query, upload an image, or both")
        return Item(text=text, image=image, instruction=instruction)

    def query(self, text: str = "", image: Image.Image | None = None, instruction: str = "", k: int = 10,
              use_tcot: bool = True, rerank: bool = True) -> QueryResult:
        """Search the index; `image` is an already checked PIL image (see `uploads.check_image_upload`).
        With a reranker (and `rerank`), the first stage's top `rerank_k` are reordered."""
        item = self.make_query(text, image, instruction)
        k = max(1, min(int(k), MAX_K, len(self.retriever)))
        reranker = self.reranker if rerank else None
        depth = max(k, self.rerank_k) if reranker is not None else k
        timings: dict[str, float] = {}
        with self._lock:
            tcot = None
            if use_tcot and self.reasoner is not None:
                t0 = time.perf_counter()
                tcot = self.retriever.cache.get_or_generate([item], "query", self.reasoner)[0]
                timings["reasoning"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            vectors = self.retriever.encode_queries([item], use_tcot=use_tcot)
            timings["embedding"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            scores, rows = self.retriever.search_vectors(vectors, depth)
            hits = self.retriever.hits(scores, rows)[0]
            timings["search"] = (time.perf_counter() - t0) * 1e3
            moves = None
            if reranker is not None:
                t0 = time.perf_counter()
                hits = self.retriever.rerank([item], [hits], reranker, self.rerank_k)[0]
                timings["rerank"] = (time.perf_counter() - t0) * 1e3
                moves = [views.movement_label(hit.first_rank - 1, rank) for rank, hit in enumerate(hits[:k])]
        return QueryResult(item, hits[:k], tcot, timings, use_tcot, moves)

    def compare(self, text: str = "", image: Image.Image | None = None, instruction: str = "",
                k: int = 10) -> tuple[QueryResult, QueryResult, list[str]]:
        """The same query without and with its T-CoT, and the rank movement of each T-CoT hit."""
        plain = self.query(text, image, instruction, k, use_tcot=False)
        reasoned = self.query(text, image, instruction, k, use_tcot=True)
        return plain, reasoned, views.rank_movements(plain.ids, reasoned.ids)

    # -- examples ---------------------------------------------------------------------------

    def example_rows(self, n_text: int = 4, n_image: int = 6, scan: int = 2000) -> dict[str, list]:
        """A few text queries (from text items) and image rows (by row id) drawn from the index; a row whose
        image cannot be read (moved, deleted, corrupt) is left out, with a log line."""
        texts, images = [], []
        for rec in self.sample_records(scan):
            item = rec["item"]
            if item.get("text") and not item.get("image") and not item.get("frames") and len(texts) < n_text:
                texts.append(_first_sentence(item["text"]))
            elif item.get("image") and len(images) < n_image:
                try:
                    self.row_image(rec["row"])
                except EmbedrlError as e:
                    logger.warning("example row %d left out: %s", rec["row"], e)
                    continue
                images.append(rec["row"])
        return {"texts": texts, "image_rows": images}

    def sample_records(self, scan: int = 2000) -> list[dict[str, Any]]:
        """About 64 store records spread over the first `scan` rows (where examples are drawn from)."""
        count = min(len(self.retriever), scan)
        step = max(1, count // 64)
        return [r for r in self.retriever.store.get_many(range(0, count, step)) if r is not None]

    def row_image(self, row: int) -> Image.Image:
        """The image of index row `row` (its first frame for a video), full size."""
        rec = self.retriever.store.get_many([int(row)])[0]
        if rec is None:
            raise EmbedrlError(f"no row {row} in the index")
        return self.load_media(row, rec["item"])

    def load_media(self, row: int, item: dict[str, Any], frame: int | None = None) -> Image.Image:
        """Row `row`'s image (or its video's `frame`-th frame, from 0; the first by default), found through
        the index's own metadata, never through a path a request gave."""
        media = item["frames"][frame] if frame is not None else _media_of(item)
        if media is None:
            raise EmbedrlError(f"row {row} has no image")
        return load_image(media, max_pixels=MEDIA_PIXEL_LIMIT)

    # -- rendering --------------------------------------------------------------------------

    def _render_thumb(self, row: int, item_json: str) -> Image.Image:
        import json

        item = json.loads(item_json)
        kind = item_kind(item)
        if kind == "text":
            return views.text_card(item.get("text", ""), side=views.CARD_SIDE, title="text")
        try:
            thumb = views.fit(self.load_media(row, item), views.THUMB_SIDE)
        except EmbedrlError as e:
            logger.warning("row %d: %s", row, e)
            return views.text_card(f"(media unavailable) {item.get('text', '')}", title=kind)
        if kind == "video":
            thumb = views.badge(thumb, f"▶ {len(item['frames'])} frames")
        return thumb

    def thumbnail(self, hit: Hit) -> Image.Image:
        import json

        return self._thumb(hit.row, json.dumps(hit.item, sort_keys=True))

    def gallery(self, hits: list[Hit], moves: list[str] | None = None) -> list[tuple[Image.Image, str]]:
        out = []
        for i, hit in enumerate(hits):
            caption = f"#{i + 1}  {hit.score:.3f}" if moves is None else f"{moves[i]}  {hit.score:.3f}"
            out.append((self.thumbnail(hit), caption))
        return out

    def query_view(self, result: QueryResult) -> tuple[Image.Image | None, str]:
        """The query image with the T-CoT's boxes drawn (None for a text query) and the T-CoT card."""
        image = None
        if isinstance(result.query.image, Image.Image):
            boxes = result.tcot.boxes if result.tcot is not None else []
            image = views.draw_boxes(result.query.image, boxes)
        if not result.use_tcot:
            missing = "T-CoT switched off for this search."
        else:
            missing = ("No reasoner: this index was built without one and none was given "
                       "(launch with --reasoner to see the query's T-CoT).")
        raw = getattr(result.tcot, "raw", None) if result.tcot is not None else None
        return image, views.tcot_html(result.tcot, raw, title="Query T-CoT", missing=missing)

    def hit_view(self, hit: Hit, rank: int | None = None) -> dict[str, Any]:
        """What the detail panel shows for one hit: image with boxes, key-frame strip, T-CoT card, text."""
        tcot = parse_tcot(hit.tcot) if hit.tcot else None
        kind = item_kind(hit.item)
        image, frames = None, []
        try:
            if kind == "image":
                image = views.draw_boxes(self.load_media(hit.row, hit.item), tcot.boxes if tcot else [])
            elif kind == "video":
                loaded = [self.load_media(hit.row, hit.item, j) for j in range(len(hit.item["frames"]))]
                frames = views.frame_strip(loaded, tcot.key_frames if tcot else [])
        except EmbedrlError as e:
            logger.warning("row %d: %s", hit.row, e)
        title = f"Result #{rank + 1} T-CoT" if rank is not None else "Result T-CoT"
        first = f" · first stage #{hit.first_rank}" if hit.first_rank is not None else ""
        as_written = hit.tcot if tcot is not None and hit.tcot != render_tcot(tcot) else None
        card = views.tcot_html(tcot, as_written, title=title,
                               missing="No cached T-CoT: this index was built without a reasoner.")
        head = (f'<div class="erl-sub">{views.esc(kind)} · id <code>{views.esc(hit.id)}</code> · row {hit.row}'
                f" · score <b>{hit.score:.4f}</b>{first}</div>")
        text = hit.item.get("text") or ""
        instruction = hit.item.get("instruction") or ""
        body = ""
        if instruction:
            body += f'<div class="erl-sub">instruction: {views.esc(instruction)}</div>'
        if text:
            body += f'<div class="erl-card" style="margin-top:6px">{views.esc(text)}</div>'
        return {"image": image, "frames": frames, "tcot_html": card, "info_html": head + body}


def _media_of(item: dict[str, Any]) -> str | None:
    if item.get("frames"):
        return item["frames"][0]
    return item.get("image")


def _first_sentence(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    cut = text.find(". ")
    if 0 < cut < limit:
        return text[: cut + 1]
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]
