"""`embedrl bench encode`: encode throughput per backend, and our overhead over the bare model.

On one fixed batch of items (images, texts, videos from the synthetic benchmark), each
backend is timed three ways in the same run:
  - `encode`: what users call (media loading, preprocessing, collation, forward, pooling);
  - `forward`: our forward on pre-collated inputs (the `<emb>` pooling / evidence fusion);
  - `bare`: the underlying model's own forward on the same pre-collated inputs.
The ratios encode/bare and forward/bare are the cost of the library around the model.
Timings are the best of `repeats` runs after one warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from embedrl.core.items import Item
from embedrl.models.base import Embedder, autocast, to_device


def _best(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_encode(embedder: Embedder, items: Sequence[Item], batch_size: int = 32, repeats: int = 3) -> dict[str, Any]:
    """Seconds and items/s for encode, our forward and the bare forward on the same items."""
    device = embedder.device
    chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    batches = [to_device(embedder.collate(c), device) for c in chunks]
    embedder.module.eval()

    def run(forward):
        with torch.inference_mode(), autocast(device):
            for batch in batches:
                forward(batch)

    t_encode = _best(lambda: embedder.encode(items, batch_size=batch_size, show_progress=False), repeats)
    t_forward = _best(lambda: run(embedder.forward), repeats)
    t_bare = _best(lambda: run(embedder.bare_forward), repeats)
    n = len(items)
    return {"backend": embedder.backend, "model": embedder.name_or_path, "items": n, "batch_size": batch_size,
            "encode_s": t_encode, "forward_s": t_forward, "bare_s": t_bare,
            "encode_items_per_s": n / t_encode, "bare_items_per_s": n / t_bare,
            "encode_over_bare": t_encode / t_bare, "forward_over_bare": t_forward / t_bare}


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    head = (f"| {'backend':<10} | {'model':<34} | items | encode items/s | bare items/s | "
            f"encode / bare | forward / bare |")
    lines = [head, "|" + "|".join("-" * (len(c) + 0) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        lines.append(f"| {r['backend']:<10} | {str(r['model'])[-34:]:<34} | {r['items']:>5} | "
                     f"{r['encode_items_per_s']:>14.1f} | {r['bare_items_per_s']:>12.1f} | "
                     f"{r['encode_over_bare']:>12.2f}x | {r['forward_over_bare']:>13.2f}x |")
    return "\n".join(lines)
