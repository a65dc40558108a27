"""Training pairs from MMEB-train style JSONL: one row a pair, read into `Pair`s.

Row fields: `qry`, `qry_image_path`, `qry_frames`, `pos_text`, `pos_image_path`, `pos_frames`,
optional hard negatives `neg_text` / `neg_image_path` / `neg_frames` (one value or a list),
`dataset`, and T-CoT annotations `qry_tcot` / `pos_tcot` / `neg_tcot`. Media paths are relative
to a root (the file's folder by default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import iter_jsonl
from embedrl.core.items import Item, Pair, load_image, resolve_path, strip_placeholders


def as_list(value: Any) -> list:
    """A JSONL field that may be missing, empty, one value or a list, as a list."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def pair_from_row(row: dict[str, Any], root: str | os.PathLike | None = None) -> Pair:
    """Build a Pair from an MMEB-train style row (`qry`, `qry_image_path`, `pos_text`, ...)."""
    if "qry" not in row and "qry_image_path" not in row:
        raise EmbedrlError("missing field 'qry' (or 'qry_image_path')")
    if "pos_text" not in row and "pos_image_path" not in row:
        raise EmbedrlError("missing field 'pos_text' (or 'pos_image_path')")
    query = Item(text=strip_placeholders(row.get("qry") or ""),
                 image=resolve_path(row.get("qry_image_path"), root),
                 frames=[resolve_path(f, root) for f in as_list(row.get("qry_frames"))] or None)
    pos = Item(text=strip_placeholders(row.get("pos_text") or ""),
               image=resolve_path(row.get("pos_image_path"), root),
               frames=[resolve_path(f, root) for f in as_list(row.get("pos_frames"))] or None)
    neg_texts, neg_images = as_list(row.get("neg_text")), as_list(row.get("neg_image_path"))
    neg_frames = as_list(row.get("neg_frames"))
    n_negs = max(len(neg_texts), len(neg_images), len(neg_frames))
    negs = []
    for i in range(n_negs):
        frames = neg_frames[i] if i < len(neg_frames) else None
        negs.append(Item(
            text=strip_placeholders(neg_texts[i]) if i < len(neg_texts) else "",
            image=resolve_path(neg_images[i], root) if i < len(neg_images) else None,
            frames=[resolve_path(f, root) for f in frames] if frames else None,
        ))
    neg_tcots = as_list(row.get("neg_tcot"))
    if neg_tcots and len(neg_tcots) != n_negs:
        raise EmbedrlError(f"'neg_tcot' has {len(neg_tcots)} entries for {n_negs} hard negatives (one each, "
                           "null where a negative has none)")
    return Pair(query=query, pos=pos, negs=negs, dataset=str(row.get("dataset") or ""),
                qry_tcot=row.get("qry_tcot"), pos_tcot=row.get("pos_tcot"), neg_tcots=neg_tcots)


def check_item_media(item: Item) -> None:
    """Open every image or frame `item` has: a missing or corrupt one raises, naming it."""
    for media in ([item.image] if item.image is not None else []) + list(item.frames or []):
        load_image(media)


def read_pairs(path: str | os.PathLike, root: str | os.PathLike | None = None, skip_bad: bool = False,
               check_media: bool = True) -> tuple[list[Pair], list[str]]:
    """Read a pairs JSONL. A bad line raises naming file:line, or with `skip_bad` is skipped.

    Returns (pairs, skipped) where `skipped` holds one "file:line: reason" per skipped line.
    Media are opened once here when `check_media`, so a corrupt image fails before training starts.
    """
    root = Path(path).parent if root is None else root
    pairs: list[Pair] = []
    skipped: list[str] = []
    for lineno, row in iter_jsonl(path, errors=skipped if skip_bad else None):
        try:
            pair = pair_from_row(row, root)
            if check_media:
                for item in (pair.query, pair.pos, *pair.negs):
                    check_item_media(item)
        except EmbedrlError as e:
            message = f"{path}:{lineno}: {e}"
            if not skip_bad:
                raise EmbedrlError(message + " (pass --skip-bad to skip such lines)") from None
            skipped.append(message)
            continue
        pairs.append(pair)
    if not pairs:
        raise EmbedrlError(f"{path}: no usable pairs" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return pairs, skipped
