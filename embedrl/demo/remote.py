"""The demo against a running `embedrl serve`: `embedrl demo --server URL [--index NAME]`.

    from embedrl.demo.remote import launch
    launch("http://127.0.0.1:8000", index="photos")      # the same Gradio app, its work done by the server

`RemoteBackend` is a `DemoBackend` whose searches (`/v1/search`: the query's T-CoT, hits with
their cached evidence, the server's stage timings), examples (`/v1/items`) and images
(`/v1/media`, read by the server from the index's own metadata) come over HTTP; the demo
process loads no model and no index, and can run on another machine than the GPU.
"""

from __future__ import annotations

import functools
from typing import Any

from PIL import Image

from embedrl.client import Client
from embedrl.core.errors import EmbedrlError
from embedrl.core.tcot import parse_tcot
from embedrl.demo.backend import MAX_K, DemoBackend, QueryResult
from embedrl.index.search import Hit

HIT_FIELDS = ("row", "id", "score", "item", "tcot", "evidence", "fields")


class RemoteBackend(DemoBackend):
    """The demo's queries, examples and media, answered by an `embedrl serve` over one of its indexes."""

    def __init__(self, client: Client, index: str | None = None):
        self.client = client
        served = {info["name"]: info for info in client.indexes()}
        if index is None and len(served) == 1:
            index = next(iter(served))
        if index not in served:
            raise EmbedrlError(f"{client.root} serves the indexes {sorted(served)}; name one with --index"
                               if index is None else f"{client.root} serves no index {index!r}; it has {sorted(served)}")
        self.index, self.info = index, served[index]
        self._thumb = functools.lru_cache(maxsize=2048)(self._render_thumb)

    @property
    def reasoner(self):
        return None  # reasoning happens on the server

    @property
    def has_reasoner(self) -> bool:
        return self.info.get("query_reasoner") is not None

    def describe(self) -> dict[str, Any]:
        return {"count": self.info["count"], "embedder": self.info.get("embedder") or "precomputed",
                "index_reasoner": self.info.get("reasoner"), "query_reasoner": self.info.get("query_reasoner"),
                "factory": self.info.get("factory"), "corpus": None}

    def query(self, text: str = "", image: Image.Image | None = None, instruction: str = "", k: int = 10,
              use_tcot: bool = True) -> QueryResult:
        item = self.make_query(text, image, instruction)
        found = self.client.search(item, self.index, max(1, min(int(k), MAX_K)), use_tcot)
        hits = [Hit(**{name: h[name] for name in HIT_FIELDS}) for h in found["hits"]]
        raw = found["query"]["tcot"]
        tcot = None
        if raw:
            tcot = parse_tcot(raw)
            tcot.raw = raw
        return QueryResult(item, hits, tcot, dict(found["timings_ms"]), use_tcot)

    def sample_records(self, scan: int = 2000) -> list[dict[str, Any]]:
        return self.client.items(self.index, 0, min(64, scan))

    def row_image(self, row: int) -> Image.Image:
        return self.client.media(self.index, row)

    def load_media(self, row: int, item: dict[str, Any], frame: int | None = None) -> Image.Image:
        return self.client.media(self.index, row, frame)


def launch(server: str, index: str | None = None, api_key: str | None = None, host: str = "127.0.0.1",
           port: int = 7860, share: bool = False, block: bool = True, **limits: Any):
    """Serve the demo over an index of a running server (blocks until interrupted unless `block=False`)."""
    from embedrl.demo.app import build_app, serve

    demo = build_app(RemoteBackend(Client(server, api_key), index), **limits)
    return serve(demo, host, port, share, block)
