"""Training data for the Embedder: pairs, per-dataset batches, and the collator.

Every batch a process sees comes from one dataset (as the MMEB training recipes do), with
datasets drawn by weight; in-batch negatives are then same-task negatives, which is what
makes them informative. The collator turns pairs into backend inputs in chunks, so the
GradCache path and the plain path share it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset, Sampler

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, Pair, sample_frames
from embedrl.core.tcot import TCoT, parse_tcot
from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)


class PairDataset(Dataset):
    def __init__(self, pairs: Sequence[Pair]):
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Pair:
        return self.pairs[i]

    def by_dataset(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, pair in enumerate(self.pairs):
            groups[pair.dataset].append(i)
        return dict(sorted(groups.items()))


class DatasetBatchSampler(Sampler[list[int]]):
    """Yields batches of indices, each from a single dataset, datasets drawn by weight.

    An epoch has as many batches as the datasets fill (`ceil(n_d / batch_size)` summed); each
    batch picks a dataset with probability proportional to its weight (default: its number of
    batches, i.e. uniform over pairs) and takes that dataset's next shuffled batch, reshuffling
    a dataset when it runs out. Deterministic for (seed, epoch), so a resumed run replays it.
    """

    def __init__(self, groups: dict[str, list[int]], batch_size: int, weights: dict[str, float] | None = None,
                 seed: int = 0):
        self.groups = {k: v for k, v in groups.items() if v}
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        n_batches = {k: -(-len(v) // batch_size) for k, v in self.groups.items()}
        self.length = sum(n_batches.values())
        unknown = set(weights or {}) - set(self.groups)
        if unknown:
            raise EmbedrlError(f"dataset_weights name unknown datasets: {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(self.groups)}")
        self.weights = {k: float((weights or {}).get(k, n_batches[k] if not weights else 0.0))
                        for k in self.groups}
        if not any(self.weights.values()):
            raise EmbedrlError("dataset_weights gives every dataset weight 0")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        names = [k for k, w in self.weights.items() if w > 0]
        weights = [self.weights[k] for k in names]
        queues: dict[str, list[list[int]]] = {}
        for _ in range(self.length):
            name = rng.choices(names, weights)[0]
            if not queues.get(name):
                order = list(self.groups[name])
                rng.shuffle(order)
                queues[name] = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            yield queues[name].pop(0)


def _parsed(text: str | None):
    return parse_tcot(text) if text else None


def check_tcot_coverage(pairs: Sequence[Pair], hard_negatives: int) -> None:
    """Warn when hard negatives lack the T-CoTs their positives have: the embedder can then tell
    the positive by its evidence alone, a shortcut that does not exist at evaluation."""
    used = [(p, j) for p in pairs if p.pos_tcot for j in range(min(len(p.negs), hard_negatives))]
    bare = sum(1 for p, j in used if not p.neg_tcot(j))
    if bare:
        logger.warning("use_tcot with hard negatives: %d of %d hard negatives have no T-CoT ('neg_tcot') while "
                       "their positives do; annotate them or set hard_negatives=0", bare, len(used))


@dataclass
class PairCollator:
    """Pairs -> chunks of backend inputs: queries, then positives followed by hard negatives.

    `chunk_size` 0 means one chunk per side (plain forward); GradCache uses smaller chunks.
    With `use_tcot`, the pairs' `qry_tcot` / `pos_tcot` annotations condition the embedder;
    `tcot_dropout` leaves a whole side of the batch raw with that probability (each side on its
    own), so one embedder serves raw input and T-CoTs. Whole sides, so that no candidate is told
    apart by merely having evidence.

    `tcot_negatives` (with T-CoTs kept on a side) adds, per pair and side, that many candidates
    holding the pair's own item with the T-CoT of another pair in the batch (same dataset): the
    embedder can then rank them below the right one only by reading whether the evidence fits
    the item, which is what EG-RL's outcome reward needs to tell a rollout's right content from
    wrong. Query-side ones are candidates in the target -> query direction.

    `train_frames` (> 0) keeps that many of each video's frames, sampled as evaluation samples
    them (`sample_frames`), with T-CoT key frames moved to the nearest frame kept: a video costs
    about train_frames / its frame count of its full price in training, evaluation still sees
    every frame the format takes.
    """

    embedder: Embedder
    hard_negatives: int = 0
    use_tcot: bool = False
    chunk_size: int = 0
    tcot_dropout: float = 0.0
    tcot_negatives: int = 0
    train_frames: int = 0

    def _keep_tcots(self) -> bool:
        import torch

        return self.tcot_dropout <= 0 or torch.rand(()).item() >= self.tcot_dropout

    def _chunks(self, items, tcots) -> list[dict[str, Any]]:
        size = self.chunk_size or len(items)
        return [self.embedder.collate(items[i:i + size], None if tcots is None else tcots[i:i + size])
                for i in range(0, len(items), size)]

    def _swapped(self, items: Sequence[Item], tcots: Sequence[TCoT | None]) -> tuple[list, list]:
        """(items, T-CoTs) of the evidence-swapped candidates: item i with item i+s's T-CoT, for
        s = 1..tcot_negatives, where both have one and the two say different things."""
        n, out_items, out_tcots = len(items), [], []
        for shift in range(1, min(self.tcot_negatives, n - 1) + 1):
            for i, item in enumerate(items):
                own, other = tcots[i], tcots[(i + shift) % n]
                if own and other and not own.same_content(other):
                    out_items.append(item)
                    out_tcots.append(other)
        return out_items, out_tcots

    def __call__(self, pairs: Sequence[Pair]) -> dict[str, Any]:
        start = time.perf_counter()
        queries = [p.query for p in pairs]
        targets = [p.pos for p in pairs]
        for p in pairs:
            targets.extend(p.negs[: self.hard_negatives])
        q_tcots = t_tcots = None
        if self.use_tcot and self._keep_tcots():
            q_tcots = [_parsed(p.qry_tcot) for p in pairs]
            if self.tcot_negatives:
                items, tcots = self._swapped(queries, q_tcots)
                queries += items
                q_tcots += tcots
        if self.use_tcot and self._keep_tcots():
            t_tcots = [_parsed(p.pos_tcot) for p in pairs]
            t_tcots += [_parsed(p.neg_tcot(j)) for p in pairs for j in range(min(len(p.negs), self.hard_negatives))]
            if self.tcot_negatives:
                items, tcots = self._swapped(targets[: len(pairs)], t_tcots[: len(pairs)])
                targets += items
                t_tcots += tcots
        if self.train_frames > 0:
            queries, q_tcots = fewer_frames(queries, q_tcots, self.train_frames)
            targets, t_tcots = fewer_frames(targets, t_tcots, self.train_frames)
        return {"query_chunks": self._chunks(queries, q_tcots), "target_chunks": self._chunks(targets, t_tcots),
                "n_pos": len(pairs), "dataset": pairs[0].dataset if pairs else "",
                "collate_s": time.perf_counter() - start}


def fewer_frames(items: Sequence[Item], tcots: Sequence[TCoT | None] | None,
                 k: int) -> tuple[list[Item], list[TCoT | None] | None]:
    """Videos cut to `k` frames (uniformly, as evaluation samples them), each T-CoT's key frames
    moved to the nearest frame kept (duplicates dropped); other items unchanged."""
    out_items, out_tcots = [], None if tcots is None else []
    for i, item in enumerate(items):
        tcot = None if tcots is None else tcots[i]
        frames = item.frames or []
        if len(frames) > k:
            kept = sample_frames(list(range(len(frames))), k)
            item = dataclasses.replace(item, frames=[frames[j] for j in kept])
            if tcot is not None and tcot.key_frames:
                moved = [1 + min(range(k), key=lambda p: abs(kept[p] - (f - 1))) for f in tcot.key_frames
                         if 1 <= f <= len(frames)]
                tcot = dataclasses.replace(tcot, key_frames=list(dict.fromkeys(moved)))
        out_items.append(item)
        if out_tcots is not None:
            out_tcots.append(tcot)
    return out_items, out_tcots
