"""Hard-negative mining for a pairs file with a trained Embedder (a utility, apart from training).

For each pair, the candidates are the distinct positives of the pairs in the same dataset
(so a VQA question gets other answers, a caption gets other images). A candidate is a
likely *false* negative (a paraphrase of the positive, a duplicate image) when its
similarity to the query is above `sim(query, positive) - margin`; those are skipped, and
the top `k` of the rest are appended to the pair's `neg_*` fields. The Embed-RL paper
trains with in-batch negatives only and names the lack of mining as a limitation.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import iter_jsonl, write_jsonl
from embedrl.data.pairs import as_list, pair_from_row
from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)

TARGET_FIELDS = ("pos_text", "pos_image_path", "pos_frames")


def _target_key(row: dict[str, Any]) -> tuple:
    return tuple(str(row.get(f) or "") for f in TARGET_FIELDS)


def _append(row: dict[str, Any], field: str, values: list) -> None:
    row[field] = as_list(row.get(field)) + values


def mine_hard_negatives(embedder: Embedder, pairs_path: str | Path, out_path: str | Path,
                        root: str | Path | None = None, k: int = 3, margin: float = 0.05,
                        batch_size: int = 64) -> dict[str, Any]:
    """Write `out_path`: the pairs of `pairs_path` with up to `k` mined negatives appended each."""
    root = Path(pairs_path).parent if root is None else Path(root)
    rows = [row for _, row in iter_jsonl(pairs_path)]
    if not rows:
        raise EmbedrlError(f"{pairs_path}: no pairs to mine for")
    by_dataset: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_dataset[str(row.get("dataset") or "")].append(i)
    stats = {"pairs": len(rows), "mined": 0, "skipped_false_negatives": 0, "k": k, "margin": margin}
    for name, idx in by_dataset.items():
        pairs = [pair_from_row(rows[i], root) for i in idx]
        pool_keys: dict[tuple, int] = {}
        pool_rows: list[dict] = []
        pool_items = []
        for i, pair in zip(idx, pairs):
            key = _target_key(rows[i])
            if key not in pool_keys:
                pool_keys[key] = len(pool_rows)
                pool_rows.append(rows[i])
                pool_items.append(pair.pos)
        if len(pool_items) < 2:
            logger.info("dataset %r: a single distinct target, nothing to mine", name)
            continue
        queries = embedder.encode([p.query for p in pairs], batch_size=batch_size)
        targets = embedder.encode(pool_items, batch_size=batch_size)
        sims = queries @ targets.T
        own = torch.tensor([pool_keys[_target_key(rows[i])] for i in idx])
        pos_sim = sims[torch.arange(len(idx)), own]
        too_close = sims > (pos_sim - margin).unsqueeze(1)
        too_close[torch.arange(len(idx)), own] = True
        stats["skipped_false_negatives"] += int(too_close.sum()) - len(idx)
        ranked = sims.masked_fill(too_close, float("-inf")).topk(min(k, len(pool_items) - 1), dim=1)
        for row_i, (scores, cand) in zip(idx, zip(ranked.values, ranked.indices)):
            picks = [pool_rows[c] for s, c in zip(scores.tolist(), cand.tolist()) if s != float("-inf")]
            if not picks:
                continue
            row = rows[row_i]
            had = max(len(as_list(row.get(f))) for f in ("neg_text", "neg_image_path", "neg_frames"))
            if row.get("neg_tcot") or any(p.get("pos_tcot") for p in picks):  # one annotation (or null) per negative
                row["neg_tcot"] = (as_list(row.get("neg_tcot")) or [None] * had) + [p.get("pos_tcot") for p in picks]
            _append(row, "neg_text", [p.get("pos_text") or "" for p in picks])
            _append(row, "neg_image_path", [p.get("pos_image_path") or "" for p in picks])
            if any(p.get("pos_frames") for p in picks):
                _append(row, "neg_frames", [p.get("pos_frames") or [] for p in picks])
            stats["mined"] += len(picks)
    write_jsonl(out_path, rows)
    logger.info("mined %d negatives for %d pairs (%d likely false negatives skipped) -> %s",
                stats["mined"], len(rows), stats["skipped_false_negatives"], out_path)
    return stats
