"""Chat models for the questions that are not T-CoTs: the rerankers' (LCR's sampled answers and
entailment questions, yes-prob's Yes / No), the FLIP reward's backward model and the process
reward's multiple-choice judge.

    chat = load_chat_model("runs/eg-rl-tiny")                 # a local HF model: a directory or a Hub id
    chat = load_chat_model("openai:http://127.0.0.1:8000/v1#Qwen2-VL-7B-Instruct")   # an endpoint
    chat = HFChat.from_reasoner(reasoner)                     # the weights of a loaded Reasoner, shared
    texts = chat.complete([conversation], n=10, temperature=1.0, max_new_tokens=32)  # n replies each
    probs = chat.first_token_probs([conversation], ["Yes", "No"])   # P(reply starts with each word)

A `Conversation` is chat messages whose content parts hold `{"type": "image"}` placeholders, and
the images in placeholder order: what `embedrl.models.prompts.build_messages` makes. An endpoint
is any OpenAI-compatible `/chat/completions` server (vLLM, TGI, llama.cpp); images travel as PNG
data URLs, and `$OPENAI_API_KEY`, when set, as the bearer token. `cache_key` is (model id, weights
hash): what score caches key on.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import load_image

logger = logging.getLogger(__name__)


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    images: list[Any] = field(default_factory=list)


def text_conversation(text: str) -> Conversation:
    """One user turn of plain text."""
    return Conversation([{"role": "user", "content": [{"type": "text", "text": text}]}])


class ChatModel(Protocol):
    cache_key: tuple[str, str]

    def complete(self, conversations: Sequence[Conversation], n: int = 1, temperature: float = 0.0,
                 max_new_tokens: int = 64, seed: int | None = None) -> list[list[str]]: ...

    def first_token_probs(self, conversations: Sequence[Conversation], words: Sequence[str]) -> list[list[float]]: ...


class HFChat:
    """A Hugging Face image-text-to-text (or causal) model and its processor, answering in-process.

    Batches of `batch_size` conversations (times `n` replies), left padded. The model's mode and
    gradients are left as they are, so the policy being trained can answer too (EG-RL's FLIP reward
    with `flip_model: policy`)."""

    def __init__(self, model, processor, name: str, weights_hash: str | None = None, batch_size: int = 16):
        from embedrl.models.reasoner import module_weights_hash

        self.model, self.processor, self.name, self.batch_size = model, processor, name, batch_size
        self._weights_hash = weights_hash
        self._hash_of = module_weights_hash
        tokenizer = getattr(processor, "tokenizer", processor)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, spec: str | os.PathLike, device: str | None = None, **kwargs: Any) -> HFChat:
        from embedrl.models.hf import load_vlm
        from embedrl.models.reasoner import directory_weights_hash

        model, processor = load_vlm(spec, what="chat model")
        model.eval().requires_grad_(False)
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        path = Path(spec)
        return cls(model, processor, str(path.resolve()) if path.is_dir() else str(spec),
                   directory_weights_hash(path) if path.is_dir() else None, **kwargs)

    @classmethod
    def from_reasoner(cls, reasoner, **kwargs: Any) -> HFChat:
        return cls(reasoner.model, reasoner.processor, reasoner.name_or_path, reasoner.weights_hash, **kwargs)

    @property
    def cache_key(self) -> tuple[str, str]:
        if self._weights_hash is None:
            self._weights_hash = self._hash_of(self.model)
        return (self.name, self._weights_hash)

    def _inputs(self, conversations: Sequence[Conversation]) -> dict[str, Any]:
        texts = [self.processor.apply_chat_template(c.messages, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        images = [load_image(i) for c in conversations for i in c.images]
        kwargs = {"images": images} if images else {}
        batch = self.processor(text=texts, padding=True, padding_side="left", return_tensors="pt", **kwargs)
        device = next(self.model.parameters()).device
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def complete(self, conversations: Sequence[Conversation], n: int = 1, temperature: float = 0.0,
                 max_new_tokens: int = 64, seed: int | None = None) -> list[list[str]]:
        """`n` replies per conversation: sampled at `temperature` (> 0), else greedy."""
        if seed is not None:
            torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0 \
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        out: list[list[str]] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = self._inputs(conversations[start:start + self.batch_size])
            with torch.no_grad():
                generated = self.model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=n,
                                                pad_token_id=self.tokenizer.pad_token_id, **sampling)
            texts = self.tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [[t.strip() for t in texts[i:i + n]] for i in range(0, len(texts), n)]
        return out

    def first_token_probs(self, conversations: Sequence[Conversation], words: Sequence[str]) -> list[list[float]]:
        """The probability that the reply's first token is each word's first token."""
        ids = [self.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
        if len(set(ids)) < len(ids):
            raise EmbedrlError(f"{self.name}: the words {list(words)} start with the same token; choose others")
        out: list[list[float]] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = self._inputs(conversations[start:start + self.batch_size])
            with torch.no_grad():
                logits = self.model(**batch).logits[:, -1].float()
            out += torch.softmax(logits, dim=-1)[:, ids].tolist()
        return out


class EndpointChat:
    """An OpenAI-compatible `/chat/completions` endpoint; one request per conversation."""

    def __init__(self, base_url: str, model: str, timeout: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout = model, timeout
        self.cache_key = (f"openai:{base_url.rstrip('/')}#{model}", "endpoint")

    def _post(self, conversation: Conversation, **body: Any) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        payload = json.dumps({"model": self.model, "messages": openai_messages(conversation), **body}).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url, payload, headers),
                                        timeout=self.timeout) as response:
                return json.load(response)
        except (OSError, ValueError) as e:
            raise EmbedrlError(f"chat endpoint {self.url} failed: {e}") from e

    def complete(self, conversations: Sequence[Conversation], n: int = 1, temperature: float = 0.0,
                 max_new_tokens: int = 64, seed: int | None = None) -> list[list[str]]:
        out = []
        for conversation in conversations:
            reply = self._post(conversation, n=n, temperature=temperature, max_tokens=max_new_tokens,
                               **({} if seed is None else {"seed": seed}))
            try:
                out.append([(c["message"]["content"] or "").strip() for c in reply["choices"]])
            except (KeyError, TypeError) as e:
                raise EmbedrlError(f"chat endpoint {self.url}: no choices[].message.content in its reply") from e
        return out

    def first_token_probs(self, conversations: Sequence[Conversation], words: Sequence[str]) -> list[list[float]]:
        """From the first token's `top_logprobs` (20): a word's probability sums the tokens that spell it
        (case and surrounding spaces ignored); a word not among them counts 0."""
        import math

        out = []
        for conversation in conversations:
            reply = self._post(conversation, max_tokens=1, temperature=0, logprobs=True, top_logprobs=20)
            try:
                top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            except (KeyError, IndexError, TypeError) as e:
                raise EmbedrlError(f"chat endpoint {self.url} returned no logprobs; serve a model that gives "
                                   "top_logprobs (vLLM does)") from e
            out.append([sum(math.exp(t["logprob"]) for t in top if t["token"].strip().lower() == w.lower())
                        for w in words])
        return out


def openai_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The conversation in the OpenAI chat schema: images as PNG data URLs; a text-only turn as a plain string."""
    images = iter(conversation.images)
    out = []
    for message in conversation.messages:
        content = message["content"]
        if isinstance(content, list) and all(part.get("type") == "text" for part in content):
            content = "\n".join(part["text"] for part in content)
        elif isinstance(content, list):
            content = [_image_part(next(images)) if part.get("type") == "image" else part for part in content]
        out.append({"role": message["role"], "content": content})
    return out


def _image_part(image) -> dict[str, Any]:
    buffer = io.BytesIO()
    load_image(image).save(buffer, format="PNG")
    return {"type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}}


def load_chat_model(spec: str | os.PathLike, **kwargs: Any) -> ChatModel:
    """`openai:BASE_URL#MODEL` for an endpoint, else a local model directory or Hub id."""
    spec = str(spec)
    if spec.startswith("openai:"):
        url, sep, model = spec[len("openai:"):].partition("#")
        if not sep or not model or not url:
            raise EmbedrlError(f"an endpoint is written openai:BASE_URL#MODEL, not {spec!r}")
        return EndpointChat(url, model)
    return HFChat.from_pretrained(spec, **kwargs)
