"""The process reward in FLIP form (after FLIP, arXiv 2602.13551): reference-free, no judge that must
answer multiple choice. A backward model reads a rollout's T-CoT alone and infers a text: by default
the other side of its pair (a target's T-CoT: the query it answers; a query's: the text of its
target), or with `flip_reference: own` the item's own text (FLIP's instruction reconstruction). The
reward is the token F1 of the guess against the real text (`rewards.flip_rewards`).

The prompt asks for FLIP's JSON reply (`INFERRED INSTRUCTION`); a model that does not write JSON is
read as plain text, its tags removed. The backward model is a chat model (`embedrl.models.chat`):
the policy itself, a frozen copy of the starting reasoner, or any local model or endpoint
(`EGRLConfig.flip_model`, loaded by `judge.load_backward_model`).
"""

from __future__ import annotations

import json
import re

from embedrl.core.errors import EmbedrlError
from embedrl.core.tcot import usable_tcot
from embedrl.models.chat import text_chat
from embedrl.train.egrl.rewards import _RolloutReward, flip_rewards
from embedrl.train.egrl.rollouts import RolloutDataset

FLIP_REFERENCES = ("other", "own")
# what the backward model is asked to infer, by the rollout's role and `flip_reference`
_FLIP_TASKS = {
    ("target", "other"): "It was extracted from a candidate item by a retrieval system. Infer the search query "
                         "that this candidate answers best.",
    ("query", "other"): "It was extracted from a search query by a retrieval system. Infer the text of the item "
                        "that answers this query.",
    ("target", "own"): "Infer the text of the item it was extracted from.",
    ("query", "own"): "Infer the search query it was extracted from.",
}
_INFERRED_KEYS = {"inferred instruction", "inferred query", "inferred text", "inferred"}
_TAGS = re.compile(r"<think>.*?</think>|<\|[^>]*\|>|</?[a-z_]+>", re.S)


def flip_prompt(tcot_text: str, role: str, reference: str = "other") -> str:
    """What the backward model reads: the task, the rollout's T-CoT, and FLIP's JSON reply format."""
    return (f"Below is the evidence a reasoner wrote about an item. {_FLIP_TASKS[role, reference]}\n\n"
            f"[Evidence]\n{tcot_text}\n\n[Your inferred text]\nRespond in JSON format: "
            '{"REASONING": "...", "INFERRED INSTRUCTION": "..."}')


def parse_inferred(reply: str) -> str:
    """The text a backward model inferred: the "INFERRED INSTRUCTION" value of a JSON reply (code fences
    and other spellings of the key allowed), else the reply with think blocks and tags removed.

    >>> parse_inferred('```json\\n{"REASONING": "r", "inferred_instruction": "Name the red shape."}\\n```')
    'Name the red shape.'
    >>> parse_inferred("<think>hmm</think>assistant <answer>red circle</answer><|im_end|>")
    'red circle'
    """
    text = re.sub(r"^```(?:json)?|```$", "", reply.strip()).strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key, value in parsed.items():
            if key.lower().replace("_", " ") in _INFERRED_KEYS and isinstance(value, str):
                return value.strip()
    return re.sub(r"^\s*assistant\b", "", _TAGS.sub(" ", reply)).strip()


class FlipReward(_RolloutReward):
    """The process reward in FLIP form: no judge that must answer multiple choice, no reference T-CoT.

    `backward` is a chat model (`embedrl.models.chat`); None until the trainer hands over the policy
    (`flip_model: policy`). A rollout whose T-CoT the embedder cannot use, or whose reference text is
    empty, earns 0."""

    __name__ = "process"

    def __init__(self, dataset: RolloutDataset, backward, reference: str = "other", max_new_tokens: int = 48,
                 temperature: float = 0.0):
        super().__init__(dataset)
        if reference not in FLIP_REFERENCES:
            raise EmbedrlError(f"flip reference must be one of {list(FLIP_REFERENCES)}, not {reference!r}")
        self.backward, self.reference = backward, reference
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def real_text(self, i: int, role: str) -> str:
        """What pair i's `role` rollout should let the backward model infer."""
        side = role if self.reference == "own" else "target" if role == "query" else "query"
        return self.dataset.item(i, side).text.strip()

    def score(self, completions, pair_index, role, **kwargs) -> list[float]:
        items, tcots, texts = self.rollouts(completions, pair_index, role)
        rows = [row for row, (item, t) in enumerate(zip(items, tcots))
                if usable_tcot(t, item) is not None and self.real_text(pair_index[row], role[row])]
        out = [0.0] * len(texts)
        if rows:
            replies = self.backward.complete(
                [text_chat(flip_prompt(texts[row], role[row], self.reference)) for row in rows],
                temperature=self.temperature, max_new_tokens=self.max_new_tokens)
            rewards = flip_rewards([parse_inferred(r[0]) for r in replies],
                                   [self.real_text(pair_index[row], role[row]) for row in rows])
            for row, reward in zip(rows, rewards):
                out[row] = reward
        return out
