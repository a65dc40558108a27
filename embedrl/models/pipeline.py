"""The input pipeline behind `Embedder.encode`: inputs are prepared while the model runs.

Everything before the forward -- decoding images and frames, resizing, cropping T-CoT evidence,
tokenising (a backend's `collate`) -- runs ahead of the model, `prefetch` batches in advance:

  - in one background thread (the default, `workers=1`): PIL's decoding and resampling, the
    tokenizers and torch's ops release the GIL, so they overlap the forward at no start-up cost
    (more threads only where the backend's collate is thread-safe, `Embedder.thread_safe_collate`);
  - in `workers` DataLoader processes (`kind="process"`): for collation heavy enough to pay for
    starting processes on every `encode` call (large corpora, many cores);
  - inline (`workers=0`), batch by batch, as before.

Where a backend pads (`Embedder.input_size` is not None: a VLM's sequences), items are batched in
order of size, so a batch pads to its own longest input, not to the corpus's; the vectors come
back in input order either way. On CUDA the prepared batch is pinned and copied without
blocking. `embedrl bench encode` measures what this buys (encode against the bare forward).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from embedrl.core.errors import EmbedrlError

if TYPE_CHECKING:
    from embedrl.core.items import Item
    from embedrl.core.tcot import TCoT
    from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)

KINDS = ("thread", "process")


@dataclass(frozen=True)
class InputPipeline:
    """How `encode` prepares batches: `workers` (0: inline), `kind` (thread / process), `prefetch`
    (batches prepared ahead per worker), `sort` (batch by input size where the backend pads)."""

    workers: int = 1
    kind: str = "thread"
    prefetch: int = 2
    sort: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise EmbedrlError(f"input pipeline kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.workers < 0 or self.prefetch < 1:
            raise EmbedrlError("input pipeline: workers must be >= 0 and prefetch >= 1")

    @classmethod
    def from_env(cls) -> InputPipeline:
        """The default, or `EMBEDRL_ENCODE_WORKERS=N[:process]` (e.g. `4:process`, `0` for inline)."""
        spec = os.environ.get("EMBEDRL_ENCODE_WORKERS", "").strip()
        if not spec:
            return cls()
        workers, _, kind = spec.partition(":")
        try:
            return cls(workers=int(workers), kind=kind or "thread")
        except ValueError:
            raise EmbedrlError(f"EMBEDRL_ENCODE_WORKERS={spec!r}: expected N or N:thread or N:process") from None


def plan_batches(embedder: Embedder, items: Sequence[Item], tcots: Sequence[TCoT | None] | None,
                 batch_size: int, sort: bool = True) -> list[list[int]]:
    """Item indices per batch: in input order, or by input size where the backend pads (stable,
    so equal sizes keep their order)."""
    order = list(range(len(items)))
    if sort and len(items) > batch_size:
        sizes = [embedder.input_size(item, None if tcots is None else tcots[i]) for i, item in enumerate(items)]
        if all(s is not None for s in sizes):
            order.sort(key=sizes.__getitem__)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class _Batches(torch.utils.data.Dataset):
    """One planned batch per index, collated where the DataLoader runs it (a worker process)."""

    def __init__(self, embedder: Embedder, items, tcots, batches: list[list[int]]):
        self.embedder, self.items, self.tcots, self.batches = embedder, items, tcots, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return collate_rows(self.embedder, self.items, self.tcots, self.batches[k])


def collate_rows(embedder: Embedder, items, tcots, rows: list[int]) -> dict[str, Any]:
    return embedder.collate([items[i] for i in rows], None if tcots is None else [tcots[i] for i in rows])


def prepared_batches(embedder: Embedder, items: Sequence[Item], tcots: Sequence[TCoT | None] | None,
                     batches: list[list[int]], pipeline: InputPipeline,
                     device: torch.device) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """(rows, collated batch on `device`) for each planned batch, in plan order, prepared ahead."""
    from embedrl.models.base import to_device

    pin = device.type == "cuda"
    if pipeline.workers == 0 or len(batches) == 1:
        source: Iterator[dict[str, Any]] = (collate_rows(embedder, items, tcots, rows) for rows in batches)
    elif pipeline.kind == "thread":
        source = _threaded(embedder, items, tcots, batches, pipeline, pin)
    else:
        source = iter(torch.utils.data.DataLoader(
            _Batches(embedder, items, tcots, batches), batch_size=None, num_workers=pipeline.workers,
            prefetch_factor=pipeline.prefetch, pin_memory=pin))
    for rows, batch in zip(batches, source):
        yield rows, to_device(batch, device, non_blocking=pin)


def _threaded(embedder, items, tcots, batches, pipeline: InputPipeline, pin: bool) -> Iterator[dict[str, Any]]:
    def job(rows):
        batch = collate_rows(embedder, items, tcots, rows)
        return {k: v.pin_memory() if pin and isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    # a backend whose collate shares state that is not thread-safe (a Rust tokenizer's padding settings)
    # gets one thread: it still overlaps the forward
    workers = pipeline.workers if embedder.thread_safe_collate else 1
    ahead = workers * pipeline.prefetch
    with ThreadPoolExecutor(workers, thread_name_prefix="embedrl-collate") as pool:
        pending: deque = deque()
        todo = iter(batches)
        try:
            for rows in todo:
                pending.append(pool.submit(job, rows))
                if len(pending) >= ahead:
                    break
            while pending:
                batch = pending.popleft().result()
                for rows in todo:
                    pending.append(pool.submit(job, rows))
                    break
                yield batch
        finally:
            for future in pending:  # an error or an early stop: drop the batches not started
                future.cancel()
