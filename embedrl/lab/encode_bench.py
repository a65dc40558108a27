"""What `embedrl bench encode` encodes: the synthetic benchmark's training pairs, one set per modality.

    text, text+tcot        Synth-T2I queries (captions), raw / with their keyword T-CoTs
    image, image+tcot      Synth-T2I positives (images), raw / with their box T-CoTs (evidence crops)
    video, video+tcot      Synth-VideoRet positives (8-frame clips), raw / with their key-frame T-CoTs

Images and frames can be re-saved at another size (`image_px`, e.g. 224 for a ViT at its input
size, so the resize costs what it does on photos) in a folder of their own. A video set holds as
many frames as an image set holds images (n / 8 clips).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from embedrl.core.items import Item
from embedrl.core.tcot import TCoT, parse_tcot
from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)

MODALITIES = ("text", "text+tcot", "image", "image+tcot", "video", "video+tcot")
# modality -> (dataset, side of the pair)
SOURCES = {"text": ("Synth-T2I", "query"), "image": ("Synth-T2I", "pos"), "video": ("Synth-VideoRet", "pos")}
FRAMES_PER_CLIP = 8


def modality_sets(data: Path, n: int, modalities: list[str], image_px: int | None = None,
                  resized_dir: Path | None = None) -> dict[str, tuple[list[Item], list[TCoT | None] | None]]:
    """modality -> (items, T-CoTs or None), `n` items a set (video: n / 8 clips, at least 1)."""
    from embedrl.data.pairs import read_pairs

    pairs, _ = read_pairs(data / "train" / "pairs.jsonl", root=data)
    out = {}
    for name in modalities:
        base, _, tcot = name.partition("+")
        dataset, side = SOURCES[base]
        rows = [p for p in pairs if p.dataset == dataset]
        count = max(1, n // FRAMES_PER_CLIP) if base == "video" else n
        rows = (rows * (count // max(len(rows), 1) + 1))[:count]
        items = [p.query if side == "query" else p.pos for p in rows]
        if image_px:
            items = [_resized(item, image_px, resized_dir or data / f"px{image_px}") for item in items]
        tcots = [parse_tcot(p.qry_tcot if side == "query" else p.pos_tcot) for p in rows] if tcot else None
        out[name] = (items, tcots)
    return out


def _resized(item: Item, px: int, folder: Path) -> Item:
    from PIL import Image

    def copy(path):
        target = folder / Path(path).parent.name / Path(path).name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as im:
                im.convert("RGB").resize((px, px), Image.Resampling.BICUBIC).save(target)
        return str(target)

    return dataclasses.replace(item, image=copy(item.image) if item.image is not None else None,
                               frames=[copy(f) for f in item.frames] if item.frames else None)


def run_encode_bench(embedders: list[Embedder], sets: dict[str, tuple[list[Item], list[TCoT | None] | None]],
                     batch_size: int, repeats: int, pipeline=None) -> list[dict[str, Any]]:
    """One row per (embedder, modality); an embedder whose format has no place for T-CoTs skips
    the +tcot sets."""
    from embedrl.models.bench import bench_encode

    rows = []
    for embedder in embedders:
        reads_tcot = getattr(getattr(embedder, "format", None), "reads_tcot", True)
        for name, (items, tcots) in sets.items():
            if tcots is not None and not reads_tcot:
                logger.info("%s: its format reads no T-CoTs; %s skipped", embedder.name_or_path, name)
                continue
            logger.info("bench encode: %s, %s (%d items)", embedder.name_or_path, name, len(items))
            rows.append({"modality": name, **bench_encode(embedder, items, tcots, batch_size, repeats, pipeline)})
    return rows
