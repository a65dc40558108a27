"""The models EG-RL's process reward asks: the judge of the multiple-choice question (`judge`), and
the backward model of the FLIP form (`flip`).

Both are chat models (`embedrl.models.chat`): any HF image-text-to-text (or causal LM) id/path,
run in-process, or an OpenAI-compatible chat endpoint given as `openai:BASE_URL#MODEL`
(e.g. `openai:http://127.0.0.1:8000/v1#Qwen2-VL-7B-Instruct`). A real VLM answers the
multiple-choice question out of the box; the lab's `embedrl train discriminator` teaches a
tiny preset to. The backward model is the policy itself, a frozen copy of the starting
reasoner, or any such model (`EGRLConfig.flip_model`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from embedrl.models.chat import ChatModel, load_chat_model, text_chat
from embedrl.train.egrl.rewards import parse_choice

logger = logging.getLogger(__name__)


def question_messages(prompt: str) -> list[dict[str, Any]]:
    """The chat turn a discriminator is asked in (training and the process reward alike)."""
    return text_chat(prompt)[0]


class Discriminator:
    """A chat model answering the multiple-choice prompt with a letter (greedy, a few tokens)."""

    def __init__(self, chat: ChatModel, max_new_tokens: int = 4):
        self.chat, self.max_new_tokens = chat, max_new_tokens

    def choose(self, prompts: Sequence[str], n_candidates: Sequence[int]) -> list[int | None]:
        replies = self.chat.complete([text_chat(p) for p in prompts], max_new_tokens=self.max_new_tokens)
        return [parse_choice(r[0], n) for r, n in zip(replies, n_candidates, strict=True)]


def load_discriminator(spec: str) -> Discriminator:
    return Discriminator(load_chat_model(spec))


def load_backward_model(spec: str, reasoner: str) -> ChatModel | None:
    """FLIP's backward model: `frozen` (a copy of the starting reasoner `reasoner`), a model spec, or
    None for `policy` (the trainer hands over the policy once it is built)."""
    if spec == "policy":
        return None
    return load_chat_model(reasoner if spec == "frozen" else spec)
