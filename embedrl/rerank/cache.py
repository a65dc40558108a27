"""The rerankers' score cache: each (query) or (query, candidate) is scored once per model and settings.

A table beside the T-CoT cache's, in the same sqlite file by default (`embedrl.core.sqlite_cache`):
an LCR confidence costs K sampled answers and their entailment questions, so an evaluation rerun,
another first stage that brings back the same candidates, or a search repeated from the demo
reads it back instead.

Key: (scorer id, scorer weights hash, settings digest, kind, key), where the settings digest
covers everything that changes the value (prompts, number of samples, temperature, ...) but not
what only reads it (LCR's thresholds), kind is "query" or "pair", and key is the query's content
hash or the pair's. The value is a number; `detail` a JSON object kept for inspection (e.g.
LCR's sampled answers and cluster sizes).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from embedrl.core.items import Item
from embedrl.core.sqlite_cache import KeyedCache

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rerank_score (
    scorer_id TEXT NOT NULL,
    scorer_hash TEXT NOT NULL,
    settings TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value REAL NOT NULL,
    detail TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (scorer_id, scorer_hash, settings, kind, key)
)
"""


def pair_key(query: Item, candidate: Item) -> str:
    return hashlib.sha1(f"{query.content_hash()}|{candidate.content_hash()}".encode()).hexdigest()


class ScoreCache(KeyedCache):
    """sqlite-backed cache of reranker scores; counts hits and misses since it was opened."""

    table, schema, what = "rerank_score", _SCHEMA, "rerank score cache"

    def get_or_compute(self, scope: tuple[str, str, str], kind: str, keys: Sequence[str],
                       compute: Callable[[list[int]], list[tuple[float, dict[str, Any]]]]) -> list[float]:
        """The value for each key: cached ones read back; for the rest `compute(positions)` is called once
        with the position of each missing key's first occurrence and returns (value, detail) for each."""
        prefix = dict(zip(("scorer_id", "scorer_hash", "settings", "kind"), (*scope, kind)))
        found = {key: row[0] for key, row in self.select(prefix, "key", keys, ("value",)).items()}
        self.count(sum(key in found for key in keys), len(keys))
        todo = {key: pos for pos, key in reversed(list(enumerate(keys))) if key not in found}
        if todo:
            positions = sorted(todo.values())
            computed = compute(positions)
            now = time.time()
            self.replace((*scope, kind, keys[pos], float(value), json.dumps(detail), now)
                         for pos, (value, detail) in zip(positions, computed, strict=True))
            found.update((keys[pos], float(value)) for pos, (value, _) in zip(positions, computed))
        return [found[key] for key in keys]
