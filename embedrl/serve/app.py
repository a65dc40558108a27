"""The HTTP layer of `embedrl serve`: FastAPI routes over a `Service`, errors as JSON, API key, metrics.

    POST /v1/embeddings           OpenAI-compatible (+ vLLM's `messages`, embedrl's content parts)
    POST /v1/search               k-NN over a named index: text and/or image query, filters, T-CoT on/off,
                                  a second stage on/off (`rerank`, with `embedrl serve --rerank`)
    POST /v1/chat/completions     the served reasoner (only with a local `--reasoner`)
    GET  /v1/models  /v1/indexes  /v1/items/{index}  /v1/items/{index}/{item_id}  /v1/media/{index}/{row}
    GET  /health  /metrics

Every refusal is a 4xx JSON error in OpenAI's shape, `{"error": {"message", "type", "param",
"code"}}`, and the server goes on; an unexpected failure is a 500 in the same shape (logged
with its traceback). Bodies are read by `wire.read_json` (size limit first), never by FastAPI's
own unbounded parsing. With an API key, every route but `/health` needs
`Authorization: Bearer KEY` (what the `openai` client sends) or `X-API-Key: KEY`.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from embedrl.core.errors import EmbedrlError
from embedrl.serve.batching import Busy
from embedrl.serve.service import Service
from embedrl.serve.wire import (
    RequestError,
    int_field,
    parse_chat,
    parse_input,
    parse_inputs,
    read_json,
)

logger = logging.getLogger(__name__)

OPEN_ROUTES = ("/health",)


def error_response(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status)


def encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    """A vector as OpenAI sends it: a list of floats, or base64 of little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(vector, dtype=np.float32).tolist()


