"""embedrl: reasoning-driven multimodal embeddings (Embed-RL), from tiny offline presets to real checkpoints.

The public API, stable across releases (everything else is importable, but may move):

    import embedrl
    embedder = embedrl.load_embedder("runs/embedder")         # a saved dir, open_clip:ARCH, a Hub id
    embedder = embedrl.load_embedder("Qwen/Qwen3-VL-Embedding-2B", format="qwen3-vl-embedding")
    reasoner = embedrl.load_reasoner("runs/eg-rl")            # writes T-CoTs for items
    vectors = embedder.encode([embedrl.Item(text="a red circle")])
    hits = embedrl.Retriever.from_dir("runs/index").search(embedrl.Item(text="a red circle"), k=5)
    tcot = embedrl.parse_tcot(text); text = embedrl.render_tcot(tcot)
    config = embedrl.build_config(ConfigClass, "recipe.yaml", ["key=value"])

Importing the package is cheap: the names above are loaded on first use, and heavy
dependencies (torch, transformers, faiss, trl, gradio) only by the modules that need them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "EmbedrlError": "embedrl.core.errors",
    "Item": "embedrl.core.items",
    "Pair": "embedrl.core.items",
    "TCoT": "embedrl.core.tcot",
    "parse_tcot": "embedrl.core.tcot",
    "render_tcot": "embedrl.core.tcot",
    "build_config": "embedrl.core.config",
    "load_embedder": "embedrl.models.base",
    "load_reasoner": "embedrl.models.reasoner",
    "Retriever": "embedrl.index.search",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'embedrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
