"""Loading what to serve and running it under uvicorn: `embedrl serve`, tests and `bench serve`.

    run(["photos=runs/index"], model=None, reasoner=None, host="127.0.0.1", port=8000)   # blocks
    with BackgroundServer(build_app(service)) as server:                                  # a thread
        Client(server.url).health()

Safety defaults: bound to 127.0.0.1 (this machine only); bound anywhere else, an API key is
required (`--api-key` or `$EMBEDRL_API_KEY`) or the server refuses to start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from embedrl.client import API_KEY_ENV, is_loopback
from embedrl.core.errors import EmbedrlError
from embedrl.core.media import set_pil_limit
from embedrl.serve.service import ServeOptions, Service

logger = logging.getLogger(__name__)


def parse_index_specs(specs: list[str]) -> dict[str, Path]:
    """`[NAME=]DIR` arguments as {name: dir}; a name defaults to the directory's name."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        if not name or not path:
            raise EmbedrlError(f"--index {spec!r}: expected [NAME=]DIR")
        if name in out:
            raise EmbedrlError(f"two indexes are named {name!r}; name them: --index NAME=DIR")
        out[name] = Path(path)
    return out


def load_service(indexes: dict[str, Path], model: str | None = None, reasoner: str | None = None,
                 options: ServeOptions | None = None, format: str | None = None,
                 prompt_set: str | None = None) -> Service:
    """Load the embedder (`model`, else the first index's, in `format` else the index's), the reasoner (with
    `prompt_set`, else the one it records), and the indexes."""
    from embedrl.index.build import load_manifest
    from embedrl.models.base import load_embedder

    if not indexes and not model:
        raise EmbedrlError("give --index DIR (its embedder is served) and/or --model M")
    spec = model
    if indexes:
        first = next(iter(indexes.values()))
        built_with = load_manifest(first).get("embedder") or {}
        spec, format = spec or built_with.get("id"), format or built_with.get("format")
        if not spec:
            raise EmbedrlError(f"{first} was built from precomputed vectors; pass --model")
    loaded = None
    if reasoner:
        from embedrl.models.reasoner import load_reasoner

        loaded = load_reasoner(reasoner, prompt_set=prompt_set)
    return Service(load_embedder(spec, format=format), indexes, loaded, options)


def check_exposure(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise EmbedrlError(f"binding {host} exposes the server to other machines: set an API key "
                           f"(--api-key KEY or ${API_KEY_ENV}), or bind 127.0.0.1")


def run(index_specs: list[str], model: str | None = None, reasoner: str | None = None, host: str = "127.0.0.1",
        port: int = 8000, api_key: str | None = None, options: ServeOptions | None = None,
        format: str | None = None, prompt_set: str | None = None) -> None:
    """Load and serve until interrupted."""
    import uvicorn

    from embedrl.serve.app import build_app

    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    check_exposure(host, api_key)
    options = options or ServeOptions()
    set_pil_limit(options.limits.image.max_pixels)
    service = load_service(parse_index_specs(index_specs), model, reasoner, options, format, prompt_set)
    logger.info("serving %s (%s) and %d index(es) on http://%s:%d", service.model_name, service.fingerprint,
                len(service.indexes), host, port)
    uvicorn.run(build_app(service, api_key), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=5)


class BackgroundServer:
    """A uvicorn server for an app on a thread of this process, on a free port of 127.0.0.1."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="embedrl-serve", daemon=True)
        self.url = ""

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise EmbedrlError("the server did not start (see the log)")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
