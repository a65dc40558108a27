"""`embedrl bench encode`: encode throughput against the bare model forward, on the same batches.

For one set of items (one modality, with or without T-CoTs), four things are timed in turns,
so that a machine's load drifting during the run weighs on all of them alike:
  - `encode`: what users call -- media decoding, resizing, evidence crops, tokenising (the
    backend's `collate`, prepared ahead by the input pipeline), forward, pooling, back in order;
  - `inline`: `encode` with the pipeline off (collation inline, batch after batch);
  - `forward`: our forward (the `<emb>` pooling / evidence fusion) on the batches pre-collated;
  - `bare`: the underlying model's own forward on those batches.
Each is the best of `repeats` runs after one warm-up. The figures users compare are throughput
ratios to the bare forward: encode / bare items per second is what everything around the model
costs (1.0: nothing), inline / bare what it cost without the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from embedrl.core.items import Item
from embedrl.core.tcot import TCoT
from embedrl.models.base import Embedder, autocast, to_device
from embedrl.models.pipeline import InputPipeline, plan_batches


def _timed(fn: Callable[[], Any]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_encode(embedder: Embedder, items: Sequence[Item], tcots: Sequence[TCoT | None] | None = None,
                 batch_size: int = 32, repeats: int = 3, pipeline: InputPipeline | None = None) -> dict[str, Any]:
    """Seconds, items/s and throughput ratios to the bare forward for encode (with the input
    pipeline and inline), our forward and the bare forward, on the same batches of `items`."""
    pipeline = pipeline or InputPipeline.from_env()
    device = embedder.device
    plan = plan_batches(embedder, items, tcots, batch_size, sort=pipeline.sort)
    batches = [to_device(embedder.collate([items[i] for i in rows], None if tcots is None else
                                          [tcots[i] for i in rows]), device) for rows in plan]
    embedder.module.eval()

    def run(forward):
        with torch.inference_mode(), autocast(device):
            for batch in batches:
                forward(batch)

    inline = InputPipeline(workers=0, sort=pipeline.sort)
    modes = {"encode": lambda: embedder.encode(items, tcots, batch_size, show_progress=False, pipeline=pipeline),
             "inline": lambda: embedder.encode(items, tcots, batch_size, show_progress=False, pipeline=inline),
             "forward": lambda: run(embedder.forward),
             "bare": lambda: run(embedder.bare_forward)}
    best = {name: float("inf") for name in modes}
    for repeat in range(repeats + 1):  # the first round warms up
        for name, fn in modes.items():
            seconds = _timed(fn)
            if repeat:
                best[name] = min(best[name], seconds)
    n = len(items)
    return {"backend": embedder.backend, "model": embedder.name_or_path, "items": n, "batch_size": batch_size,
            "device": str(device), "pipeline": f"{pipeline.workers} {pipeline.kind}",
            **{f"{name}_s": s for name, s in best.items()},
            **{f"{name}_items_per_s": n / s for name, s in best.items()},
            **{f"{name}_vs_bare": best["bare"] / best[name] for name in ("encode", "inline", "forward")}}


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table: items/s per way, and each as a share of the bare forward's items/s."""
    head = ("| model | modality | items | batch | encode items/s | bare items/s | encode / bare | "
            "inline / bare | forward / bare |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {str(r['model'])[-34:]} | {r.get('modality', '')} | {r['items']} | {r['batch_size']} | "
                     f"{r['encode_items_per_s']:.1f} | {r['bare_items_per_s']:.1f} | {r['encode_vs_bare']:.2f}x | "
                     f"{r['inline_vs_bare']:.2f}x | {r['forward_vs_bare']:.2f}x |")
    return "\n".join(lines)
