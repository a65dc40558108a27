"""An evaluation set in memory (`EvalTask`) and what every reader of a layout shares: media
paths resolved under a root (missing ones collected), frame folders sampled as the MMEB-V2
harness samples them, and a candidate pool de-duplicated by what each candidate shows."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, json_type
from embedrl.data.registry import DatasetSpec

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")
DEFAULT_NUM_FRAMES = 8


@dataclass
class EvalTask:
    """One dataset in memory: queries, distinct candidates and graded relevance."""

    name: str
    scope: str
    queries: list[Item]
    candidates: list[Item]
    # per query: candidate index -> relevance (> 0 only)
    relevance: list[dict[int, float]]
    # local scope: per query, its candidate indices in row order; None in global scope
    local_candidates: list[list[int]] | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if len(self.relevance) != len(self.queries):
            raise EmbedrlError(f"{self.name}: {len(self.queries)} queries but {len(self.relevance)} relevance rows")
        if self.local_candidates is not None and len(self.local_candidates) != len(self.queries):
            raise EmbedrlError(f"{self.name}: local candidate lists do not match the queries")

    @property
    def query_ids(self) -> list[str]:
        return [q.id or str(i) for i, q in enumerate(self.queries)]

    def head(self, n: int) -> EvalTask:
        """The first `n` queries; a local task keeps only their candidates, a global one its whole pool."""
        if n >= len(self.queries):
            return self
        if self.local_candidates is None:
            return EvalTask(self.name, self.scope, self.queries[:n], self.candidates, self.relevance[:n], None,
                            [*self.notes, f"first {n} queries"])
        keep = sorted({c for cands in self.local_candidates[:n] for c in cands})
        new = {old: i for i, old in enumerate(keep)}
        return EvalTask(self.name, self.scope, self.queries[:n], [self.candidates[c] for c in keep],
                        [{new[c]: r for c, r in rel.items()} for rel in self.relevance[:n]],
                        [[new[c] for c in cands] for cands in self.local_candidates[:n]],
                        [*self.notes, f"first {n} queries"])

    @property
    def candidate_ids(self) -> list[str]:
        return [c.id or str(i) for i, c in enumerate(self.candidates)]


class MissingData(EmbedrlError):
    """Files a dataset needs are absent: the runner lists the dataset as missing and goes on."""

    def __init__(self, name: str, paths: Sequence[str]):
        self.paths = list(paths)
        shown = ", ".join(self.paths[:3]) + (f" (+{len(self.paths) - 3} more)" if len(self.paths) > 3 else "")
        super().__init__(f"{name}: missing {shown}")


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def sample_frames(frames: Sequence[str], num_frames: int) -> list[str]:
    """Uniformly sample `num_frames` (all when fewer): linspace(0, n-1, num_frames) truncated."""
    if num_frames <= 0 or len(frames) <= num_frames:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, num_frames).astype(int)
    return [frames[i] for i in idx]


def list_frames(folder: Path, num_frames: int) -> list[str] | None:
    """Sampled frame paths of a frame folder, or None when it is absent or has no images."""
    if not folder.is_dir():
        return None
    names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key)
    if not names:
        return None
    return sample_frames([str(folder / n) for n in names], num_frames)


def _media_path(rel: Any, where: str) -> str:
    if not isinstance(rel, str):
        raise EmbedrlError(f"{where}: a media path must be a string, not {json_type(rel)} ({rel!r:.40})")
    return rel


class Media:
    """Resolves media paths under a root and remembers the ones that are absent; a path that is not a
    string is refused, naming the row (`where`)."""

    def __init__(self, root: Path, num_frames: int):
        self.root = root
        self.num_frames = num_frames
        self.missing: list[str] = []
        self._frames: dict[str, list[str] | None] = {}

    def image(self, rel: Any, where: str) -> str | None:
        if not rel:
            return None
        path = self.root / _media_path(rel, where)
        if not path.is_file():
            self.missing.append(str(path))
        return str(path)

    def frames(self, rel: Any, where: str) -> list[str] | None:
        if not rel:
            return None
        key = _media_path(rel, where)
        if key not in self._frames:
            self._frames[key] = list_frames(self.root / key, self.num_frames)
            if self._frames[key] is None:
                self.missing.append(str(self.root / key) + "/ (no frames)")
        return self._frames[key] or None


def item_key(item: Item) -> str:
    """What a candidate shows, as a string: equal keys are encoded once."""
    frames = [str(f) for f in item.frames or []]
    return json.dumps([item.instruction, item.text, None if item.image is None else str(item.image), frames])


class Pool:
    """De-duplicated candidates in first-seen order."""

    def __init__(self):
        self.items: list[Item] = []
        self.index: dict[str, int] = {}

    def add(self, item: Item, cid: str | None = None) -> int:
        key = item_key(item) if cid is None else "id:" + cid
        if key not in self.index:
            self.index[key] = len(self.items)
            if item.id is None:
                item.id = cid if cid is not None else f"c{len(self.items)}"
            self.items.append(item)
        return self.index[key]


def as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def num_frames_of(spec: DatasetSpec) -> int:
    return int(spec.num_frames or DEFAULT_NUM_FRAMES)


def media_root_of(spec: DatasetSpec, root: Path, default: Path) -> Path:
    return root / spec.media_root if spec.media_root else default


def finish(spec: DatasetSpec, media: Media, task: EvalTask, dropped: int) -> EvalTask:
    if media.missing:
        raise MissingData(spec.name, sorted(set(media.missing)))
    if dropped:
        task.notes.append(f"{dropped} queries without a relevant candidate were dropped")
        logger.warning("%s: dropped %d queries without a relevant candidate", spec.name, dropped)
    if not task.queries:
        raise EmbedrlError(f"{spec.name}: no usable queries")
    return task
