"""A reasoner behind an OpenAI-compatible chat endpoint (vLLM serving Qwen3-VL, or `embedrl serve --reasoner`).

    reasoner = load_reasoner("http://gpu-box:8000")                        # an embedrl server's reasoner
    reasoner = load_reasoner("openai:http://vllm:8000/v1#Qwen/Qwen3-VL-8B-Instruct")
    tcots = reasoner.generate(items, role="target")                        # as `Reasoner.generate`

It is a `Reasoner` whose generations come from `/v1/chat/completions`: the prompts are built
here with the same `build_messages` (images sent as data URLs in place of their
placeholders), so the server sees the chat an in-process reasoner would; the T-CoT cache,
the modality filter and parsing are the Reasoner's own. Items are sent `concurrency` at a
time (the server batches concurrent requests); each request is retried with backoff and a
dead endpoint raises an `EmbedrlError` after the retries.

Identity (the T-CoT cache key and the index manifest): an embedrl server reports its
reasoner's id and weights hash, so its T-CoTs are cached as the same model's run in-process;
another endpoint is identified by this spec and a hash of the model it reports.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from embedrl.client import Endpoint, image_data_url
from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.models.prompts import DEFAULT_PROMPT_SET, PromptSet, build_messages, get_prompt_set
from embedrl.models.reasoner import Reasoner, check_modalities, open_cache

# `model.generate` sampling arguments and their OpenAI names
_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed"}


def chat_request(item: Item, role: str, prompt_set: PromptSet) -> list[dict[str, Any]]:
    """The reasoner's chat for `item` in OpenAI's form: `build_messages`, images inlined as data URLs."""
    messages, images = build_messages(item, role, load=False, prompt_set=prompt_set)
    pending = iter(images)
    out = []
    for message in messages:
        content = [{"type": "image_url", "image_url": {"url": image_data_url(next(pending))}}
                   if part.get("type") == "image" else part for part in message["content"]]
        out.append({**message, "content": content})
    return out


class RemoteReasoner(Reasoner):
    """Writes T-CoTs through `/v1/chat/completions`; everything around generation is `Reasoner`'s."""

    def __init__(self, spec: str, cache=None, max_new_tokens: int = 128, batch_size: int = 32,
                 modalities: Sequence[str] | None = None, api_key: str | None = None, concurrency: int = 8,
                 prompt_set: str | None = None, **endpoint: Any):
        base, _, model = spec.removeprefix("openai:").partition("#")
        self.endpoint = Endpoint(base, api_key, what="reasoner endpoint", **endpoint)
        entry = self.endpoint.served_model(model, "reasoner")
        self.model_name = entry["id"]
        info = entry.get("embedrl") or {}
        if info.get("kind") == "reasoner":  # the same model's cache entries, wherever it runs
            self.name_or_path, self._weights_hash = str(info["reasoner_id"]), str(info["hash"])
        else:
            self.name_or_path = f"openai:{self.endpoint.root}/v1#{self.model_name}"
            self._weights_hash = hashlib.sha1(json.dumps([entry.get("id"), entry.get("root")]).encode()).hexdigest()[:16]
        # the prompts are built here: the set named, else the one an embedrl server's reasoner was trained with
        self.prompt_set = get_prompt_set(prompt_set or info.get("prompt_set") or DEFAULT_PROMPT_SET)
        self.modalities = check_modalities(modalities)
        self.cache = open_cache(cache)
        self.max_new_tokens, self.batch_size, self.concurrency = max_new_tokens, batch_size, max(1, concurrency)
        self.generated_items = 0

    def generate_text(self, items: Sequence[Item], role: str = "query", num_samples: int = 1,
                      batch_size: int | None = None, max_new_tokens: int | None = None,
                      show_progress: bool | None = None, **sampling: Any) -> list[list[str]]:
        """The raw generations, `num_samples` per item, in input order (greedy unless sampling is asked for)."""
        from tqdm.auto import tqdm

        items = list(items)
        unknown = set(sampling) - set(_SAMPLING) - {"do_sample"}
        if unknown:
            raise EmbedrlError(f"a remote reasoner takes {sorted(_SAMPLING)} and do_sample, not {sorted(unknown)}")
        body: dict[str, Any] = {"model": self.model_name, "n": num_samples,
                                "max_tokens": max_new_tokens or self.max_new_tokens}
        if sampling.pop("do_sample", num_samples > 1):
            body.update({_SAMPLING[k]: v for k, v in sampling.items() if v is not None})
            body.setdefault("temperature", 1.0)
        else:
            body["temperature"] = 0.0

        def one(item: Item) -> list[str]:
            reply = self.endpoint.post("/v1/chat/completions", {**body, "messages": chat_request(item, role, self.prompt_set)})
            choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) != num_samples:
                raise EmbedrlError(f"reasoner endpoint {self.endpoint.root} returned {len(choices)} choices for "
                                   f"n={num_samples}")
            return [(c.get("message") or {}).get("content") or "" for c in choices]

        show = len(items) > self.batch_size if show_progress is None else show_progress
        with ThreadPoolExecutor(min(self.concurrency, max(1, len(items)))) as pool:
            out = list(tqdm(pool.map(one, items), total=len(items), desc=f"T-CoT ({role}, remote)",
                            unit="item", disable=not show))
        self.generated_items += len(items)
        return [[t.strip() for t in texts] for texts in out]

    # -- what needs the weights ---------------------------------------------------------------

    def _weights_elsewhere(self) -> EmbedrlError:
        return EmbedrlError(f"{self.name_or_path} is a remote reasoner: it generates, but this needs the weights; "
                            "load the model directory itself")

    @property
    def device(self):
        raise self._weights_elsewhere()

    def collate_chats(self, chats):
        raise self._weights_elsewhere()

    def complete(self, chats, num_samples=1, max_new_tokens=None, **sampling):
        raise self._weights_elsewhere()

    def save_pretrained(self, path, merge_lora=False):
        raise self._weights_elsewhere()
