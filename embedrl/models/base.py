"""The one Embedder interface, and the factory that picks a backend from an id or a directory.

Backends are small adapters registered in BACKENDS by name; a saved model directory says
which one it needs in `embedrl.json`, so loading never branches on model names.

Specs `load_embedder` accepts:
  - a directory saved by `save_pretrained` (has `embedrl.json`),
  - `open_clip:ARCH` or `open_clip:ARCH:PRETRAINED_TAG` (e.g. `open_clip:ViT-B-32:openai`),
  - `http(s)://HOST:PORT[#MODEL]`: a model served over HTTP (`embedrl serve`, or another
    OpenAI-compatible embeddings endpoint; `embedrl.models.remote`),
  - any other string: a Hub id or a directory of an HF image-text-to-text model (VLM backend),
    embedded in the format `format=` names (`embedrl.models.formats`), the one its `embedrl.json`
    records, or the one its files identify (an Embed-RL or GME checkpoint); else an error lists them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import ensure_dir, write_json

if TYPE_CHECKING:
    import torch

    from embedrl.core.items import Item
    from embedrl.core.tcot import TCoT

CONFIG_NAME = "embedrl.json"
# LoRA targets for VLM backbones (embedder and reasoner): the language model's projections
# only; vision towers name their layers differently across families.
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

# backend name -> "module:Class"
BACKENDS: dict[str, str] = {
    "vlm": "embedrl.models.vlm_embedder:VLMEmbedder",
    "open_clip": "embedrl.models.clip_embedder:CLIPEmbedder",
    "remote": "embedrl.models.remote:RemoteEmbedder",
}


class Embedder(ABC):
    """Turns Items (plus optional T-CoTs) into L2-normalised float32 vectors.

    A backend implements two steps, shared by inference and training so both see the
    same inputs: `collate` (items + T-CoTs -> a dict of tensors, CPU, no grad) and
    `forward` (that dict -> (B, dim) normalised embeddings, differentiable through
    `self.module`). `encode` runs them batched under `torch.inference_mode`.
    """

    backend: str = ""
    name_or_path: str = ""
    module: torch.nn.Module  # the trainable weights (a Trainer trains exactly this)

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def collate(self, items: Sequence[Item], tcots: Sequence[TCoT | None] | None = None) -> dict[str, Any]:
        """Items (and their T-CoTs, None where absent) -> model inputs for `forward`."""

    @abstractmethod
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Model inputs -> (B, dim) L2-normalised embeddings, differentiable."""

    def bare_forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The underlying model's own forward on `collate`'s output: the baseline `bench encode` compares to."""
        raise NotImplementedError(f"{type(self).__name__} has no bare forward to benchmark against")

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def encode(self, items: Sequence[Item], tcots: Sequence[TCoT | None] | None = None,
               batch_size: int = 32, show_progress: bool | None = None) -> torch.Tensor:
        """Return an (N, dim) float32 tensor on CPU, rows L2-normalised."""
        import torch
        from tqdm.auto import tqdm

        if tcots is not None and len(tcots) != len(items):
            raise EmbedrlError(f"got {len(tcots)} T-CoTs for {len(items)} items")
        if not items:
            return torch.empty(0, self.dim)
        starts = range(0, len(items), batch_size)
        if show_progress is None:
            show_progress = len(starts) > 10
        was_training = self.module.training
        self.module.eval()
        device = self.device
        out = []
        try:
            with torch.inference_mode(), autocast(device):
                for start in tqdm(starts, desc=f"encode ({self.backend})", disable=not show_progress,
                                  unit="batch"):
                    chunk = items[start:start + batch_size]
                    chunk_tcots = None if tcots is None else tcots[start:start + batch_size]
                    batch = to_device(self.collate(chunk, chunk_tcots), device)
                    out.append(self.forward(batch).float().cpu())
        finally:
            self.module.train(was_training)
        return torch.cat(out)

    @abstractmethod
    def save_pretrained(self, path: str | Path) -> None: ...

    @classmethod
    @abstractmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> Embedder: ...

    def embedrl_config(self) -> dict[str, Any]:
        """What goes into `embedrl.json` besides the backend name (format, fusion, ...)."""
        return {}

    def eval_view(self, modality: str, side: str) -> Embedder:
        """This embedder as its family's benchmark harness embeds `side` ("query" / "target") of a
        dataset of registry `modality` (some families use other instructions there); self by default."""
        return self

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
        return self.module.state_dict()


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported); a no-op on CPU."""
    import contextlib

    import torch

    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def backend_class(name: str) -> type[Embedder]:
    if name not in BACKENDS:
        raise EmbedrlError(f"unknown embedder backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def backend_of(spec: str) -> str:
    """The backend a spec loads with: a saved directory's `embedrl.json` says; `open_clip:...`; else "vlm"."""
    path = Path(spec)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return json.loads((path / CONFIG_NAME).read_text()).get("backend", "vlm")
    if spec.startswith("open_clip:"):
        return "open_clip"
    if spec.startswith(("http://", "https://")):
        return "remote"
    if path.exists() and not path.is_dir():
        raise EmbedrlError(f"{spec} is a file; pass a model directory or a Hub id")
    return "vlm"


def load_embedder(spec: str, format: str | None = None, device: str | None = None, **kwargs: Any) -> Embedder:
    """Load an Embedder from a saved directory, an `open_clip:...` spec or a Hub id / VLM directory.

    `format`: the embedding format of a VLM (see `embedrl.models.formats.FORMATS`); `device`:
    where to put it; `dtype` (VLMs): the weights' dtype. Any other keyword is an error."""
    backend = backend_of(spec)
    allowed = {"vlm": {"dtype"}, "open_clip": set(), "remote": {"api_key", "concurrency", "retries", "backoff",
                                                                "timeout"}}.get(backend, set())
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise EmbedrlError(f"load_embedder: unknown keyword(s) {', '.join(unknown)} for the {backend} backend "
                           f"(it takes format, device{''.join(', ' + k for k in sorted(allowed))})")
    if backend in ("vlm", "remote"):  # a remote embedder checks `format` against its server's
        kwargs["format"] = format
    elif format not in (None, backend):
        raise EmbedrlError(f"{spec} is an {backend} model; embedding formats ({format!r}) are for VLM embedders")
    return backend_class(backend).from_pretrained(spec, device=device, **kwargs)
