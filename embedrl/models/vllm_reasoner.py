"""A Reasoner that generates on vLLM's offline engine (GPU): `load_reasoner(spec, backend="vllm")`.

    reasoner = load_reasoner("runs/eg-rl-qwen2vl-2b", backend="vllm", cache=True)
    tcots = reasoner.generate(items, role="target")     # as Reasoner.generate: parsed, cached

Only generation differs from `Reasoner`: each item's chat prompt (`prompts.build_messages`,
rendered with the model's own chat template, as the transformers path renders it) and its
images go to `LLM.generate` as `{"prompt", "multi_modal_data": {"image": [...]}}`, and vLLM
batches them itself (continuous batching, paged attention). Greedy unless sampling is asked
for. Parsing, the `modalities` filter and the T-CoT cache are `Reasoner`'s; the cache key is
the model's (directory hash or Hub commit, prompt version), the transformers Reasoner's for
the same model, so T-CoTs written by either serve the other.

Needs a CUDA GPU, `pip install 'embedrl[vllm]'`, and merged weights (vLLM does not read our
LoRA adapter directories: save the reasoner merged first). vllm is imported only here, and
only when a VLLMReasoner is made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.models.prompts import DEFAULT_PROMPT_SET, build_messages, get_prompt_set
from embedrl.models.reasoner import (
    Reasoner,
    check_modalities,
    model_identity,
    open_cache,
    recorded_prompt_set,
)


class VLLMReasoner(Reasoner):
    """`Reasoner` whose `generate_text` runs on a `vllm.LLM`; `processor` renders the chat template."""

    def __init__(self, llm, processor, name_or_path: str, weights_hash: str, cache=None, max_new_tokens: int = 128,
                 batch_size: int = 32, modalities: Sequence[str] | None = None, seed: int = 0,
                 prompt_set: str = DEFAULT_PROMPT_SET):
        self.llm, self.model, self.processor = llm, None, processor
        self.name_or_path = name_or_path
        self.prompt_set = get_prompt_set(prompt_set)
        self.modalities = check_modalities(modalities)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size  # kept for callers; vLLM schedules its own batches
        self.cache = open_cache(cache)
        self.generated_items = 0
        self._weights_hash = weights_hash
        self.seed = seed

    @property
    def device(self) -> torch.device:
        return torch.device("cuda")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, cache=None, max_images: int = 16,
                        gpu_memory_utilization: float = 0.85, max_model_len: int | None = None, dtype: str = "auto",
                        device: str | None = None, processor_kwargs: dict[str, Any] | None = None,
                        engine_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> VLLMReasoner:
        """Start a vLLM engine on the model. `max_images`: images a prompt may hold (a video's frames);
        `engine_kwargs` go to `vllm.LLM` as they are; `device` must be a CUDA one (or None)."""
        if not torch.cuda.is_available() or (device is not None and not str(device).startswith("cuda")):
            raise EmbedrlError("the vLLM reasoner backend needs a CUDA GPU; on CPU use the default backend (hf)")
        try:
            from vllm import LLM
        except ImportError as e:
            raise EmbedrlError("the vLLM reasoner backend needs vllm: pip install 'embedrl[vllm]'") from e
        from transformers import AutoProcessor

        spec, weights_hash = model_identity(name_or_path)
        if (Path(spec) / "adapter_config.json").is_file():
            raise EmbedrlError(f"{spec} holds LoRA adapters, which vLLM does not load here; save the reasoner with "
                               "merged weights (Reasoner.save_pretrained(path, merge_lora=True)) and use that")
        if weights_hash is None:
            raise EmbedrlError(f"reasoner {spec!r}: no local copy to identify it by (Hub commit or directory); "
                               "download it first or pass its directory")
        processor = AutoProcessor.from_pretrained(spec, **(processor_kwargs or {}))
        llm = LLM(model=spec, limit_mm_per_prompt={"image": max_images}, gpu_memory_utilization=gpu_memory_utilization,
                  max_model_len=max_model_len, dtype=dtype, seed=kwargs.get("seed", 0), **(engine_kwargs or {}))
        kwargs["prompt_set"] = kwargs.get("prompt_set") or recorded_prompt_set(spec)
        return cls(llm, processor, spec, weights_hash, cache=cache, **kwargs)

    def prompt(self, item: Item, role: str) -> dict[str, Any]:
        """vLLM's input for `item` in `role`: the chat-templated prompt and its images."""
        messages, images = build_messages(item, role, prompt_set=self.prompt_set)
        out: dict[str, Any] = {"prompt": self.processor.apply_chat_template(messages, tokenize=False,
                                                                           add_generation_prompt=True)}
        if images:
            out["multi_modal_data"] = {"image": images}
        return out

    def generate_text(self, items: Sequence[Item], role: str = "query", num_samples: int = 1,
                      batch_size: int | None = None, max_new_tokens: int | None = None,
                      show_progress: bool | None = None, **sampling: Any) -> list[list[str]]:
        """The raw generations, `num_samples` per item, in input order (`sampling` as for `Reasoner`)."""
        from vllm import SamplingParams

        items = list(items)
        do_sample = sampling.pop("do_sample", num_samples > 1)
        temperature = sampling.pop("temperature", 1.0)
        params = SamplingParams(n=num_samples, max_tokens=max_new_tokens or self.max_new_tokens,
                                temperature=temperature if do_sample else 0.0,
                                seed=self.seed if do_sample else None,
                                **(sampling if do_sample else {}))
        outputs = self.llm.generate([self.prompt(item, role) for item in items], params,
                                    use_tqdm=bool(show_progress if show_progress is not None else len(items) > 64))
        self.generated_items += len(items)
        return [[c.text.strip() for c in out.outputs] for out in outputs]
