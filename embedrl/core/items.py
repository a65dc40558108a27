"""Item and Pair: the only shapes data takes between readers, models, trainers and indexes.

An Item is one thing to embed or reason about: text (with an optional instruction), an
image, or a video as a list of frames. Images stay paths until a model needs pixels, so
items are cheap to pass around and to hash for caches.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from PIL import Image

from embedrl.core.errors import EmbedrlError


class MediaRef:
    """An image that is not a file of its own: a member of an archive or a cell of a dataset.

    Subclasses (embedrl.data.media) say where it lives (`__str__`, used in messages and keys) and
    read its encoded bytes (`read_bytes`); pixels are decoded only when a model needs them.
    """

    def read_bytes(self) -> bytes:
        raise NotImplementedError

    def exists(self) -> bool:
        return True


ImageLike = Union[str, os.PathLike, Image.Image, MediaRef]

# MMEB-train rows mark where the image goes with a placeholder; we keep the image separately.
IMAGE_PLACEHOLDERS = ("<|image_1|>", "<image>")
MAX_IMAGE_PIXELS = 64_000_000


def load_image(image: ImageLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image as RGB, with an error that names the file for missing/corrupt/huge input."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, MediaRef):
        try:
            path, source = str(image), io.BytesIO(image.read_bytes())
        except (OSError, KeyError) as e:
            raise EmbedrlError(f"image not found: {image} ({e})") from e
    else:
        path = source = Path(image)
        if not path.is_file():
            raise EmbedrlError(f"image not found: {path}")
    try:
        with Image.open(source) as im:
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
    if isinstance(image, MediaRef):
        try:
            return hashlib.sha1(image.read_bytes()).hexdigest()
        except (OSError, KeyError):
            return "missing:" + str(image)
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
