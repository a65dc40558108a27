"""A small client for `embedrl serve`, and the HTTP plumbing that remote embedders and reasoners share.

    from embedrl.client import Client
    client = Client("http://127.0.0.1:8000", api_key=None)
    client.health()                                          # model, fingerprint, indexes
    vectors = client.embed([Item(text="a red circle"), Item(image="cat.png")])   # (N, dim) float32
    found = client.search(Item(text="a red circle"), index="photos", k=5)     # hits, query T-CoT, timings
    client.indexes(); client.item("photos", "id-3"); client.media("photos", row=3)

`Endpoint.call` retries connection failures, timeouts, 429 and 5xx answers with exponential
backoff, then raises an `EmbedrlError` naming the endpoint and the last failure (a dead
server fails the run, never silently); any other 4xx is not retried: the server's JSON error
message is raised at once.

The wire form of an item (what `/v1/embeddings` and `/v1/search` take): its text alone as a
string, or a list of content parts: `{"type": "text", "text": ...}`, `{"type": "image_url",
"image_url": {"url": "data:image/png;base64,..."}}` (vLLM's form), and embedrl's own
`{"type": "instruction", "text": ...}`, `{"type": "frames", "frames": [data URLs]}` (a video)
and `{"type": "tcot", "text": "<thinking>...</thinking>..."}` (the item's T-CoT, whose evidence
the embedder reads). Images travel as the file's bytes (a PIL image as PNG), so the server
decodes the same pixels the client would.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import logging
import mimetypes
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import ImageLike, Item
from embedrl.core.tcot import TCoT, render_tcot, usable_tcot

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

API_KEY_ENV = "EMBEDRL_API_KEY"  # the key a server requires, and clients send unless given one
RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_BACKOFF_S = 30.0


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_root(url: str) -> str:
    """The server root of a base URL given with or without its `/v1` (`http://h:8000/v1` -> `http://h:8000`)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EmbedrlError(f"{url!r} is not an http(s) URL")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def error_message(response: httpx.Response) -> str:
    """The message of an error answer: OpenAI's `{"error": {"message": ...}}`, FastAPI's `detail`, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return str(body)[:300]


class Endpoint:
    """An HTTP service at `url`: JSON calls with an API key (default `$EMBEDRL_API_KEY`), retried with backoff
    (see the module docstring)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 300.0, retries: int = 4,
                 backoff: float = 0.5, what: str = "server"):
        import httpx

        self.root = api_root(url)
        api_key = api_key or os.environ.get(API_KEY_ENV) or None
        self.retries, self.backoff, self.what = max(0, int(retries)), float(backoff), what
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.root, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> httpx.Response:
        """One request, retried on connection failures, timeouts, 429 and 5xx; a 2xx answer or an EmbedrlError."""
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(MAX_BACKOFF_S, self.backoff * 2 ** (attempt - 1))
                logger.warning("%s %s%s: %s; retrying in %.1f s (%d of %d)", self.what, self.root, path, last,
                               delay, attempt, self.retries)
                time.sleep(delay)
            try:
                response = self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}: {error_message(response)}"
                continue
            if response.status_code >= 400:
                raise EmbedrlError(f"{self.what} {self.root}{path} refused the request (HTTP "
                                   f"{response.status_code}): {error_message(response)}")
            return response
        raise EmbedrlError(f"{self.what} {self.root}{path} failed after {self.retries + 1} attempt(s) ({last}); "
                           "check that it is running and reachable")

    def served_model(self, model: str, kind: str) -> dict[str, Any]:
        """The `/v1/models` entry named `model`; unnamed, an embedrl server's `kind` ("embedder" or "reasoner"),
        else the endpoint's first model."""
        served = self.get("/v1/models")["data"]
        for entry in served:
            if entry.get("id") == model if model else (entry.get("embedrl") or {}).get("kind", kind) == kind:
                return entry
        raise EmbedrlError(f"{self.root} serves no {kind} {model or ''}; it serves {[m.get('id') for m in served]}")

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("POST", path, json=body).json()


# ---------------------------------------------------------------- the wire form of items

def image_bytes(image: ImageLike) -> tuple[bytes, str]:
    """An image's bytes and media type: a file as it is on disk, an in-memory image as PNG."""
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    try:
        with open(image, "rb") as f:
            data = f.read()
    except OSError as e:
        raise EmbedrlError(f"cannot read image {image}: {e.strerror or e}") from e
    return data, mimetypes.guess_type(str(image))[0] or "application/octet-stream"


def image_data_url(image: ImageLike) -> str:
    data, mime = image_bytes(image)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def tcot_text(tcot: TCoT) -> str:
    """The text a T-CoT travels as: the generation as written when kept, else its canonical rendering."""
    raw = getattr(tcot, "raw", None)
    return raw if isinstance(raw, str) and raw else render_tcot(tcot)


