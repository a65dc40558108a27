"""LCR, the LLM-Confidence Reranker (arXiv 2602.13571): reranks a first stage's top k by how sure a
chat model is of its answer to the query when it reads each candidate. Training-free; no logits.

1. Confidence, MSCP (maximum semantic cluster proportion): K answers sampled at temperature 1,
   grouped into clusters of answers that entail each other both ways (the same model judges);
   confidence = the largest cluster's share of the K. C(q) samples from the query alone, C(q, d)
   from the query with candidate d.
2. Bins: +1 where C(q, d) >= t_upper, -1 where C(q, d) <= t_lower, else 0.
3. Order: where C(q) >= t_query the first stage's order stands (the model answers without the
   candidates, so their confidence says little); otherwise a stable sort by bin, so within a bin
   the first stage's order stands. t_query = 0 never reorders (the paper's safe lower bound);
   t_query above 1 reorders every query.

The paper does not publish its prompts or its tuned thresholds (grid-searched per dataset); ours
are our own and configurable (`LCRConfig`, `--rerank-option key=value`):
- the defaults t_query 0.9, t_upper 0.7, t_lower 0.3 are a starting point, not tuned values;
- an answer is the text inside <answer>...</answer> when a reply has one (a Reasoner answers in
  T-CoTs), else the reply; answers equal after SQuAD normalisation share a cluster without a
  question (any judge would say so), and `entailment: exact` stops there (no questions at all);
- the query's pair confidences are skipped when its C(q) keeps the first stage's order.
Cost: per query K samples, plus K per candidate reranked (unless the order is kept), plus up to
2 x K x clusters short entailment questions per sampled input; scores are cached (`ScoreCache`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from embedrl.core.items import Item
from embedrl.core.text import normalize_answer
from embedrl.models.chat import Chat, text_chat
from embedrl.rerank.base import Reranked, ScoringReranker, conversation, item_text
from embedrl.rerank.cache import pair_key

ANSWER_PROMPT = "Answer the query above as briefly as possible, in a few words."
CANDIDATE_PROMPT = "Using the candidate, answer the query above as briefly as possible, in a few words."
ENTAILMENT_PROMPT = ('We are evaluating answers to the query "{question}".\nAnswer 1: {first}\nAnswer 2: {second}\n'
                     "Does Answer 1 semantically entail Answer 2? Reply with one word: entailment, contradiction "
                     "or neutral.")
ENTAILMENT_TOKENS = 8  # enough for the label, for byte-level tokenizers too
THRESHOLDS = ("t_query", "t_upper", "t_lower")  # read the cached confidences; do not change them

Judge = Callable[[list[tuple[str, str, str]]], list[bool]]


@dataclass
class LCRConfig:
    samples: int = field(default=10, metadata={"help": "K: answers sampled per input (the paper's 10)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (the paper's 1)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest sampled answer (tokens)."})
    t_query: float = field(default=0.9, metadata={
        "help": "Queries with C(q) at or above it keep the first stage's order (0: never rerank; above 1: always)."})
    t_upper: float = field(default=0.7, metadata={"help": "C(q, d) at or above it: bin +1."})
    t_lower: float = field(default=0.3, metadata={"help": "C(q, d) at or below it: bin -1."})
    entailment: str = field(default="llm", metadata={
        "help": "`llm`: the model judges bidirectional entailment between distinct answers; `exact`: answers "
                "cluster only when equal after normalising (no questions)."})
    answer_prompt: str = field(default=ANSWER_PROMPT, metadata={"help": "Asked after the query alone."})
    candidate_prompt: str = field(default=CANDIDATE_PROMPT, metadata={"help": "Asked after the query and a candidate."})
    entailment_prompt: str = field(default=ENTAILMENT_PROMPT, metadata={
        "help": "Entailment question, with {question}, {first} and {second}."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling (per model batch)."})

    def __post_init__(self):
        if self.samples < 1 or self.max_new_tokens < 1:
            raise ValueError("samples and max_new_tokens must be at least 1")
        if not 0 <= self.t_lower <= self.t_upper <= 1 or self.t_query < 0:
            raise ValueError(f"thresholds need 0 <= t_lower <= t_upper <= 1 and t_query >= 0, not t_lower "
                             f"{self.t_lower}, t_upper {self.t_upper}, t_query {self.t_query}")
        if self.entailment not in ("llm", "exact"):
            raise ValueError(f"entailment must be llm or exact, not {self.entailment!r}")


_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)


def extract_answer(reply: str) -> str:
    """The answer in a reply: inside <answer> tags, else after a closing </think>, else all of it.

    >>> extract_answer('<thinking>{"text_keywords": ["red"]}</thinking><rethink>r</rethink><answer> red circle</answer>')
    'red circle'
    >>> extract_answer("<think>hmm</think> Paris"), extract_answer("Paris.")
    ('Paris', 'Paris.')
    """
    found = _ANSWER.search(reply)
    if found:
        return found.group(1).strip()
    return reply.rpartition("</think>")[2].strip()


def parse_entailment(reply: str) -> bool:
    """Whether a judge's reply says entailment: the first of the three labels it names ("entails",
    "contradicts" count too); a reply naming none is neutral.

    >>> parse_entailment("Entailment."), parse_entailment("neutral, not entailment"), parse_entailment("It entails")
    (True, False, True)
    >>> parse_entailment("yes")
    False
    """
    for word in normalize_answer(reply).split():
        for stem in ("entail", "contradict", "neutral"):
            if word.startswith(stem):
                return stem == "entail"
    return False


def semantic_clusters(answer_lists: Sequence[Sequence[str]], questions: Sequence[str],
                      judge: Judge | None = None) -> list[list[int]]:
    """Cluster sizes for each input's answers, clusters in order of their first answer.

    Answers equal after `normalize_answer` share a cluster without a question. With a `judge` (given
    [(question, answer 1, answer 2)], whether each answer 1 entails its answer 2), each further
    distinct answer joins the first cluster whose representative (its first answer) it entails and
    is entailed by, else starts one: the paper's greedy clustering, asked in rounds so that one
    batch holds every input's questions.

    >>> semantic_clusters([["Red.", "red", "a red", "blue", "crimson"]], ["colour?"])
    [[3, 1, 1]]
    >>> same = lambda asks: [{a, b} <= {"red", "crimson"} for _, a, b in asks]
    >>> semantic_clusters([["red", "blue", "crimson"]], ["colour?"], judge=same)
    [[2, 1]]
    """
    distinct: list[list[list[Any]]] = []  # per input: [first answer, count] per normalised answer
    for answers in answer_lists:
        groups: dict[str, list[Any]] = {}
        for answer in answers:
            groups.setdefault(normalize_answer(answer), [answer, 0])[1] += 1
        distinct.append(list(groups.values()))
    if judge is None:
        return [[count for _, count in groups] for groups in distinct]
    clusters: list[list[list[Any]]] = [[] for _ in distinct]  # per input: [representative, size]
    for r in range(max((len(d) for d in distinct), default=0)):
        asks, asked = [], []
        for i, groups in enumerate(distinct):
            if r < len(groups):
                for c, (representative, _) in enumerate(clusters[i]):
                    asks += [(questions[i], groups[r][0], representative), (questions[i], representative, groups[r][0])]
                    asked.append((i, c))
        verdicts = judge(asks) if asks else []
        joins: dict[int, int] = {}
        for n, (i, c) in enumerate(asked):
            if i not in joins and verdicts[2 * n] and verdicts[2 * n + 1]:
                joins[i] = c
        for i, groups in enumerate(distinct):
            if r < len(groups):
                if i in joins:
                    clusters[i][joins[i]][1] += groups[r][1]
                else:
                    clusters[i].append(list(groups[r]))
    return [[size for _, size in found] for found in clusters]


def mscp(cluster_sizes: Sequence[int]) -> float:
    """Maximum semantic cluster proportion: the largest cluster's share of the answers.

    >>> mscp([3, 1, 1]), mscp([5]), mscp([])
    (0.6, 1.0, 0.0)
    """
    return max(cluster_sizes) / sum(cluster_sizes) if cluster_sizes else 0.0


def confidence_bin(confidence: float, t_upper: float, t_lower: float) -> int:
    """+1 at or above `t_upper`, -1 at or below `t_lower`, else 0.

    >>> [confidence_bin(c, 0.7, 0.3) for c in (0.7, 0.69, 0.31, 0.3)]
    [1, 0, 0, -1]
    """
    return 1 if confidence >= t_upper else -1 if confidence <= t_lower else 0


def lcr_order(bins: Sequence[int], query_confidence: float, t_query: float) -> list[int]:
    """Positions of a list given in the first stage's order, reranked: kept where the query's
    confidence reaches `t_query`, else a stable sort by bin (best first).

    >>> lcr_order([0, -1, 1, 0, 1], query_confidence=0.5, t_query=0.9)
    [2, 4, 0, 3, 1]
    >>> lcr_order([0, -1, 1], query_confidence=0.9, t_query=0.9)
    [0, 1, 2]
    """
    if query_confidence >= t_query:
        return list(range(len(bins)))
    return sorted(range(len(bins)), key=lambda i: -bins[i])


class LCRReranker(ScoringReranker):
    """LCR over any chat model (`embedrl.models.chat`): a Reasoner, another local VLM, an endpoint."""

    name = "lcr"

    def judge(self, asks: list[tuple[str, str, str]]) -> list[bool]:
        prompt = self.config.entailment_prompt
        replies = self.chat.complete([text_chat(prompt.format(question=q, first=a, second=b))
                                      for q, a, b in asks], max_new_tokens=ENTAILMENT_TOKENS)
        return [parse_entailment(r[0]) for r in replies]

    def confidences(self, conversations: list[Chat], questions: list[str]) -> list[tuple[float, dict]]:
        """MSCP of each input, with its answers and cluster sizes."""
        cfg = self.config
        replies = self.chat.complete(conversations, n=cfg.samples, temperature=cfg.temperature,
                                     max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        answers = [[extract_answer(r) for r in per_input] for per_input in replies]
        sizes = semantic_clusters(answers, questions, self.judge if cfg.entailment == "llm" else None)
        return [(mscp(s), {"answers": a, "clusters": s}) for a, s in zip(answers, sizes)]

    def rerank_chunk(self, queries: Sequence[Item], candidates: Sequence[Sequence[Item]],
                     prev_scores: Sequence[Sequence[float]]) -> list[Reranked]:
        cfg = self.config
        questions = [item_text(q) for q in queries]
        query_conf = self.cached("query", [q.content_hash() for q in queries], lambda todo: self.confidences(
            [conversation(queries[i], None, cfg.answer_prompt) for i in todo], [questions[i] for i in todo]),
            leave_out=THRESHOLDS)
        pairs = [(i, j) for i, q in enumerate(queries) if query_conf[i] < cfg.t_query for j in range(len(candidates[i]))]
        pair_conf = self.cached("pair", [pair_key(queries[i], candidates[i][j]) for i, j in pairs],
                                lambda todo: self.confidences(
                                    [conversation(queries[pairs[n][0]], candidates[pairs[n][0]][pairs[n][1]],
                                                  cfg.candidate_prompt) for n in todo],
                                    [questions[pairs[n][0]] for n in todo]), leave_out=THRESHOLDS)
        by_query: dict[int, list[float]] = {}
        for (i, _), c in zip(pairs, pair_conf):
            by_query.setdefault(i, []).append(c)
        out = []
        for i, cands in enumerate(candidates):
            if i not in by_query:  # confident query (or nothing to rerank): the first stage's order
                out.append(Reranked(list(range(len(cands))), [], {"query_confidence": query_conf[i], "kept": True}))
                continue
            bins = [confidence_bin(c, cfg.t_upper, cfg.t_lower) for c in by_query[i]]
            out.append(Reranked(lcr_order(bins, query_conf[i], cfg.t_query), [float(b) for b in bins],
                                {"query_confidence": query_conf[i], "confidences": by_query[i], "kept": False}))
        return out
