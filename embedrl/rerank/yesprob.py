"""yes-prob: a pointwise reranker, cheaper than LCR. The model reads the query and one candidate and
is asked whether the candidate matches; the candidate's score is P(Yes) / (P(Yes) + P(No)) over the
reply's first token (one forward pass, no sampling), and the top k are sorted by it, the first
stage's order breaking ties. Over an endpoint the probabilities come from the first token's
`top_logprobs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from embedrl.core.items import Item
from embedrl.rerank.base import Reranked, ScoringReranker, conversation
from embedrl.rerank.cache import pair_key

YES_PROMPT = "Does the candidate match the query? Answer Yes or No."


@dataclass
class YesProbConfig:
    prompt: str = field(default=YES_PROMPT, metadata={"help": "Asked after the query and the candidate."})
    yes: str = field(default="Yes", metadata={"help": "The word that means a match."})
    no: str = field(default="No", metadata={"help": "The word that means no match."})


def yes_probability(p_yes: float, p_no: float) -> float:
    """P(yes) among the two answers; 0.5 when the model gives neither any weight.

    >>> yes_probability(0.25, 0.75), yes_probability(0.0, 0.0)
    (0.25, 0.5)
    """
    total = p_yes + p_no
    return p_yes / total if total > 0 else 0.5


def order_by_score(scores: Sequence[float]) -> list[int]:
    """Positions by descending score; equal scores keep the given (first-stage) order.

    >>> order_by_score([0.2, 0.9, 0.2, 0.5])
    [1, 3, 0, 2]
    """
    return sorted(range(len(scores)), key=lambda i: -scores[i])


class YesProbReranker(ScoringReranker):
    name = "yes-prob"

    def rerank_chunk(self, queries: Sequence[Item], candidates: Sequence[Sequence[Item]],
                     prev_scores: Sequence[Sequence[float]]) -> list[Reranked]:
        cfg = self.config
        pairs = [(i, j) for i, cands in enumerate(candidates) for j in range(len(cands))]

        def score(todo: list[int]) -> list[tuple[float, dict]]:
            probs = self.chat.first_token_probs(
                [conversation(queries[pairs[n][0]], candidates[pairs[n][0]][pairs[n][1]], cfg.prompt) for n in todo],
                [cfg.yes, cfg.no])
            return [(yes_probability(p_yes, p_no), {"p_yes": p_yes, "p_no": p_no}) for p_yes, p_no in probs]

        values = self.cached("pair", [pair_key(queries[i], candidates[i][j]) for i, j in pairs], score)
        out, start = [], 0
        for cands in candidates:
            mine = values[start:start + len(cands)]
            start += len(cands)
            out.append(Reranked(order_by_score(mine), mine))
        return out
