"""The T-CoT cache: each item is reasoned about once per (reasoner, prompt version, role).

Targets' T-CoTs are expensive (a VLM generation each) and do not depend on the embedder,
so training, indexing and evaluation share one cache: rebuilding an index with a new
embedder generates nothing. The cache is a table of an sqlite file in WAL mode
(`embedrl.core.sqlite_cache`), so many readers and writers from several processes (e.g.
`accelerate launch` ranks) can use it at once; the reranker's scores sit in the same file.

Key: (reasoner id, reasoner weights hash, prompt version, role, item content hash), where
the content hash covers the item's text and its media bytes (not their paths). The value
is the reasoner's raw text; it is parsed with `parse_tcot` on read, so a generation that
was broken stays broken (valid=False) when read back.

Default location: `$EMBEDRL_TCOT_CACHE`, else `$XDG_CACHE_HOME/embedrl/tcot_cache.sqlite`
(`~/.cache/embedrl/...`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.sqlite_cache import KeyedCache
from embedrl.core.tcot import TCoT, parse_tcot, render_tcot

logger = logging.getLogger(__name__)

ROLES = ("query", "target")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tcot (
    reasoner_id TEXT NOT NULL,
    reasoner_hash TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    role TEXT NOT NULL,
    item_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    valid INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (reasoner_id, reasoner_hash, prompt_version, role, item_hash)
)
"""


@runtime_checkable
class ReasonerLike(Protocol):
    """What the cache (and the index) need from a Reasoner.

    - `cache_key`: (reasoner id, weights hash, prompt version) — anything that changes what
      the reasoner would write must change one of them.
    - `generate(items, role=...)`: one parsed `TCoT` per item, in order. If a returned TCoT
      carries the raw generation in a `raw` attribute, that text is cached; otherwise its
      canonical rendering (`render_tcot`) is, with its validity stored beside it.
    """

    cache_key: tuple[str, str, str]

    def generate(self, items: Sequence[Item], role: str = ..., **kwargs: Any) -> list[TCoT]: ...


class CacheKey(NamedTuple):
    reasoner_id: str
    reasoner_hash: str
    prompt_version: str
    role: str
    item_hash: str


def reasoner_key(reasoner: ReasonerLike) -> tuple[str, str, str]:
    key = getattr(reasoner, "cache_key", None)
    if not (isinstance(key, tuple) and len(key) == 3 and all(isinstance(k, str) for k in key)):
        raise EmbedrlError(
            f"{type(reasoner).__name__} has no usable cache_key (expected a tuple "
            "(reasoner id, weights hash, prompt version))")
    return key


class TCoTCache(KeyedCache):
    """sqlite-backed cache of T-CoT texts; counts hits and misses since it was opened."""

    table, schema, what = "tcot", _SCHEMA, "T-CoT cache"

    def get_many(self, keys: Sequence[CacheKey]) -> list[TCoT | None]:
        """The cached T-CoT for each key (None where absent); updates hits/misses."""
        found: dict[CacheKey, TCoT] = {}
        groups: dict[tuple[str, str, str, str], list[str]] = {}
        for k in keys:
            groups.setdefault(tuple(k[:4]), []).append(k.item_hash)
        for prefix, hashes in groups.items():
            rows = self.select(dict(zip(CacheKey._fields[:4], prefix)), "item_hash", hashes,
                               ("text", "valid", "reason"))
            found.update((CacheKey(*prefix, item_hash), _from_row(*row)) for item_hash, row in rows.items())
        out = [found.get(CacheKey(*k)) for k in keys]
        self.count(sum(t is not None for t in out), len(out))
        return out

    def put_many(self, entries: Iterable[tuple[CacheKey, TCoT | str]]) -> int:
        """Store T-CoTs (parsed or raw text); an existing entry is replaced. Returns the count."""
        now = time.time()
        return self.replace((*key, *_to_row(value), now) for key, value in entries)

    def keys_for(self, items: Sequence[Item], role: str, reasoner: ReasonerLike) -> list[CacheKey]:
        if role not in ROLES:
            raise EmbedrlError(f"role must be one of {ROLES}, not {role!r}")
        rid, rhash, version = reasoner_key(reasoner)
        return [CacheKey(rid, rhash, version, role, item.content_hash()) for item in items]

    def get_or_generate(self, items: Sequence[Item], role: str, reasoner: ReasonerLike,
                        **generate_kwargs: Any) -> list[TCoT]:
        """T-CoTs for `items`: cached ones read back, the rest generated once (per distinct item) and stored."""
        keys = self.keys_for(items, role, reasoner)
        cached = self.get_many(keys)
        todo: dict[CacheKey, Item] = {}
        for key, item, tcot in zip(keys, items, cached):
            if tcot is None and key not in todo:
                todo[key] = item
        if todo:
            quiet = generate_kwargs.get("show_progress") is False  # e.g. per training step
            logger.log(logging.DEBUG if quiet else logging.INFO, "T-CoT cache: %d of %d %s item(s) to generate",
                       len(todo), len(items), role)
            generated = reasoner.generate(list(todo.values()), role=role, **generate_kwargs)
            if len(generated) != len(todo):
                raise EmbedrlError(f"reasoner returned {len(generated)} T-CoTs for {len(todo)} items")
            # None: the reasoner leaves the item raw (not a modality it reasons about); nothing to store
            self.put_many((k, t) for k, t in zip(todo, generated) if t is not None)
            new = dict(zip(todo, (None if t is None else _from_row(*_to_row(t)) for t in generated)))
            cached = [t if t is not None else new[k] for k, t in zip(keys, cached)]
        return cached  # type: ignore[return-value]


def _to_row(value: TCoT | str) -> tuple[str, int, str]:
    if isinstance(value, str):
        parsed = parse_tcot(value)
        return value, int(parsed.valid), parsed.reason
    raw = getattr(value, "raw", None)
    text = raw if isinstance(raw, str) and raw else render_tcot(value)
    return text, int(value.valid), value.reason


def _from_row(text: str, valid: int, reason: str) -> TCoT:
    tcot = parse_tcot(text)
    if not valid and tcot.valid:
        tcot.valid, tcot.reason = False, reason or "marked invalid when generated"
    return tcot
