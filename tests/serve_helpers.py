"""Shared by the serving tests: a small index whose items carry a stored field, and a server on a thread."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from demo_helpers import small_corpus


def index_with_fields(synth_dir: Path, clip_dir: Path, out: Path) -> Path:
    """The demo tests' small index, each item with a stored field `kind` (image / text / video)."""
    from embedrl.index.build import build_index
    from embedrl.models.base import load_embedder

    corpus = small_corpus(synth_dir, out.parent / "serve_corpus.jsonl")
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    for row in rows:
        row["kind"] = "video" if row.get("frames") else "image" if row.get("image") else "text"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(load_embedder(str(clip_dir)), corpus, out, distributed=False)
    return out


@contextlib.contextmanager
def serving(embedder, indexes=None, reasoner=None, api_key=None, **options):
    """An `embedrl serve` app on 127.0.0.1 (a free port) in this process; yields (url, service)."""
    from embedrl.serve.app import build_app
    from embedrl.serve.server import BackgroundServer
    from embedrl.serve.service import ServeOptions, Service

    service = Service(embedder, indexes or {}, reasoner, ServeOptions(**options))
    with BackgroundServer(build_app(service, api_key)) as server:
        yield server.url, service
