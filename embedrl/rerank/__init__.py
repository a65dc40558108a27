"""Second-stage rerankers: reorder the top k of a first stage (an index search, an evaluation's
ranking) with a chat model that reads the query and each candidate.

    from embedrl.rerank import load_reranker
    reranker = load_reranker("lcr", "runs/eg-rl-tiny", options=["t_query=0.8"])   # or "yes-prob"
    hits = retriever.search(item, k=10, reranker=reranker, rerank_k=10)
    embedrl eval mmeb ... --rerank lcr --rerank-k 10 [--rerank-model SPEC] [--rerank-option KEY=VALUE ...]

- `lcr` (`lcr.py`): the LLM-Confidence Reranker, sampled answers and their agreement; training-free,
  costs K samples per candidate.
- `yes-prob` (`yesprob.py`): P("Yes") to "does this candidate match the query?", one forward pass
  per candidate.
The model is any chat model of `embedrl.models.chat`: the Reasoner (by default the one the index or
the evaluation uses), another local VLM, or an OpenAI-compatible endpoint (`openai:BASE_URL#MODEL`).
Scores are cached (`cache.py`, beside the T-CoT cache). What each gives on the synthetic
benchmark, and what it costs: eval/README.md.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedrl.rerank.base import Reranker
    from embedrl.rerank.cache import ScoreCache

# name -> (module, config class, reranker class); imported when loaded, so naming them costs nothing
RERANKERS: dict[str, tuple[str, str, str]] = {"lcr": ("embedrl.rerank.lcr", "LCRConfig", "LCRReranker"),
                                              "yes-prob": ("embedrl.rerank.yesprob", "YesProbConfig", "YesProbReranker")}


def load_reranker(name: str, model: Any, options: list[str] | None = None,
                  cache: ScoreCache | str | os.PathLike | bool | None = True) -> Reranker:
    """Reranker `name` over `model` (a chat model, a loaded Reasoner, or a spec for
    `embedrl.models.chat.load_chat_model`; a RemoteReasoner asks its endpoint), its config from
    `options` (key=value).

    `cache`: a ScoreCache, a path, True (the default location, beside the T-CoT cache) or None."""
    from embedrl.core.config import build_config
    from embedrl.core.errors import EmbedrlError
    from embedrl.models.chat import as_chat_model
    from embedrl.rerank.cache import ScoreCache

    if name not in RERANKERS:
        raise EmbedrlError(f"unknown reranker {name!r}; choose one of {', '.join(RERANKERS)}")
    module, config_name, reranker_name = RERANKERS[name]
    config_class, reranker_class = (getattr(importlib.import_module(module), n) for n in (config_name, reranker_name))
    config = build_config(config_class, None, options)
    model = as_chat_model(model)  # a loaded Reasoner shares its weights
    if cache is None or cache is False:
        cache = None
    elif not isinstance(cache, ScoreCache):  # (a ScoreCache with no rows is falsy: test for None)
        cache = ScoreCache(None if cache is True else cache)
    return reranker_class(model, config, cache)
