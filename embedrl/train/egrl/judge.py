"""The process reward's judge: picks which candidate T-CoT matches a query T-CoT.

Pluggable: any HF image-text-to-text (or causal LM) id/path, run in-process, or an
OpenAI-compatible chat endpoint given as `openai:BASE_URL#MODEL`
(e.g. `openai:http://127.0.0.1:8000/v1#Qwen2-VL-7B-Instruct`). A real VLM answers the
multiple-choice question out of the box; the lab's `embedrl train discriminator` teaches a
tiny preset to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from embedrl.core.errors import EmbedrlError
from embedrl.train.egrl.rewards import parse_choice

logger = logging.getLogger(__name__)


def question_messages(prompt: str) -> list[dict[str, Any]]:
    """The chat turn a discriminator is asked in (training and the process reward alike)."""
    return [{"role": "user", "content": [{"type": "text", "text": prompt}]}]


class HFDiscriminator:
    """A chat model answering the multiple-choice prompt with a letter (greedy, a few tokens)."""

    def __init__(self, name_or_path: str, device: str | None = None, max_new_tokens: int = 4, batch_size: int = 16):
        from embedrl.models.hf import load_vlm

        self.model, self.processor = load_vlm(name_or_path, what="discriminator")
        self.model.eval().requires_grad_(False)
        self.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def choose(self, prompts: Sequence[str], n_candidates: Sequence[int]) -> list[int | None]:
        tok = self.processor.tokenizer
        out: list[int | None] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            texts = [self.processor.apply_chat_template(question_messages(p), tokenize=False,
                                                        add_generation_prompt=True) for p in chunk]
            batch = self.processor(text=texts, padding=True, padding_side="left", return_tensors="pt").to(
                self.model.device)
            with torch.inference_mode():
                generated = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                                pad_token_id=tok.pad_token_id or tok.eos_token_id)
            answers = tok.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [parse_choice(a, n) for a, n in zip(answers, n_candidates[start:start + len(chunk)])]
        return out


class OpenAIDiscriminator:
    """An OpenAI-compatible `/chat/completions` endpoint (vLLM, TGI, llama.cpp server, `embedrl serve`, ...).

    Calls are retried with backoff (`embedrl.client.Endpoint`); a dead endpoint fails the run."""

    def __init__(self, base_url: str, model: str, timeout: float = 60.0):
        from embedrl.client import Endpoint

        self.endpoint = Endpoint(base_url, timeout=timeout, what="discriminator endpoint")
        self.model = model

    def choose(self, prompts: Sequence[str], n_candidates: Sequence[int]) -> list[int | None]:
        out = []
        for prompt, n in zip(prompts, n_candidates):
            reply = self.endpoint.post("/v1/chat/completions", {
                "model": self.model, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": prompt}]})
            try:
                answer = reply["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError) as e:
                raise EmbedrlError(f"discriminator endpoint {self.endpoint.root} answered without a choice: {e}") from e
            out.append(parse_choice(answer or "", n))
        return out


def load_discriminator(spec: str):
    if spec.startswith("openai:"):
        url, sep, model = spec[len("openai:"):].partition("#")
        if not sep or not model:
            raise EmbedrlError("an endpoint discriminator is written openai:BASE_URL#MODEL")
        return OpenAIDiscriminator(url, model)
    return HFDiscriminator(spec)
