"""An evaluation set in memory (`EvalTask`) and what every reader shares: the candidate pool
de-duplicated by the harness's candidate name, and the bookkeeping of rows that could not be used.

`TaskBuilder` is how readers make a task. Per query row a reader gives the query (a function that
builds its Item), its candidates (name -> a function that builds the Item) and the relevance of
each candidate name. A candidate is built once per name, the first time it is seen -- the MMEB-V2
harness's rule (`generate_cand_dataset`: candidates flattened, de-duplicated by `cand_name`, first
occurrence kept). A row whose query is malformed or names an absent file, or whose relevant
candidate does, is *missed*: it stays in the dataset's query count and scores 0 on every metric,
and the score file lists it (dataset, file, row, reason). Absent non-relevant candidates are left
out of the pool and counted. A dataset where every row is missed for absent media is reported as
missing data, not scored 0.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, json_type
from embedrl.data.media import MediaRoot
from embedrl.data.registry import DatasetSpec

logger = logging.getLogger(__name__)

DEFAULT_NUM_FRAMES = 8
MAX_LISTED = 20  # missed rows listed by reason in a score file (all are counted)


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
    # queries that could not be used ("dataset: file row N: reason"): scored as misses
    missed: list[str] = field(default_factory=list)
    # media the rows name that are nowhere: {"images": n, "videos": n}
    absent: dict[str, int] = field(default_factory=dict)

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
        note = [*self.notes, f"first {n} queries"]
        if self.local_candidates is None:
            return EvalTask(self.name, self.scope, self.queries[:n], self.candidates, self.relevance[:n], None, note)
        keep = sorted({c for cands in self.local_candidates[:n] for c in cands})
        new = {old: i for i, old in enumerate(keep)}
        return EvalTask(self.name, self.scope, self.queries[:n], [self.candidates[c] for c in keep],
                        [{new[c]: r for c, r in rel.items()} for rel in self.relevance[:n]],
                        [[new[c] for c in cands] for cands in self.local_candidates[:n]], note)

    @property
    def candidate_ids(self) -> list[str]:
        return [c.id or str(i) for i, c in enumerate(self.candidates)]


class MissingData(EmbedrlError):
    """Files a dataset needs are absent: the runner lists the dataset as missing and goes on."""

    def __init__(self, name: str, paths: Sequence[str]):
        self.paths = list(paths)
        shown = ", ".join(self.paths[:3]) + (f" (+{len(self.paths) - 3} more)" if len(self.paths) > 3 else "")
        super().__init__(f"{name}: missing {shown}")


class Absent(EmbedrlError):
    """A file a row names is nowhere under the data root."""


def item_key(item: Item) -> str:
    """What a candidate shows, as a string: the candidate name of layouts that have none."""
    frames = [str(f) for f in item.frames or []]
    return json.dumps([item.instruction, item.text, None if item.image is None else str(item.image), frames])


def as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def num_frames_of(spec: DatasetSpec) -> int:
    return int(spec.num_frames or DEFAULT_NUM_FRAMES)


def _media_path(rel: Any) -> str:
    """A row's media path; anything but a string (a list, a number) is the row's error, not a file name."""
    if not isinstance(rel, str):
        raise EmbedrlError(f"a media path must be a string, not {json_type(rel)} ({rel!r:.40})")
    return rel


class Media:
    """A reader's access to media: images and sampled frames, `Absent` naming where it looked."""

    def __init__(self, root: MediaRoot, num_frames: int):
        self.root = root
        self.num_frames = num_frames
        self.absent: set[str] = set()
        self.kinds: dict[str, set[str]] = {"images": set(), "videos": set()}

    def image(self, rel) -> object | None:
        if not rel:
            return None
        found = self.root.image(_media_path(rel))
        if found is None:
            self.absent.add(self.root.where(rel))
            self.kinds["images"].add(str(rel))
            raise Absent(f"image {rel} not found ({self.root.where(rel)})")
        return found

    def frames(self, rel) -> list | None:
        if not rel:
            return None
        found = self.root.frames(_media_path(rel), self.num_frames)
        if found is None:
            self.absent.add(self.root.where(rel))
            self.kinds["videos"].add(str(rel))
            raise Absent(f"no frames for video {rel} ({self.root.where(rel)})")
        return found


