"""Training pairs from MMEB-train style JSONL: one row a pair, read into `Pair`s.

Row fields: `qry`, `qry_image_path`, `qry_frames`, `pos_text`, `pos_image_path`, `pos_frames`,
optional hard negatives `neg_text` / `neg_image_path` (one value or a list) / `neg_frames` (a list
of frame lists, one per negative), `dataset`, and T-CoT annotations `qry_tcot` / `pos_tcot` /
`neg_tcot`. Texts are strings, media paths strings relative to a root (the file's folder by
default), frames lists of paths; a field of another JSON type is refused naming the line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import iter_jsonl
from embedrl.core.items import (
    Item,
    Pair,
    json_type,
    load_image,
    path_field,
    paths_field,
    paths_value,
    strip_placeholders,
    text_field,
)


def as_list(value: Any) -> list:
    """A JSONL field that may be missing, empty, one value or a list, as a list."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _side(row: dict[str, Any], text_key: str, prefix: str, root: str | os.PathLike | None) -> Item:
    return Item(text=strip_placeholders(text_field(row, text_key)), image=path_field(row, f"{prefix}_image_path", root),
                frames=paths_field(row, f"{prefix}_frames", root))


def _tcot(row: dict[str, Any], key: str) -> str | None:
    return text_field(row, key) or None


def pair_from_row(row: dict[str, Any], root: str | os.PathLike | None = None) -> Pair:
    """Build a Pair from an MMEB-train style row (`qry`, `qry_image_path`, `pos_text`, ...); a field of the
    wrong JSON type is refused naming it."""
    if "qry" not in row and "qry_image_path" not in row:
        raise EmbedrlError("missing field 'qry' (or 'qry_image_path')")
    if "pos_text" not in row and "pos_image_path" not in row:
        raise EmbedrlError("missing field 'pos_text' (or 'pos_image_path')")
    query, pos = _side(row, "qry", "qry", root), _side(row, "pos_text", "pos", root)
    neg_texts, neg_images = as_list(row.get("neg_text")), as_list(row.get("neg_image_path"))
    neg_frames = as_list(row.get("neg_frames"))
    if neg_frames and all(isinstance(f, str) for f in neg_frames):
        raise EmbedrlError("'neg_frames' must hold one list of frame paths per hard negative, e.g. "
                           f"[{json.dumps(neg_frames)}]")
    n_negs = max(len(neg_texts), len(neg_images), len(neg_frames))
    negs = []
    for i in range(n_negs):
        fields = {"neg_text": neg_texts[i] if i < len(neg_texts) else None,
                  "neg_image_path": neg_images[i] if i < len(neg_images) else None}
        negs.append(Item(text=strip_placeholders(text_field(fields, "neg_text")),
                         image=path_field(fields, "neg_image_path", root),
                         frames=paths_value(neg_frames[i] if i < len(neg_frames) else None, "neg_frames", root)))
    neg_tcots = as_list(row.get("neg_tcot"))
    if neg_tcots and len(neg_tcots) != n_negs:
        raise EmbedrlError(f"'neg_tcot' has {len(neg_tcots)} entries for {n_negs} hard negatives (one each, "
                           "null where a negative has none)")
    neg_tcots = [_tcot({"neg_tcot": t}, "neg_tcot") for t in neg_tcots]
    dataset = row.get("dataset")
    if dataset is not None and not isinstance(dataset, (str, int)):
        raise EmbedrlError(f"'dataset' must be a name (a string), not {json_type(dataset)}")
    return Pair(query=query, pos=pos, negs=negs, dataset=str(dataset or ""),
                qry_tcot=_tcot(row, "qry_tcot"), pos_tcot=_tcot(row, "pos_tcot"), neg_tcots=neg_tcots)


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
