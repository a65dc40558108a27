"""Shards: the unit of work and of resume of an index build.

The corpus is cut into shards of `shard_size` items; each finished shard is written
atomically (`shards/shard_00012.npy`, then `shard_00012.json`, which marks it complete) and
skipped on a rerun. A shard's contents do not depend on how many processes encode, so N
processes build the same shards as one. `make_item_encoder` turns corpus items into a shard:
target T-CoTs from the shared cache, then the embedder; unreadable items are skipped and listed.

Items appended by `index add` are kept as shards too (`shards/added_000000021.npy` / `.json`,
named by the index row they start at, holding their items and fields), so a rebuild of the
index (another FAISS factory) keeps them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import atomic_write, read_json, write_json
from embedrl.core.items import Item, load_image
from embedrl.core.tcot import TCoT, render_tcot, tcot_usage
from embedrl.core.tcot_cache import ReasonerLike, TCoTCache
from embedrl.data.corpus import Corpus

if TYPE_CHECKING:
    from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)

SHARDS_DIR = "shards"


@dataclass
class EncodedShard:
    """One shard's output: vectors for the kept corpus positions, and what was skipped."""

    vectors: np.ndarray
    rows: list[int]
    tcots: list[str | None]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


# (start, stop) corpus positions -> EncodedShard
ShardEncoder = Callable[[int, int], EncodedShard]


def shard_path(out: str | os.PathLike, i: int, suffix: str) -> Path:
    return Path(out) / SHARDS_DIR / f"shard_{i:05d}{suffix}"


def num_shards(n: int, shard_size: int) -> int:
    return (n + shard_size - 1) // shard_size


