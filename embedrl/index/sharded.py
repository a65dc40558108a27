"""An index in N parts (index shards): trained once, filled part by part, searched as one.

`embedrl index build --index-shards N` writes, beside the manifest:

    index_shards/trained.faiss         the empty trained index (IVF centroids, PQ codebooks)
    index_shards/00000.faiss, ...      part i: a copy of it holding rows [start_i, start_i + count_i)
    index_shards/00000.sqlite, ...     part i's metadata store (global row ids)

and lists the parts in the manifest (`index_shards`: index, store, start, count). Every part is
a copy of one trained index, so the parts share their coarse centroids and codebooks: a vector
gets the same codes whichever part holds it, parts merge exactly, and a part can be filled on
another machine from `trained.faiss` and its encode shards. Building holds one part at a time.

`open_index` (what `Retriever.from_dir` calls) serves the parts as one index, chosen by size:
parts that fit the memory budget together are merged into one (IVF lists moved with
`merge_into`, flat codes with `merge_from`); larger ones, and types FAISS cannot merge (HNSW),
are searched through `faiss.IndexShards` (row ids continue from part to part), each part read
memory-mapped where FAISS can (flat codes) so the OS pages in what searches touch.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import ensure_dir
from embedrl.index import faiss_index as fx
from embedrl.index.store import ItemStore

logger = logging.getLogger(__name__)

PARTS_DIR = "index_shards"
TRAINED_FILE = f"{PARTS_DIR}/trained.faiss"
OPEN_MODES = ("auto", "merge", "shards")


def group_shards(sizes: Sequence[int], parts: int) -> list[list[int]]:
    """Encode shards (by item count) cut into `parts` contiguous groups of about equal item counts."""
    if parts < 1:
        raise EmbedrlError("--index-shards must be at least 1")
    if parts > len(sizes):
        raise EmbedrlError(f"--index-shards {parts} is more than the {len(sizes)} encode shard(s); lower it "
                           "or lower --shard-size (each index shard holds whole encode shards)")
    bounds = np.cumsum([0, *sizes])
    cuts = [0] + [int(np.searchsorted(bounds, bounds[-1] * p / parts)) for p in range(1, parts)] + [len(sizes)]
    for i in range(1, parts):  # every group keeps at least one shard
        cuts[i] = min(max(cuts[i], cuts[i - 1] + 1), len(sizes) - (parts - i))
    return [list(range(a, b)) for a, b in zip(cuts, cuts[1:])]


def write_parts(out: str | os.PathLike, trained, groups: list[list[int]], vectors_of: Callable[[int], np.ndarray],
                rows_of: Callable[[int], tuple[list[dict], list[str | None], list[dict]]],
                gpu: bool = False, folder: str = PARTS_DIR) -> list[dict[str, Any]]:
    """Write the trained index and one part (index + store) per group of encode shards into `folder`; returns
    the parts' entries.

    `vectors_of(shard)`: that shard's vectors; `rows_of(shard)`: its (items, T-CoTs, fields) for the store.
    """
    from tqdm.auto import tqdm

    faiss = fx._faiss()
    out = Path(out)
    shutil.rmtree(out / folder, ignore_errors=True)  # a killed run's parts: no manifest lists this folder
    ensure_dir(out / folder)
    fx.write_index(trained, out / folder / Path(TRAINED_FILE).name)
    entries, start = [], 0
    for p, group in enumerate(tqdm(groups, desc="index shards", unit="part", disable=None)):
        part = fx.to_gpu(faiss.clone_index(trained)) if gpu else faiss.clone_index(trained)
        index_name, store_name = f"{folder}/{p:05d}.faiss", f"{folder}/{p:05d}.sqlite"
        tmp_store = out / f"{store_name}.tmp-{os.getpid()}"
        tmp_store.unlink(missing_ok=True)
        row = start
        with ItemStore(tmp_store) as store:
            for shard in group:
                part.add(fx.normalize(vectors_of(shard)))
                items, tcots, fields = rows_of(shard)
                store.put_many(row, items, tcots, fields)
                row += len(items)
        part = fx.to_cpu(part) if gpu else part
        if part.ntotal != row - start:
            raise EmbedrlError(f"index shard {p}: {part.ntotal} vectors for {row - start} store rows")
        fx.write_index(part, out / index_name)
        os.replace(tmp_store, out / store_name)
        entries.append({"index": index_name, "store": store_name, "start": start, "count": row - start})
        start = row
    return entries


class ShardedStore:
    """The parts' metadata stores read as one `ItemStore` (row ids are global; each part holds a range)."""

    def __init__(self, stores: list[ItemStore], starts: list[int]):
        self.stores, self.starts = stores, starts

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def count(self) -> int:
        return sum(store.count() for store in self.stores)

    def get_many(self, row_ids: Sequence[int]) -> list[dict[str, Any] | None]:
        ids = [int(r) for r in row_ids]
        by_part: dict[int, list[int]] = {}
        for r in ids:
            by_part.setdefault(bisect.bisect_right(self.starts, r) - 1, []).append(r)
        found: dict[int, dict[str, Any] | None] = {}
        for p, rows in by_part.items():
            if p >= 0:
                found.update(zip(rows, self.stores[p].get_many(rows)))
        return [found.get(r) for r in ids]

    def ids(self, limit: int | None = None) -> list[str]:
        out: list[str] = []
        for store in self.stores:
            out += store.ids(None if limit is None else limit - len(out))
            if limit is not None and len(out) >= limit:
                break
        return out