def item_input(item: Item, tcot: TCoT | None = None) -> str | list[dict[str, Any]]:
    """One embeddings input: the item's text alone as a string, else content parts (see the module docstring).

    A T-CoT the embedder would not use (broken, or evidence that does not fit the item) is left
    out, exactly as the embedder would leave it out in-process.
    """
    tcot = usable_tcot(tcot, item)
    if tcot is None and not item.instruction and item.image is None and not item.frames:
        return item.text
    parts: list[dict[str, Any]] = []
    if item.instruction:
        parts.append({"type": "instruction", "text": item.instruction})
    if item.image is not None:
        parts.append({"type": "image_url", "image_url": {"url": image_data_url(item.image)}})
    if item.frames:
        parts.append({"type": "frames", "frames": [image_data_url(f) for f in item.frames]})
    if item.text:
        parts.append({"type": "text", "text": item.text})
    if tcot is not None:
        parts.append({"type": "tcot", "text": tcot_text(tcot)})
    return parts


def decode_embedding(value: str | list[float]) -> np.ndarray:
    """A `data[i].embedding`: a list of floats, or base64 of little-endian float32 bytes."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
    return np.asarray(value, dtype=np.float32)


# ---------------------------------------------------------------- the embedrl server's routes

class Client(Endpoint):
    """The routes of `embedrl serve` (README: "Serving")."""

    def __init__(self, url: str, api_key: str | None = None, **kwargs: Any):
        kwargs.setdefault("what", "embedrl server")
        super().__init__(url, api_key, **kwargs)

    def health(self) -> dict[str, Any]:
        return self.get("/health")

    def models(self) -> list[dict[str, Any]]:
        return self.get("/v1/models")["data"]

    def indexes(self) -> list[dict[str, Any]]:
        return self.get("/v1/indexes")["data"]

    def embed_batch(self, inputs: Sequence[str | list[dict[str, Any]]], model: str | None = None) -> np.ndarray:
        """One `/v1/embeddings` request for wire-form inputs; (N, dim) float32, in input order."""
        body: dict[str, Any] = {"input": list(inputs), "encoding_format": "base64"}
        if model:
            body["model"] = model
        data = sorted(self.post("/v1/embeddings", body)["data"], key=lambda d: d["index"])
        if len(data) != len(inputs):
            raise EmbedrlError(f"{self.what} {self.root} returned {len(data)} embeddings for {len(inputs)} inputs")
        return np.stack([decode_embedding(d["embedding"]) for d in data])

    def embed(self, items: Sequence[Item], tcots: Sequence[TCoT | None] | None = None, batch_size: int = 32,
              concurrency: int = 4, model: str | None = None) -> np.ndarray:
        """Embed items (with their T-CoTs) in requests of `batch_size`, `concurrency` of them in flight."""
        if tcots is not None and len(tcots) != len(items):
            raise EmbedrlError(f"got {len(tcots)} T-CoTs for {len(items)} items")
        tcots = tcots if tcots is not None else [None] * len(items)
        starts = range(0, len(items), max(1, batch_size))

        def one(start: int) -> np.ndarray:
            chunk = [item_input(i, t) for i, t in zip(items[start:start + batch_size], tcots[start:start + batch_size])]
            return self.embed_batch(chunk, model)

        with ThreadPoolExecutor(max(1, min(concurrency, len(starts)))) as pool:
            return np.concatenate(list(pool.map(one, starts)))

    def search(self, query: Item | str, index: str | None = None, k: int = 10, use_tcot: bool = True,
               filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """`/v1/search`: {"index", "query": {"tcot", "evidence"}, "hits": [...], "timings_ms"}."""
        item = Item(text=query) if isinstance(query, str) else query
        body = {"query": item_input(item), "k": int(k), "use_tcot": bool(use_tcot), "filters": filters or {}}
        if index is not None:
            body["index"] = index
        return self.post("/v1/search", body)

    def item(self, index: str, item_id: str) -> dict[str, Any]:
        from urllib.parse import quote

        return self.get(f"/v1/items/{quote(index, safe='')}/{quote(item_id, safe='')}")

    def items(self, index: str, offset: int = 0, limit: int = 50) -> list[dict[str, Any]]:
        from urllib.parse import quote

        return self.get(f"/v1/items/{quote(index, safe='')}", offset=offset, limit=limit)["data"]

    def media(self, index: str, row: int, frame: int | None = None) -> Image.Image:
        """The image of an index row (its `frame`-th frame, from 0, for a video), as the server reads it."""
        from urllib.parse import quote

        response = self.call("GET", f"/v1/media/{quote(index, safe='')}/{int(row)}",
                             params=None if frame is None else {"frame": int(frame)})
        return Image.open(io.BytesIO(response.content)).convert("RGB")
