"""MMEB-train (`TIGER-Lab/MMEB-train`) as downloaded: training pairs straight from its parquet files.

The repository holds 20 subsets, each with the splits `original` (the paper's instructions) and
`diverse_instruction` (paraphrased ones): `<Subset>/<split>-00000-of-00001.parquet` with columns
`qry`, `qry_image_path`, `pos_text`, `pos_image_path` and, in most subsets, `neg_text`,
`neg_image_path`. Row image paths are relative to the repository root (`images/<Subset>/Train/...`):
read from `images/` after the repository's `unzip_file.py`, or straight out of
`images_zip/<Subset>.zip` when it was not unzipped. The Phi-3 placeholder `<|image_1|>` is removed
from the texts (the item keeps its image). Each pair's `dataset` is its subset, so
`dataset_weights` and per-dataset batches work as with JSONL pairs.

A config's `data` entry (embedder training) or `embedrl data annotate --mmeb-train ROOT` name it:

    data: {mmeb_train: /data/MMEB-train, subsets: [ImageNet_1K, MSCOCO_i2t], split: original,
           num_sample_per_subset: 100000}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, Pair, strip_placeholders
from embedrl.data.check import Status
from embedrl.data.evalset import as_list
from embedrl.data.hf import has_split, load_split
from embedrl.data.media import MediaRoot

logger = logging.getLogger(__name__)

REPO = "TIGER-Lab/MMEB-train"
SPLITS = ("original", "diverse_instruction")
SUBSETS = ("A-OKVQA", "CIRR", "ChartQA", "DocVQA", "HatefulMemes", "ImageNet_1K", "InfographicsVQA", "MSCOCO",
           "MSCOCO_i2t", "MSCOCO_t2i", "N24News", "NIGHTS", "OK-VQA", "SUN397", "VOC2007", "VisDial", "Visual7W",
           "VisualNews_i2t", "VisualNews_t2i", "WebQA")
DATA_KEYS = {"mmeb_train", "subsets", "split", "num_sample_per_subset"}


def subset_media(root: Path, subset: str) -> MediaRoot:
    return MediaRoot([root], [root / "images_zip" / f"{subset}.zip"])


def check_data_entry(data: Mapping[str, Any]) -> tuple[Path, list[str], str]:
    """(root, subsets, split) of a `data` entry, or an error that says what is wrong."""
    unknown = set(data) - DATA_KEYS
    if unknown or "mmeb_train" not in data:
        raise EmbedrlError(f"a `data` entry takes {sorted(DATA_KEYS)} (mmeb_train: the downloaded repository "
                           f"folder){'; unknown: ' + ', '.join(sorted(unknown)) if unknown else ''}")
    subsets = [str(s) for s in as_list(data.get("subsets"))] or list(SUBSETS)
    split = str(data.get("split", "original"))
    if split not in SPLITS:
        raise EmbedrlError(f"MMEB-train split {split!r} is not one of {', '.join(SPLITS)}")
    return Path(str(data["mmeb_train"])), subsets, split


def _cap(data: Mapping[str, Any], subset: str) -> int | None:
    cap = data.get("num_sample_per_subset")
    if isinstance(cap, Mapping):
        cap = cap.get(subset)
    return int(cap) if cap else None


def read_mmeb_train(data: Mapping[str, Any], skip_bad: bool = False) -> tuple[list[Pair], list[str]]:
    """Pairs of the entry's subsets (first `num_sample_per_subset` rows of each, as the official
    recipes cap them). A row naming an absent image raises naming subset, file and row, or with
    `skip_bad` is skipped and listed in the second return value."""
    root, subsets, split = check_data_entry(data)
    pairs: list[Pair] = []
    skipped: list[str] = []
    for subset in subsets:
        rows = load_split(root, subset, split)
        cap = _cap(data, subset)
        if cap and cap < len(rows):
            rows = rows.select(range(cap))
        media = subset_media(root, subset)
        for i, row in enumerate(rows):
            try:
                pairs.append(pair_of(row, media, subset))
            except (EmbedrlError, KeyError, TypeError) as e:
                message = f"MMEB-train {subset} [{split}] ({root / subset}) row {i}: {e}"
                if not skip_bad:
                    raise EmbedrlError(message + " (set skip_bad to skip such rows)") from None
                skipped.append(message)
        logger.info("MMEB-train %s [%s]: %d rows", subset, split, len(rows))
    if not pairs:
        raise EmbedrlError(f"{root}: no usable MMEB-train pairs" + (f"; first problem: {skipped[0]}" if skipped else ""))
    return pairs, skipped


def _image(media: MediaRoot, rel: Any):
    if not rel:
        return None
    found = media.image(rel)
    if found is None:
        raise EmbedrlError(f"image {rel} not found ({media.where(rel)})")
    return found


def pair_of(row: Mapping[str, Any], media: MediaRoot, subset: str) -> Pair:
    query = Item(text=strip_placeholders(str(row.get("qry") or "")), image=_image(media, row.get("qry_image_path")))
    pos = Item(text=strip_placeholders(str(row.get("pos_text") or "")), image=_image(media, row.get("pos_image_path")))
    if not (query.text or query.image is not None) or not (pos.text or pos.image is not None):
        raise EmbedrlError("empty query or positive")
    texts, images = as_list(row.get("neg_text")), as_list(row.get("neg_image_path"))
    negs = []
    for j in range(max(len(texts), len(images))):
        text = strip_placeholders(str(texts[j] or "")) if j < len(texts) else ""
        image = _image(media, images[j]) if j < len(images) else None
        if text or image is not None:
            negs.append(Item(text=text, image=image))
    return Pair(query=query, pos=pos, negs=negs, dataset=subset)


def check_mmeb_train(root: str | os.PathLike, subsets: Sequence[str] | None = None, split: str = "original"):
    """`data check mmeb-train`: per subset, whether its split and its images are there."""
    root = Path(root)
    fetch = f"hf download {REPO} --repo-type dataset --local-dir {root}"
    out = []
    for subset in subsets or SUBSETS:
        if not has_split(root, subset, split):
            out.append(Status(subset, "missing", f"no {subset}/{split}-*.parquet under {root}",
                              [f'{fetch} --include "{subset}/*" --include "images_zip/{subset}.zip"']))
            continue
        media = subset_media(root, subset)
        rows = load_split(root, subset, split)
        absent = found = 0
        for row in rows:
            for rel in [row.get("qry_image_path"), row.get("pos_image_path"), *as_list(row.get("neg_image_path"))]:
                if rel:
                    ok = media.image(rel) is not None
                    found, absent = found + ok, absent + (not ok)
        if absent == 0:
            out.append(Status(subset, "present", f"{len(rows)} rows"))
        else:
            zip_there = (root / "images_zip" / f"{subset}.zip").is_file()
            state = "missing" if found == 0 else "partial"
            out.append(Status(subset, state, f"images missing for {absent} references in {len(rows)} rows",
                              [] if zip_there else [f'{fetch} --include "images_zip/{subset}.zip"']))
    return out