def _merge(parts: list) -> Any:
    """One index holding the parts' vectors in order; RuntimeError for types FAISS cannot merge."""
    faiss = fx._faiss()
    first = parts[0]
    ivf = faiss.try_extract_index_ivf(first) is not None
    for other in parts[1:]:
        if ivf:
            faiss.merge_into(first, other, True)  # shift ids: row ids continue from part to part
        else:
            first.merge_from(other, 0)  # flat codes: ids are positions already
    return first


def open_index(index_dir: str | os.PathLike, manifest: dict[str, Any], mode: str = "auto",
               max_bytes: int | None = None) -> tuple[Any, Any]:
    """(FAISS index, metadata store) of an index directory, whole or in parts (see the module docstring).

    `mode`: `merge` into one index, serve as `shards`, or `auto`: merge when the parts' files
    fit `max_bytes` (default: half of RAM) and FAISS can merge their type.
    """
    if mode not in OPEN_MODES:
        raise EmbedrlError(f"open mode must be one of {', '.join(OPEN_MODES)}, not {mode!r}")
    index_dir = Path(index_dir)
    entries = manifest.get("index_shards")
    if not entries:
        index = fx.read_index(index_dir / manifest.get("index_file", "index.faiss"))
        return index, ItemStore(index_dir / manifest.get("store_file", "store.sqlite"), readonly=True)
    store = ShardedStore([ItemStore(index_dir / e["store"], readonly=True) for e in entries],
                         [int(e["start"]) for e in entries])
    size = sum((index_dir / e["index"]).stat().st_size for e in entries if (index_dir / e["index"]).is_file())
    budget = fx.memory_budget() if max_bytes is None else max_bytes
    if mode == "merge" or (mode == "auto" and size <= budget):
        parts = [fx.read_index(index_dir / e["index"]) for e in entries]
        try:
            index = _merge(parts)
            logger.info("%d index shards (%.1f MB) merged into one index", len(entries), size / 1e6)
            return index, store
        except RuntimeError as e:
            logger.info("index shards served as one (FAISS cannot merge this type: %s)",
                        str(e).strip().splitlines()[-1][:120])
    faiss = fx._faiss()
    index = faiss.IndexShards(int(manifest["dim"]), True, True)  # threaded; ids continue part to part
    for e in entries:
        index.add_shard(fx.read_index(index_dir / e["index"], faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY))
    index.syncWithSubIndexes()
    logger.info("%d index shards (%.1f MB) served as one through IndexShards", len(entries), size / 1e6)
    return index, store
