"""Corpus readers: what an index is built over, as Items with stable ids.

Kinds (`read_corpus(spec, kind="auto")`):
  - `jsonl`: one item a line (`text`, `image`, `frames` (a list), `instruction`, `id`); media
    paths are relative to the file's folder; any other fields are kept as user fields in the
    index's metadata store. Id: the `id` field, else the line number.
  - `images`: a folder of images, recursively, sorted by relative path; id = that path.
  - `videos`: a folder of frame folders (each folder holding images is one video, frames in
    natural order); id = the folder's relative path.
  - `eval`: the candidate pool of an evaluation set, spec `REGISTRY.yaml:DATASET` (read by
    the evaluation harness's readers, so index and evaluation see the same candidates).
`auto` picks `jsonl` for a file, `images` for a folder, `eval` for `*.yaml:NAME`.

Media paths come out absolute (an index stores them, and the demo or a search from another
working directory must still find the files). Nothing here opens images: a corrupt one is
found when it is encoded, then skipped and listed in the build report.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import iter_jsonl
from embedrl.core.items import Item
from embedrl.data.media import natural_key

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
KINDS = ("auto", "jsonl", "images", "videos", "eval")
ITEM_FIELDS = ("id", "instruction", "text", "image", "frames")


@dataclass
class Corpus:
    """Items to index, with per-item user fields and a description of where they came from."""

    items: list[Item]
    fields: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    kind: str = ""

    def __post_init__(self):
        if not self.fields:
            self.fields = [{} for _ in self.items]
        if len(self.fields) != len(self.items):
            raise ValueError("fields must have one entry per item")
        # items without an id get their position (as copies: the caller's items stay as they were)
        self.items = [item if item.id is not None else replace(item, id=str(i)) for i, item in enumerate(self.items)]
        seen: set[str] = set()
        for item in self.items:
            if item.id in seen:
                raise EmbedrlError(f"{self.source or 'corpus'}: duplicate item id {item.id!r}")
            seen.add(item.id)

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "count": len(self.items)}


def read_corpus(spec: str | os.PathLike, kind: str = "auto", data_root: str | None = None) -> Corpus:
    if kind not in KINDS:
        raise EmbedrlError(f"corpus kind must be one of {', '.join(KINDS)}, not {kind!r}")
    spec = str(spec)
    if kind == "auto":
        kind = _guess_kind(spec)
    reader = {"jsonl": read_jsonl_corpus, "images": read_image_folder,
              "videos": read_video_folder}.get(kind)
    if reader is not None:
        corpus = reader(spec)
    else:
        corpus = read_eval_pool(spec, data_root=data_root)
    if not corpus.items:
        raise EmbedrlError(f"corpus {spec} holds no items")
    return corpus


def _guess_kind(spec: str) -> str:
    path = Path(spec)
    if path.is_dir():
        return "images"
    if path.is_file():
        return "jsonl"
    if re.match(r".+\.ya?ml:[^/\\]+$", spec):
        return "eval"
    raise EmbedrlError(f"corpus not found: {spec} (a JSONL file, a folder, or REGISTRY.yaml:DATASET)")


def read_jsonl_corpus(path: str | os.PathLike) -> Corpus:
    path = Path(path)
    items, fields = [], []
    for lineno, row in iter_jsonl(path):
        extra = {k: v for k, v in row.items() if k not in ITEM_FIELDS}
        try:
            item = Item.from_dict({k: v for k, v in row.items() if k in ITEM_FIELDS}, root=path.parent)
        except EmbedrlError as e:
            raise EmbedrlError(f"{path}:{lineno}: {e}") from None
        if not (item.text or item.image is not None or item.frames):
            raise EmbedrlError(f"{path}:{lineno}: item has no text, image or frames")
        if item.id is None:
            item.id = str(lineno)
        items.append(item)
        fields.append(extra)
    return Corpus(items, fields, source=str(path), kind="jsonl")


def _images_under(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                  key=lambda p: p.relative_to(folder).as_posix())


def _need_dir(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise EmbedrlError(f"corpus folder not found: {folder}")
    return folder.absolute()


def read_image_folder(folder: str | os.PathLike) -> Corpus:
    folder = _need_dir(folder)
    items = [Item(image=str(p), id=p.relative_to(folder).as_posix()) for p in _images_under(folder)]
    return Corpus(items, source=str(folder), kind="images")


def read_video_folder(folder: str | os.PathLike) -> Corpus:
    """Each folder (at any depth) that directly holds images is one video, its frames in natural order."""
    folder = _need_dir(folder)
    videos: dict[Path, list[Path]] = {}
    for p in _images_under(folder):
        videos.setdefault(p.parent, []).append(p)
    items = []
    for video in sorted(videos, key=lambda v: v.relative_to(folder).as_posix()):
        frames = sorted(videos[video], key=lambda p: natural_key(p.as_posix()))
        items.append(Item(frames=[str(f) for f in frames], id=video.relative_to(folder).as_posix() or "."))
    return Corpus(items, source=str(folder), kind="videos")


def read_eval_pool(spec: str, data_root: str | None = None) -> Corpus:
    """The de-duplicated candidate pool of one evaluation set: spec `REGISTRY.yaml:DATASET`.

    Read with the evaluation harness's own reader (`embedrl.data.readers.read_task`), so
    the index holds exactly the candidates evaluation ranks, with the same ids. The data
    root defaults to the registry file's folder.
    """
    from embedrl.data.readers import read_task
    from embedrl.data.registry import load_registry

    registry_path, _, name = spec.rpartition(":")
    specs = {s.name: s for s in load_registry(registry_path)}
    if name not in specs:
        raise EmbedrlError(f"{registry_path}: no dataset named {name!r}; known: {', '.join(sorted(specs))}")
    root = Path(data_root or Path(registry_path).parent).absolute()
    items = list(read_task(specs[name], root).candidates)
    return Corpus(items, source=spec, kind="eval")
