"""Item and Pair: the only shapes data takes between readers, models, trainers and indexes.

An Item is one thing to embed or reason about: text (with an optional instruction), an
image, or a video as a list of frames. Images stay paths until a model needs pixels, so
items are cheap to pass around and to hash for caches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from PIL import Image

from embedrl.errors import EmbedrlError
from embedrl.io import iter_jsonl

ImageLike = Union[str, os.PathLike, Image.Image]

# MMEB-train rows mark where the image goes with a placeholder; we keep the image separately.
IMAGE_PLACEHOLDERS = ("<|image_1|>", "<image>")
MAX_IMAGE_PIXELS = 64_000_000


def load_image(image: ImageLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image as RGB, with an error that names the file for missing/corrupt/huge input."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    path = Path(image)
    if not path.is_file():
        raise EmbedrlError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            if im.width * im.height > max_pixels:
                raise EmbedrlError(
                    f"image {path} has {im.width}x{im.height} pixels, over the limit of {max_pixels}")
            return im.convert("RGB")
    except EmbedrlError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise EmbedrlError(f"cannot read image {path}: {e}") from e


@functools.lru_cache(maxsize=65536)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _media_digest(image: ImageLike) -> str:
    if isinstance(image, Image.Image):
        return hashlib.sha1(image.tobytes() + repr((image.mode, image.size)).encode()).hexdigest()
    path = str(image)
    try:
        st = os.stat(path)
    except OSError:
        return "missing:" + path
    return _file_digest(path, st.st_mtime_ns, st.st_size)


@dataclass
class Item:
    """One query or candidate: text and/or an image and/or video frames."""

    text: str = ""
    image: ImageLike | None = None
    frames: list[ImageLike] | None = None
    instruction: str = ""
    id: str | None = None

    @property
    def modality(self) -> str:
        """'video', 'image', 'text' or 'image+text' (composed / captioned image)."""
        if self.frames:
            return "video"
        if self.image is not None:
            return "image+text" if self.text.strip() else "image"
        return "text"

    def load_image(self) -> Image.Image | None:
        return None if self.image is None else load_image(self.image)

    def load_frames(self) -> list[Image.Image]:
        return [load_image(f) for f in self.frames or []]

    def content_hash(self) -> str:
        """Stable digest of what the item shows (media by content, not by path)."""
        h = hashlib.sha1()
        h.update(json.dumps([self.instruction, self.text]).encode())
        if self.image is not None:
            h.update(b"img:" + _media_digest(self.image).encode())
        for frame in self.frames or []:
            h.update(b"frm:" + _media_digest(frame).encode())
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; in-memory images are not serialisable and raise."""
        if isinstance(self.image, Image.Image) or any(isinstance(f, Image.Image) for f in self.frames or []):
            raise EmbedrlError("an Item holding an in-memory image cannot be saved; save the image to a file")
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        if self.instruction:
            out["instruction"] = self.instruction
        if self.text:
            out["text"] = self.text
        if self.image is not None:
            out["image"] = str(self.image)
        if self.frames:
            out["frames"] = [str(f) for f in self.frames]
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any], root: str | os.PathLike | None = None) -> Item:
        unknown = set(row) - {"id", "instruction", "text", "image", "frames"}
        if unknown:
            raise EmbedrlError(f"unknown item field(s): {', '.join(sorted(unknown))}")
        return cls(
            text=row.get("text") or "",
            image=resolve_path(row.get("image"), root),
            frames=[resolve_path(f, root) for f in row["frames"]] if row.get("frames") else None,
            instruction=row.get("instruction") or "",
            id=None if row.get("id") is None else str(row["id"]),
        )


def resolve_path(path: str | None, root: str | os.PathLike | None) -> str | None:
    """Relative media paths are relative to `root` (a data file's folder or a data root)."""
    if not path:
        return None
    p = Path(path)
    return str(p if p.is_absolute() or root is None else Path(root) / p)


def strip_placeholders(text: str) -> str:
    for token in IMAGE_PLACEHOLDERS:
        text = text.replace(token, "")
    return text.strip()


@dataclass
class Pair:
    """A training pair: query, positive target, optional hard negatives and T-CoT annotations.

    `neg_tcots` is empty or one annotation (or None) per hard negative.
    """

    query: Item
    pos: Item
    negs: list[Item] = field(default_factory=list)
    dataset: str = ""
    qry_tcot: str | None = None
    pos_tcot: str | None = None
    neg_tcots: list[str | None] = field(default_factory=list)

    def neg_tcot(self, j: int) -> str | None:
        return self.neg_tcots[j] if j < len(self.neg_tcots) else None


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