Make = Callable[[], Item]


class TaskBuilder:
    """Collects queries, the de-duplicated pool and the missed rows of one dataset."""

    def __init__(self, spec: DatasetSpec, media: Media | None = None, ids: str = "name"):
        self.spec = spec
        self.media = media
        self.ids = ids  # a candidate's id: its name, or "c<pool index>" for layouts whose names are internal
        self.pool: list[Item] = []
        self.index: dict[str, int | None] = {}  # candidate name -> pool index (None: could not be built)
        self.queries: list[Item] = []
        self.relevance: list[dict[int, float]] = []
        self.local: list[list[int]] = []
        self.missed: list[str] = []
        self.absent_candidates: dict[str, str] = {}
        self.dropped = 0
        self.notes: list[str] = []

    def candidate(self, name: str, make: Make) -> int | None:
        """Pool index of candidate `name`, built by `make` the first time the name is seen."""
        if name not in self.index:
            try:
                item = make()
            except EmbedrlError as e:
                self.absent_candidates[name] = str(e)
                self.index[name] = None
                return None
            if item.id is None:
                item.id = name if self.ids == "name" else f"c{len(self.pool)}"
            self.index[name] = len(self.pool)
            self.pool.append(item)
        return self.index[name]

    def miss(self, where: str, reason: str) -> None:
        self.missed.append(f"{self.spec.name}: {where}: {reason}")
        logger.warning("%s: %s: %s (query counted as missed)", self.spec.name, where, reason)

    def row(self, where: str, qid: str, make_query: Make, candidates: Sequence[tuple[str, Make]],
            relevance: Mapping[str, float]) -> None:
        """One query row. `relevance`: candidate name -> grade (only grades > 0 count)."""
        try:
            query = make_query()
            idx = [self.candidate(name, make) for name, make in candidates]
        except EmbedrlError as e:
            self.miss(where, str(e))
            return
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            self.miss(where, f"malformed row ({type(e).__name__}: {e})")
            return
        rel = {name: float(r) for name, r in relevance.items() if r > 0}
        if not rel:
            self.dropped += 1
            return
        lost = [name for name in rel if self.index.get(name) is None]
        if lost:
            reason = self.absent_candidates.get(lost[0], f"relevant candidate {lost[0]!r} is not in the pool")
            self.miss(where, f"relevant candidate unusable: {reason}")
            return
        query.id = qid
        self.queries.append(query)
        graded: dict[int, float] = {}
        for name, r in rel.items():
            i = self.index[name]
            graded[i] = max(graded.get(i, 0.0), r)
        self.relevance.append(graded)
        self.local.append(list(dict.fromkeys(i for i in idx if i is not None)))

    def task(self) -> EvalTask:
        spec = self.spec
        absent_media = sorted(self.media.absent) if self.media is not None else []
        if not self.queries:
            if absent_media:
                raise MissingData(spec.name, absent_media)
            if self.missed:
                raise EmbedrlError(f"{spec.name}: no usable queries; first problem: {self.missed[0]}")
            raise EmbedrlError(f"{spec.name}: no usable queries")
        notes = list(self.notes)
        if self.dropped:
            notes.append(f"{self.dropped} queries without a relevant candidate were dropped")
        if self.absent_candidates:
            notes.append(f"{len(self.absent_candidates)} candidates left out of the pool (absent or malformed); "
                         f"first: {next(iter(self.absent_candidates.values()))}")
        if self.missed:
            notes.append(f"{len(self.missed)} queries counted as missed; first: {self.missed[0]}")
        absent = {k: len(v) for k, v in self.media.kinds.items() if v} if self.media is not None else {}
        return EvalTask(spec.name, spec.scope, self.queries, self.pool, self.relevance,
                        self.local if spec.scope == "local" else None, notes, self.missed, absent)


