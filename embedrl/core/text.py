"""Comparing short texts the way QA evaluation does (SQuAD v1.1): normalise, then token overlap.

Shared by the FLIP reward (`embedrl.train.egrl.rewards`: token F1 between an inferred and the real
instruction) and the LCR reranker (`embedrl.rerank.lcr`: sampled answers equal after normalising
need no entailment question).
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)  # ASCII only, as SQuAD's script


def normalize_answer(text: str) -> str:
    """Lower case, ASCII punctuation removed, articles a/an/the dropped, whitespace collapsed.

    >>> normalize_answer("  The Red-Circle, on  a TABLE! ")
    'redcircle on table'
    >>> normalize_answer("théâtre: l'an")
    'théâtre lan'
    """
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """Token-level F1 of two texts after `normalize_answer`; 0 when they share no token (or one is empty).

    Tokens count with multiplicity (a word twice in both texts is two matches).

    >>> token_f1("a red circle", "The red circle, left")
    0.8
    >>> token_f1("red red", "red")
    0.6666666666666666
    >>> token_f1("", "red"), token_f1("the", "a")
    (0.0, 0.0)
    """
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(reference).split()
    same = sum((Counter(predicted) & Counter(wanted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(wanted)
    return 2 * precision * recall / (precision + recall)
