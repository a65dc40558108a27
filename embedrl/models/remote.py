"""An embedder behind HTTP: `embedrl serve`, or any OpenAI-compatible `/v1/embeddings` endpoint.

    embedder = load_embedder("http://gpu-box:8000")          # an `embedrl serve` (its one model)
    embedder = load_embedder("http://vllm:8000/v1#my-model")  # another endpoint: #MODEL names the model
    vectors = embedder.encode(items, tcots)                   # the same (N, dim) tensor as in-process

So EG-RL's outcome reward, `index build` and `eval mmeb` can use an embedder that lives on
another GPU or machine. Items travel in embedrl's wire form (`embedrl.client.item_input`),
in requests of `batch_size`, several in flight; each request is retried with backoff, and a
dead endpoint raises an `EmbedrlError` after the retries, so a run fails loudly instead of
scoring with missing vectors.

Identity: an index records its embedder's fingerprint. An `embedrl serve` reports its model's
(the weights hash `Embedder.fingerprint` computes in-process), so an index built through the
server and one built in-process with the same model are interchangeable. Another endpoint
reports none: its fingerprint is `endpoint:` plus a hash of the model name, which a later
search can check against the same endpoint only. Such an endpoint knows nothing of embedrl's
instructions, T-CoT evidence or videos: it embeds plain texts and single images (vLLM's
multimodal `messages` form, one request per image), and anything else is refused.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from embedrl.client import Client, decode_embedding, image_data_url
from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import usable_tcot
from embedrl.models.base import Embedder

if TYPE_CHECKING:
    from embedrl.core.tcot import TCoT

logger = logging.getLogger(__name__)


class RemoteEmbedder(Embedder):
    """The Embedder interface over HTTP; encoding only (training needs the weights in-process)."""

    backend = "remote"

    def __init__(self, url: str, api_key: str | None = None, concurrency: int = 4, format: str | None = None,
                 device: str | None = None, **endpoint: Any):
        """`format`, when given, must be the server's; `device` is the server's business (ignored here)."""
        base, _, model = url.partition("#")
        self.client = Client(base, api_key, what="embedder endpoint", **endpoint)
        self.name_or_path = url
        self.concurrency = concurrency
        self.module = torch.nn.Module()  # no weights here: they live on the server
        entry = self.client.served_model(model, "embedder")
        self.model = entry["id"]
        info = entry.get("embedrl")
        self.speaks_embedrl = isinstance(info, dict)
        if self.speaks_embedrl and info.get("kind") != "embedder":
            raise EmbedrlError(f"{self.model} at {base} is a {info.get('kind')}, not an embedder")
        self.format = info.get("format") if self.speaks_embedrl else None
        if format is not None and format != self.format:
            raise EmbedrlError(f"{base} embeds in the {self.format} format, not {format}; serve the model with "
                               f"`embedrl serve --format {format}` or drop --format")
        if self.speaks_embedrl:
            self._fingerprint, self._dim = str(info["fingerprint"]), int(info["dim"])
        else:
            logger.warning("%s is not an embedrl server: its model's weights cannot be checked, and it embeds "
                           "plain texts and images only", base)
            self._fingerprint = "endpoint:" + hashlib.sha1(self.model.encode()).hexdigest()[:16]
            self._dim = len(self._generic([Item(text="dimension probe")])[0])

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def fingerprint(self) -> str:
        return self._fingerprint

    def state_dict(self) -> dict[str, Any]:
        return {}

    def embedrl_config(self) -> dict[str, Any]:
        return {"format": self.format}  # what an index records and checks

    def encode(self, items: Sequence[Item], tcots: Sequence[TCoT | None] | None = None,
               batch_size: int = 32, show_progress: bool | None = None) -> torch.Tensor:
        """(N, dim) float32 on CPU, rows L2-normalised by the server's model, as in-process `encode`."""
        items = list(items)
        if not items:
            return torch.empty(0, self.dim)
        if self.speaks_embedrl:
            x = self.client.embed(items, tcots, batch_size, self.concurrency, self.model)
        else:
            if tcots is not None and any(usable_tcot(t, i) is not None for i, t in zip(items, tcots)):
                raise EmbedrlError(f"{self.client.root} is not an embedrl server: it cannot embed T-CoT evidence; "
                                   "serve the model with `embedrl serve`")
            x = np.concatenate([self._generic(items[s:s + batch_size]) for s in range(0, len(items), batch_size)])
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def _generic(self, items: Sequence[Item]) -> np.ndarray:
        """Plain OpenAI inputs: texts in one request, each image in vLLM's `messages` form."""
        out: list[np.ndarray | None] = [None] * len(items)
        texts = [k for k, item in enumerate(items) if item.image is None]
        for k, item in enumerate(items):
            if item.instruction or item.frames:
                raise EmbedrlError(f"{self.client.root} is not an embedrl server: it cannot embed instructions or "
                                   "video frames; serve the model with `embedrl serve`")
            if item.image is not None:
                content = [{"type": "image_url", "image_url": {"url": image_data_url(item.image)}}]
                content += [{"type": "text", "text": item.text}] if item.text else []
                out[k] = self._post({"messages": [{"role": "user", "content": content}]})[0]
        if texts:
            for k, vector in zip(texts, self._post({"input": [items[k].text for k in texts]})):
                out[k] = vector
        return np.stack(out)

    def _post(self, body: dict[str, Any]) -> list[np.ndarray]:
        data = self.client.post("/v1/embeddings", {"model": self.model, "encoding_format": "float", **body})["data"]
        return [decode_embedding(d["embedding"]) for d in sorted(data, key=lambda d: d["index"])]

    # -- what needs the weights ---------------------------------------------------------------

    def _weights_elsewhere(self) -> EmbedrlError:
        return EmbedrlError(f"{self.name_or_path} is a remote embedder: it encodes, but training, collating and "
                            "benchmarking need the weights; load the model directory itself")

    def collate(self, items, tcots=None):
        raise self._weights_elsewhere()

    def forward(self, batch):
        raise self._weights_elsewhere()

    def save_pretrained(self, path: str | Path) -> None:
        raise EmbedrlError(f"{self.name_or_path} is a remote embedder: save the model on its server")

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> RemoteEmbedder:
        return cls(name_or_path, **kwargs)