def build_app(service: Service, api_key: str | None = None):
    """The FastAPI app around a `Service` (its batchers start and stop with the app)."""

    @asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="embedrl", summary="Reasoning-driven multimodal embeddings and search",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    limits, metrics = service.limits, service.metrics

    @app.exception_handler(RequestError)
    async def _refused(request, e: RequestError):
        return error_response(e.status, e.message, e.kind, e.param)

    @app.exception_handler(EmbedrlError)
    async def _user_error(request, e: EmbedrlError):
        return error_response(400, str(e))

    @app.exception_handler(Busy)
    async def _busy(request, e: Busy):
        return error_response(503, str(e), "server_busy")

    @app.exception_handler(HTTPException)
    async def _http(request, e: HTTPException):
        return error_response(e.status_code, str(e.detail), "not_found" if e.status_code == 404 else "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}", param=where or None)

    @app.exception_handler(Exception)
    async def _bug(request, e: Exception):
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error ({type(e).__name__}); see the server log", "server_error")

    app.add_middleware(GuardAndMeasure, api_key=api_key, metrics=metrics)

    # -- health, metrics, models --------------------------------------------------------------

    @app.get("/health")
    async def health():
        counts = await service.on_index_thread(lambda: {n: len(s.current()) for n, s in service.indexes.items()})
        for name, count in counts.items():
            metrics.index_items.labels(name).set(count)
        return {"status": "ok", "model": service.model_name, "fingerprint": service.fingerprint,
                "dim": int(service.embedder.dim), "indexes": counts, "reasoner": service.reasoner_name}

    @app.get("/metrics")
    async def prometheus():
        for batcher in service.batchers:
            metrics.queue_depth.labels(batcher.name).set(batcher.depth)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": service.models()}

    # -- embeddings -----------------------------------------------------------------------------

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await read_json(request, limits)
        model = body.get("model")
        if model is not None and model != service.model_name:
            raise RequestError(f"model {model!r} is not served here; this server serves {service.model_name!r}",
                               404, "not_found", "model")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise RequestError("encoding_format must be float or base64", param="encoding_format")
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != service.embedder.dim:
            raise RequestError(f"this model embeds in {service.embedder.dim} dimensions and cannot shorten them",
                               param="dimensions")
        vectors = await service.embed(parse_inputs(body, limits))
        return JSONResponse({"object": "list", "model": service.model_name,
                             "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, encoding)}
                                      for i, v in enumerate(vectors)],
                             "usage": {"prompt_tokens": 0, "total_tokens": 0}})

    # -- search and the indexes' items ----------------------------------------------------------

    @app.post("/v1/search")
    async def search(request: Request):
        body = await read_json(request, limits)
        if "query" not in body:
            raise RequestError("the request needs `query`: a string, or a list of content parts", param="query")
        item, tcot = parse_input(body["query"], "query", limits)
        k = int_field(body, "k", 10, 1, limits.max_k)
        use_tcot = body.get("use_tcot", True)
        rerank = body.get("rerank", True)
        filters = body.get("filters") or {}
        if not isinstance(use_tcot, bool):
            raise RequestError("`use_tcot` is true or false", param="use_tcot")
        if not isinstance(rerank, bool):
            raise RequestError("`rerank` is true or false", param="rerank")
        if not isinstance(filters, dict):
            raise RequestError("`filters` is an object {field: value or [values]}", param="filters")
        index = body.get("index")
        if index is not None and not isinstance(index, str):
            raise RequestError("`index` is an index name", param="index")
        return JSONResponse(await service.search(index, item, tcot, k, use_tcot, filters, rerank))

    @app.get("/v1/indexes")
    async def indexes():
        return {"object": "list",
                "data": await service.on_index_thread(lambda: [s.describe() for s in service.indexes.values()])}

    @app.get("/v1/items/{index}")
    async def items(index: str, offset: int = 0, limit: int = 50):
        served = service.index(index)
        if offset < 0 or not 1 <= limit <= 1000:
            raise RequestError("offset must be >= 0 and limit from 1 to 1000")
        return {"object": "list", "data": await service.on_index_thread(served.items, offset, limit)}

    @app.get("/v1/items/{index}/{item_id:path}")
    async def item(index: str, item_id: str):
        found = await service.on_index_thread(service.index(index).item, item_id)
        if found is None:
            raise RequestError(f"index {index} has no item {item_id!r}", 404, "not_found")
        return found

    @app.get("/v1/media/{index}/{row}")
    async def media(index: str, row: int, frame: int | None = None):
        png = await service.on_index_thread(service.index(index).media, row, frame)
        return Response(png, media_type="image/png")

    # -- the served reasoner ----------------------------------------------------------------------

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await read_json(request, limits)
        model = body.get("model")
        if service.chat_batcher is None or (model is not None and model != service.reasoner_name):
            raise RequestError(f"no reasoner {model!r} is served here; start the server with --reasoner MODEL"
                               if service.chat_batcher is None else
                               f"model {model!r} is not served here; the reasoner is {service.reasoner_name!r}",
                               404, "not_found", "model")
        n = int_field(body, "n", 1, 1, limits.max_samples)
        max_tokens = int_field(body, "max_tokens", service.chat_reasoner.max_new_tokens, 1, limits.max_new_tokens)
        sampling = _sampling(body)
        if n > 1 and not dict(sampling)["do_sample"]:
            raise RequestError("n > 1 needs sampling: set a temperature above 0", param="n")
        chat = parse_chat(body.get("messages"), limits)
        texts = await service.chat(chat, n, max_tokens, sampling)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": service.reasoner_name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                            for i, t in enumerate(texts)],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}

    return app


class GuardAndMeasure:
    """ASGI middleware: refuses a request without the API key (before its body is read), and counts and
    times every request by its route template. Pure ASGI, so a response streams through untouched."""

    def __init__(self, app, api_key: str | None, metrics):
        self.app, self.api_key, self.metrics = app, api_key, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.api_key and scope["path"] not in OPEN_ROUTES and not authorized(Request(scope), self.api_key):
                await error_response(401, "missing or wrong API key: send Authorization: Bearer KEY",
                                     "authentication_error")(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            label = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(label, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)


def authorized(request: Request, api_key: str) -> bool:
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), api_key.encode())


def _sampling(body: dict[str, Any]) -> tuple:
    """OpenAI sampling fields as `generate` arguments (hashable, to group chats): temperature 0 is greedy."""
    temperature = body.get("temperature", 1.0)
    top_p = body.get("top_p")
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise RequestError(f"`{name}` must be a non-negative number", param=name)
    if not temperature:
        return (("do_sample", False),)
    out = [("do_sample", True), ("temperature", float(temperature))]
    if top_p is not None:
        out.append(("top_p", float(top_p)))
    if body.get("top_k") is not None:
        out.append(("top_k", int_field(body, "top_k", 0, 1, 100_000)))
    return tuple(out)
