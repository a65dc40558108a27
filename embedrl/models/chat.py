"""Chat models for the questions that are not T-CoTs: the rerankers' (LCR's sampled answers and
entailment questions, yes-prob's Yes / No), the FLIP reward's backward model and the process
reward's multiple-choice judge.

    chat = load_chat_model("runs/eg-rl-tiny")                 # a local model: a directory or a Hub id
    chat = load_chat_model("openai:http://127.0.0.1:8000/v1#Qwen2-VL-7B-Instruct")   # an endpoint
    chat = as_chat_model(reasoner)                            # a loaded Reasoner's weights (or its endpoint)
    texts = chat.complete([text_chat("Name a colour.")], n=10, temperature=1.0, max_new_tokens=32)
    probs = chat.first_token_probs([text_chat("Yes or no?")], ["Yes", "No"])   # P(the reply starts with each)

A chat is what `Reasoner.complete` takes: (messages whose content parts hold `{"type": "image"}`
placeholders, the images in placeholder order). A local model answers through its `Reasoner`
(`complete`, `collate_chats`); an endpoint is any OpenAI-compatible `/v1/chat/completions`
server (vLLM, TGI, `embedrl serve --reasoner`), called through `embedrl.client.Endpoint`
(retries, API key), images as data URLs. `cache_key` is (model id, weights hash): what score
caches key on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from embedrl.core.errors import EmbedrlError

Chat = tuple[list[dict[str, Any]], list[Any]]


def text_chat(text: str) -> Chat:
    """One user turn of plain text."""
    return [{"role": "user", "content": [{"type": "text", "text": text}]}], []


class ChatModel(Protocol):
    cache_key: tuple[str, str]

    def complete(self, chats: Sequence[Chat], n: int = 1, temperature: float = 0.0, max_new_tokens: int = 64,
                 seed: int | None = None) -> list[list[str]]: ...

    def first_token_probs(self, chats: Sequence[Chat], words: Sequence[str]) -> list[list[float]]: ...


class HFChat:
    """A local model, held by a `Reasoner`, answering any chat in batches of `batch_size` chats (x `n` replies).

    Pure multinomial sampling at `temperature` (top-p 1, no top-k), else greedy. The policy being
    trained can answer too (EG-RL's FLIP reward with `flip_model: policy`): the trainer puts it
    back in training mode at every step."""

    def __init__(self, reasoner, batch_size: int = 16):
        self.reasoner, self.batch_size = reasoner, batch_size

    @classmethod
    def from_pretrained(cls, spec: str | os.PathLike, **kwargs: Any) -> HFChat:
        from embedrl.models.reasoner import Reasoner

        reasoner = Reasoner.from_pretrained(spec)
        reasoner.model.requires_grad_(False)
        return cls(reasoner, **kwargs)

    @property
    def cache_key(self) -> tuple[str, str]:
        return self.reasoner.name_or_path, self.reasoner.weights_hash

    def complete(self, chats: Sequence[Chat], n: int = 1, temperature: float = 0.0, max_new_tokens: int = 64,
                 seed: int | None = None) -> list[list[str]]:
        if seed is not None:
            torch.manual_seed(seed)
        sampling = ({"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0
                    else {"do_sample": False})
        out: list[list[str]] = []
        for start in range(0, len(chats), self.batch_size):
            out += self.reasoner.complete(chats[start:start + self.batch_size], num_samples=n,
                                          max_new_tokens=max_new_tokens, **sampling)
        return out

    def first_token_probs(self, chats: Sequence[Chat], words: Sequence[str]) -> list[list[float]]:
        """The probability that the reply's first token is each word's first token."""
        tokenizer = self.reasoner.processor.tokenizer
        ids = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
        if len(set(ids)) < len(ids):
            raise EmbedrlError(f"{self.reasoner.name_or_path}: the words {list(words)} start with the same token; "
                               "choose others")
        out: list[list[float]] = []
        for start in range(0, len(chats), self.batch_size):
            batch = self.reasoner.collate_chats(chats[start:start + self.batch_size])
            with torch.inference_mode():
                logits = self.reasoner.model(**batch).logits[:, -1].float()
            out += torch.softmax(logits, dim=-1)[:, ids].tolist()
        return out


class EndpointChat:
    """An OpenAI-compatible `/v1/chat/completions` endpoint; one request per chat."""

    def __init__(self, url: str, model: str = "", **endpoint: Any):
        from embedrl.client import Endpoint

        self.endpoint = Endpoint(url, what="chat endpoint", **endpoint)
        self.model = model or self.endpoint.served_model("", "reasoner")["id"]
        self.cache_key = (f"openai:{self.endpoint.root}/v1#{self.model}", "endpoint")

    def _post(self, chat: Chat, **body: Any) -> dict[str, Any]:
        return self.endpoint.post("/v1/chat/completions", {"model": self.model, "messages": openai_messages(chat),
                                                           **body})

    def complete(self, chats: Sequence[Chat], n: int = 1, temperature: float = 0.0, max_new_tokens: int = 64,
                 seed: int | None = None) -> list[list[str]]:
        out = []
        for chat in chats:
            reply = self._post(chat, n=n, temperature=temperature, max_tokens=max_new_tokens,
                               **({} if seed is None else {"seed": seed}))
            try:
                out.append([(c["message"]["content"] or "").strip()
                            for c in sorted(reply["choices"], key=lambda c: c.get("index", 0))])
            except (KeyError, TypeError) as e:
                raise EmbedrlError(f"chat endpoint {self.endpoint.root}: no choices[].message.content in its reply") from e
        return out

    def first_token_probs(self, chats: Sequence[Chat], words: Sequence[str]) -> list[list[float]]:
        """From the first token's `top_logprobs` (20): a word's probability sums the tokens that spell it
        (case and surrounding spaces ignored); a word not among them counts 0."""
        out = []
        for chat in chats:
            reply = self._post(chat, max_tokens=1, temperature=0, logprobs=True, top_logprobs=20)
            try:
                top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            except (KeyError, IndexError, TypeError) as e:
                raise EmbedrlError(f"chat endpoint {self.endpoint.root} returned no logprobs; serve a model that "
                                   "gives top_logprobs (vLLM does)") from e
            out.append([sum(math.exp(t["logprob"]) for t in top if t["token"].strip().lower() == w.lower())
                        for w in words])
        return out


def openai_messages(chat: Chat) -> list[dict[str, Any]]:
    """A chat in the OpenAI schema: images as data URLs; a text-only turn as one string (lines joined)."""
    from embedrl.client import image_data_url

    messages, images = chat
    pending = iter(images)
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list) and all(part.get("type") == "text" for part in content):
            content = "\n".join(part["text"] for part in content)
        elif isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": image_data_url(next(pending))}}
                       if part.get("type") == "image" else part for part in content]
        out.append({"role": message["role"], "content": content})
    return out


def load_chat_model(spec: str | os.PathLike, **kwargs: Any) -> ChatModel:
    """`openai:BASE_URL#MODEL` or `http(s)://HOST:PORT[/v1][#MODEL]` for an endpoint, else a local model
    directory or Hub id."""
    spec = str(spec)
    if spec.startswith(("openai:", "http://", "https://")):
        url, _, model = spec.removeprefix("openai:").partition("#")
        return EndpointChat(url, model, **kwargs)
    return HFChat.from_pretrained(spec, **kwargs)


def as_chat_model(model: Any) -> ChatModel:
    """A chat model from a spec, a loaded Reasoner (its weights, or its endpoint when remote), or a chat model."""
    if isinstance(model, (str, os.PathLike)):
        return load_chat_model(model)
    if hasattr(model, "endpoint") and hasattr(model, "model_name"):  # a remote reasoner: ask its endpoint
        return EndpointChat(model.endpoint.root, model.model_name)
    if hasattr(model, "collate_chats"):  # a Reasoner holding its weights
        return HFChat(model)
    return model