def shard_done(out: str | os.PathLike, i: int) -> bool:
    """A shard is complete when its metadata (written after its vectors) exists and agrees with them."""
    meta_path, npy_path = shard_path(out, i, ".json"), shard_path(out, i, ".npy")
    if not (meta_path.is_file() and npy_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
        vectors = np.load(npy_path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return vectors.shape[0] == len(meta.get("rows", ()))


def write_shard(out: str | os.PathLike, i: int, shard: EncodedShard, start: int, stop: int) -> None:
    """The vectors, then the metadata that marks the shard complete (`shard_done`)."""
    with atomic_write(shard_path(out, i, ".npy"), "wb") as f:
        np.save(f, np.ascontiguousarray(shard.vectors, dtype=np.float32))
    write_json(shard_path(out, i, ".json"), {
        "shard": i, "start": start, "stop": stop, "rows": shard.rows, "tcots": shard.tcots,
        "skipped": shard.skipped, "stats": shard.stats})


def read_shard(out: str | os.PathLike, i: int, mmap: bool = True) -> tuple[dict, np.ndarray]:
    meta = read_json(shard_path(out, i, ".json"))
    vectors = np.load(shard_path(out, i, ".npy"), mmap_mode="r" if mmap else None)
    return meta, vectors


ADDED = "added_"


def added_path(out: str | os.PathLike, start: int, suffix: str) -> Path:
    return Path(out) / SHARDS_DIR / f"{ADDED}{start:09d}{suffix}"


def write_added(out: str | os.PathLike, start: int, shard: EncodedShard, items: list[dict[str, Any]],
                fields: list[dict[str, Any]]) -> None:
    """Rows appended at index row `start`: vectors, then the metadata (with the items themselves)."""
    with atomic_write(added_path(out, start, ".npy"), "wb") as f:
        np.save(f, np.ascontiguousarray(shard.vectors, dtype=np.float32))
    write_json(added_path(out, start, ".json"), {
        "start": start, "items": items, "fields": fields, "tcots": shard.tcots, "skipped": shard.skipped,
        "stats": shard.stats})


def added_shards(out: str | os.PathLike) -> list[tuple[int, Path]]:
    """(start row, metadata path) of every appended shard on disk, in row order."""
    found = []
    for meta in (Path(out) / SHARDS_DIR).glob(f"{ADDED}*.json"):
        try:
            found.append((int(meta.stem[len(ADDED):]), meta))
        except ValueError:
            continue
    return sorted(found)


def read_added(meta_path: Path) -> tuple[dict, np.ndarray]:
    return read_json(meta_path), np.load(meta_path.with_suffix(".npy"))


def remove_added(out: str | os.PathLike, from_row: int = 0) -> None:
    """Drop appended shards starting at or after `from_row` (left by an unfinished add, or a replaced build)."""
    for start, meta in added_shards(out):
        if start >= from_row:
            meta.with_suffix(".npy").unlink(missing_ok=True)
            meta.unlink(missing_ok=True)


def encode_shards(out: str | os.PathLike, n: int, shard_size: int, encode: ShardEncoder,
                  rank: int = 0, world_size: int = 1) -> dict[str, int]:
    """Encode this rank's unfinished shards; returns counts of shards encoded and reused."""
    from tqdm.auto import tqdm

    mine = [i for i in range(num_shards(n, shard_size)) if i % world_size == rank]
    todo = [i for i in mine if not shard_done(out, i)]
    if len(todo) < len(mine):
        logger.info("rank %d: %d of %d shard(s) already done, resuming", rank, len(mine) - len(todo), len(mine))
    bar = tqdm(total=sum(min(shard_size, n - i * shard_size) for i in todo), unit="item",
               desc=f"encoding (rank {rank})" if world_size > 1 else "encoding", position=rank,
               disable=None)
    for i in todo:
        start, stop = i * shard_size, min(n, (i + 1) * shard_size)
        t0 = time.perf_counter()
        shard = encode(start, stop)
        shard.stats.update(seconds=round(time.perf_counter() - t0, 3), rank=rank)
        write_shard(out, i, shard, start, stop)
        bar.update(stop - start)
    bar.close()
    return {"encoded": len(todo), "reused": len(mine) - len(todo)}


def _media_problem(item: Item) -> str | None:
    try:
        for media in ([item.image] if item.image is not None else []) + list(item.frames or []):
            load_image(media)
    except EmbedrlError as e:
        return str(e)
    return None


def make_item_encoder(embedder: Embedder, corpus: Corpus, reasoner: ReasonerLike | None = None,
                      cache: TCoTCache | None = None, batch_size: int = 32) -> ShardEncoder:
    """Shard encoder over corpus items: T-CoTs (target role, cached) then the embedder.

    When the reasoner or the embedder fails on a shard, the items' media are checked one by
    one; unreadable ones are skipped (and reported) and the rest encoded. A failure with no
    unreadable item is a real error and propagates.
    """

    if batch_size < 1:
        raise EmbedrlError(f"batch size must be at least 1, not {batch_size} (items per encoder batch)")

    def encode(start: int, stop: int) -> EncodedShard:
        items = corpus.items[start:stop]
        keep = list(range(len(items)))
        skipped: dict[int, str] = {}

        def attempt(fn: Callable[[list[int]], Any]) -> Any:
            nonlocal keep
            try:
                return fn(keep)
            except (EmbedrlError, OSError) as error:
                bad = {i: p for i in keep if (p := _media_problem(items[i]))}
                if not bad:
                    raise
                logger.warning("skipping %d unreadable item(s) in %d-%d (%s)", len(bad), start, stop, error)
                skipped.update(bad)
                keep = [i for i in keep if i not in bad]
                return fn(keep) if keep else None

        tcots: dict[int, TCoT] = {}
        stats: dict[str, Any] = {}
        if reasoner is not None:
            assert cache is not None
            hits, misses = cache.hits, cache.misses
            got = attempt(lambda idx: dict(zip(idx, cache.get_or_generate(
                [items[i] for i in idx], "target", reasoner))))
            tcots = got or {}
            stats.update(tcot_hits=cache.hits - hits, tcot_misses=cache.misses - misses)

        def embed(idx: list[int]) -> tuple[list[int], np.ndarray]:
            t = [tcots[i] for i in idx] if reasoner is not None else None
            x = embedder.encode([items[i] for i in idx], tcots=t, batch_size=batch_size, show_progress=False)
            return list(idx), x.detach().cpu().numpy().astype(np.float32)

        done = attempt(embed)
        rows, vectors = done if done else ([], np.zeros((0, embedder.dim), np.float32))
        if reasoner is not None:
            stats["tcots"] = tcot_usage([items[i] for i in rows], [tcots.get(i) for i in rows])
        return EncodedShard(
            vectors=vectors, rows=[start + i for i in rows],
            tcots=[(tcots[i].raw or render_tcot(tcots[i])) if tcots.get(i) is not None else None for i in rows],
            skipped=[{"pos": start + i, "id": items[i].id, "reason": reason} for i, reason in sorted(skipped.items())],
            stats=stats)

    return encode
