"""The one Embedder interface, and the factory that picks a backend from an id or a directory.

Backends are small adapters registered in BACKENDS by name; a saved model directory says
which one it needs in `embedrl.json`, so loading never branches on model names.

Specs `load_embedder` accepts:
  - a directory saved by `save_pretrained` (has `embedrl.json`),
  - `open_clip:ARCH` or `open_clip:ARCH:PRETRAINED_TAG` (e.g. `open_clip:ViT-B-32:openai`),
  - any other string: a Hub id or a directory of an HF image-text-to-text model (VLM backend).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedrl.errors import EmbedrlError
from embedrl.io import ensure_dir, write_json

if TYPE_CHECKING:
    import torch

    from embedrl.items import Item
    from embedrl.tcot import TCoT

CONFIG_NAME = "embedrl.json"

# backend name -> "module:Class"
BACKENDS: dict[str, str] = {
    "vlm": "embedrl.models.vlm_embedder:VLMEmbedder",
    "open_clip": "embedrl.models.clip_embedder:CLIPEmbedder",
}


class Embedder(ABC):
    """Turns Items (plus optional T-CoTs) into L2-normalised float32 vectors."""

    backend: str = ""
    name_or_path: str = ""

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def encode(self, items: Sequence[Item], tcots: Sequence[TCoT | None] | None = None,
               batch_size: int = 32, show_progress: bool | None = None) -> torch.Tensor:
        """Return an (N, dim) float32 tensor on CPU, rows L2-normalised."""

    @abstractmethod
    def save_pretrained(self, path: str | Path) -> None: ...

    @classmethod
    @abstractmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> Embedder: ...

    def embedrl_config(self) -> dict[str, Any]:
        """What goes into `embedrl.json` besides the backend name (pooling, fusion, ...)."""
        return {}

    def write_embedrl_config(self, path: str | Path) -> None:
        ensure_dir(path)
        write_json(Path(path) / CONFIG_NAME, {"backend": self.backend, **self.embedrl_config()})

    def fingerprint(self) -> str:
        """A hash of the weights: indexes record it and refuse a different model."""
        h = hashlib.sha1()
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()  # type: ignore[attr-defined]


def backend_class(name: str) -> type[Embedder]:
    if name not in BACKENDS:
        raise EmbedrlError(f"unknown embedder backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_embedder(spec: str, **kwargs: Any) -> Embedder:
    """Load an Embedder from a saved directory, an `open_clip:...` spec or a Hub id / VLM directory."""
    path = Path(spec)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        config = json.loads((path / CONFIG_NAME).read_text())
        return backend_class(config.get("backend", "vlm")).from_pretrained(str(path), **kwargs)
    if spec.startswith("open_clip:"):
        return backend_class("open_clip").from_pretrained(spec, **kwargs)
    if path.exists() and not path.is_dir():
        raise EmbedrlError(f"{spec} is a file; pass a model directory or a Hub id")
    return backend_class("vlm").from_pretrained(spec, **kwargs)
