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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
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


def sample_frames(frames: Sequence, k: int | None) -> list:
    """At most `k` of a video's frames, as the MMEB-V2 harness picks them: np.linspace(0, n - 1, k)
    truncated to int. `k` None or <= 0 keeps them all."""
    if k is None or k <= 0 or len(frames) <= k:
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, k).astype(int)]


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
        item_id = row.get("id")
        if isinstance(item_id, bool) or (item_id is not None and not isinstance(item_id, (str, int))):
            raise EmbedrlError(f"'id' must be a string or a number, not {json_type(item_id)} ({_short(item_id)})")
        return cls(
            text=text_field(row, "text"),
            image=path_field(row, "image", root),
            frames=paths_field(row, "frames", root),
            instruction=text_field(row, "instruction"),
            id=None if item_id is None else str(item_id),
        )


def resolve_path(path: str | os.PathLike | None, root: str | os.PathLike | None) -> str | None:
    """Relative media paths are relative to `root` (a data file's folder or a data root); with a root,
    the result is absolute, so it still names the file when read from another working directory."""
    if not path:
        return None
    p = Path(path)
    if root is None:
        return str(p)
    return os.path.normpath(Path(root).absolute() / p)


# ---------------------------------------------------------------- typed fields of data rows
# Readers take fields of JSON rows through these, so a value of the wrong JSON type is refused naming
# the field (the reader adds the file and line) instead of failing later or being misread.

def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def text_field(row: dict[str, Any], key: str) -> str:
    """A text field ("" when absent or null); another JSON type is refused."""
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EmbedrlError(f"'{key}' must be a string, not {json_type(value)} ({_short(value)})")
    return value


def path_field(row: dict[str, Any], key: str, root: str | os.PathLike | None = None) -> str | None:
    """A media path field (None when absent, null or empty), resolved under `root`."""
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise EmbedrlError(f"'{key}' must be a file path (a string), not {json_type(value)} ({_short(value)})")
    return resolve_path(value, root)


def paths_field(row: dict[str, Any], key: str, root: str | os.PathLike | None = None) -> list[str] | None:
    """A list of media paths (video frames; None when absent or empty). A single string is refused rather
    than read one character at a time: frames are always a list, even of one."""
    return paths_value(row.get(key), key, root)


def paths_value(value: Any, key: str, root: str | os.PathLike | None = None) -> list[str] | None:
    """`paths_field` for a value already taken out of its row (`key` names it in messages)."""
    if value is None or value == []:
        return None
    if isinstance(value, str):
        raise EmbedrlError(f"'{key}' must be a list of frame paths, not a string; write [{json.dumps(value)}]")
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise EmbedrlError(f"'{key}' must be a list of frame paths (strings), not {_short(value)}")
    return [resolve_path(v, root) for v in value]


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
