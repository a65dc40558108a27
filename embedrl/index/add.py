"""Append items to a complete index: `add_to_index(index_dir, items, embedder)`.

The index's embedder and reasoner are required (hash checked). Ids the index already holds are
refused, or left out and reported, as the caller chooses. The new rows are kept as shards
(`shards/added_*`, with their items: a rebuild with another factory keeps them), appended to the
store and written to a new index file; the manifest, rewritten last, switches to them, so an
interrupted add leaves the previous index whole and rerunning it gives the same index. Skipped
items (duplicates, unreadable media) go into `build_report.json` with the build's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_json, write_json
from embedrl.core.items import Item
from embedrl.core.tcot_cache import ReasonerLike, TCoTCache
from embedrl.data.corpus import Corpus
from embedrl.index import faiss_index as fx
from embedrl.index.build import (
    MANIFEST,
    REPORT_FILE,
    SHARD_SIZE,
    check_embedder,
    load_manifest,
    now,
    reasoner_info,
    remove_unused,
    versions,
)
from embedrl.index.shards import make_item_encoder, remove_added, write_added
from embedrl.index.store import ItemStore

if TYPE_CHECKING:
    from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)

DUPLICATES = ("refuse", "skip")


def add_to_index(index_dir: str | os.PathLike, items: Corpus | Sequence[Item], embedder: Embedder,
                 reasoner: ReasonerLike | None = None, cache: TCoTCache | str | os.PathLike | None = None,
                 batch_size: int = 32, duplicates: str = "refuse") -> dict[str, Any]:
    """Append items to a complete index (same embedder and reasoner); returns {added, skipped, count}.

    Items whose id the index already holds are refused (`duplicates="refuse"`, nothing is added) or
    left out and reported (`"skip"`).
    """
    if duplicates not in DUPLICATES:
        raise EmbedrlError(f"duplicates must be one of {', '.join(DUPLICATES)}, not {duplicates!r}")
    index_dir = Path(index_dir)
    manifest = load_manifest(index_dir)
    if manifest.get("index_shards"):
        raise EmbedrlError(f"{index_dir} is built in index shards; `index add` does not extend those yet: "
                           "rebuild it over the whole corpus (`embedrl index build ... --overwrite`)")
    check_embedder(manifest, embedder, index_dir)
    if (manifest.get("reasoner") is None) != (reasoner is None) or (
            reasoner is not None and reasoner_info(reasoner) != manifest["reasoner"]):
        raise EmbedrlError(f"the index was built with reasoner {manifest.get('reasoner')}; add items with the same "
                           f"one (got {reasoner_info(reasoner)})")
    corpus = items if isinstance(items, Corpus) else Corpus(list(items))
    count = int(manifest["count"])
    with ItemStore(index_dir / manifest["store_file"], readonly=True) as store:
        taken = set(store.existing_ids([item.id for item in corpus.items], below=count))
    skipped = [{"id": item.id, "reason": "id already in the index"} for item in corpus.items if item.id in taken]
    if taken:
        shown = ", ".join(sorted(taken)[:5]) + (f" (+{len(taken) - 5} more)" if len(taken) > 5 else "")
        if duplicates == "refuse":
            raise EmbedrlError(f"{len(taken)} item id(s) are already in {index_dir}: {shown}. Give the new items ids "
                               "of their own, or pass --duplicates skip to leave them out")
        logger.warning("leaving out %d item(s) already in %s: %s", len(taken), index_dir, shown)
        keep = [i for i, item in enumerate(corpus.items) if item.id not in taken]
        corpus = Corpus([corpus.items[i] for i in keep], [corpus.fields[i] for i in keep], corpus.source, corpus.kind)
    if reasoner is not None and not isinstance(cache, TCoTCache):
        cache = TCoTCache(cache)
    encode = make_item_encoder(embedder, corpus, reasoner, cache, batch_size)  # type: ignore[arg-type]
    remove_added(index_dir, count)  # left by an add that never finished
    shards, start = [], count
    for s in range(0, len(corpus), SHARD_SIZE):
        shard = encode(s, min(len(corpus), s + SHARD_SIZE))
        if not shards:  # the first shard also records the duplicates left out, so a rebuild's report keeps them
            shard.skipped = skipped + shard.skipped
        write_added(index_dir, start, shard, [corpus.items[p].to_dict() for p in shard.rows],
                    [corpus.fields[p] for p in shard.rows])
        shards.append(shard)
        start += len(shard.rows)
    rows = [r for s in shards for r in s.rows]
    if shards:
        skipped = [x for s in shards for x in s.skipped]
    result = {"added": len(rows), "skipped": skipped, "count": count + len(rows)}
    if rows:
        index = fx.read_index(index_dir / manifest["index_file"])
        if index.ntotal != count:
            raise EmbedrlError(f"{index_dir}: index holds {index.ntotal} vectors, manifest says {count}; rebuild it")
        index.add(fx.normalize(np.concatenate([s.vectors for s in shards])))
        with ItemStore(index_dir / manifest["store_file"]) as store:
            store.put_many(count, [corpus.items[p].to_dict() for p in rows],
                           [t for s in shards for t in s.tcots], [corpus.fields[p] for p in rows])
        new_file = f"index.{count + len(rows)}.faiss"
        fx.write_index(index, index_dir / new_file)
        manifest.update(count=count + len(rows), index_file=new_file)
    manifest.update(updated=now(), versions=versions(), skipped=int(manifest.get("skipped", 0)) + len(skipped))
    write_json(index_dir / MANIFEST, manifest)  # the commit point: a kill before it leaves the previous index
    _report_add(index_dir, corpus.source, len(rows), skipped)
    remove_unused(index_dir, manifest)
    logger.info("added %d item(s) to %s (%d skipped); %d vectors now", len(rows), index_dir, len(skipped),
                manifest["count"])
    return result


def _report_add(index_dir: Path, source: str, added: int, skipped: list[dict[str, Any]]) -> None:
    """Record a finished add in `build_report.json`: its skipped items join the build's."""
    path = index_dir / REPORT_FILE
    report = read_json(path) if path.is_file() else {}
    report["skipped"] = list(report.get("skipped") or []) + skipped
    report["skipped_count"] = len(report["skipped"])
    report.setdefault("adds", []).append({"source": source, "added": added, "skipped": len(skipped),
                                          "finished": now()})
    write_json(path, report)
