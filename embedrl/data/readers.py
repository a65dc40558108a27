"""Readers: turn one registry entry plus a data root into an in-memory `EvalTask`.

A reader is a function `(spec, root) -> EvalTask` registered by name with `@reader("name")`;
the registry's `reader:` field picks it, so adding a layout never touches the runner. Every
reader also lists the files it needs (`needed_paths`) so the runner can report a dataset
whose files are absent as *missing* and go on with the others. A malformed row raises
`EmbedrlError` naming the file and line.

Layouts (paths are relative to the data root; see eval/README.md for a worked example):

`image_rows` / `video_rows` -- one JSONL file, one query per line, MMEB-V2 style:
    qry_inst, qry_text, qry_img_path                 the query (instruction, text, image)
    qry_video_path                                   video rows: a folder of frames
    tgt_inst, tgt_text (list), tgt_img_path (list)   the candidates, gold first
    tgt_video_path (list)                            video rows: one frame folder each
    tgt_rel (list, optional)                         graded relevance per candidate
                                                     (default: 1 for the first, 0 for the rest)
  Media paths are relative to `media_root` (default: the JSONL's folder). In `local` scope a
  query is ranked against its own candidates; in `global` scope against the de-duplicated
  union of every row's candidates plus an optional `corpus:` JSONL of extra candidates
  (e.g. the full label set of a classification set). A one-element `tgt_text` /
  `tgt_img_path` list (or an empty string) is repeated for every candidate, as in MMEB rows
  whose candidates share an instruction-only text.
  Video frames: image files in the folder, natural sort (frame_2 before frame_10), then
  `num_frames` (default 8) sampled uniformly: indices linspace(0, n - 1, num_frames)
  truncated to int, all frames when a folder has fewer -- the sampling of the MMEB-V2
  harness (TIGER-AI-Lab/VLM2Vec `src/utils/vision_utils/vision_utils.py`, `sample_frames`).

`beir` -- a folder with `queries.jsonl` (`_id` | `id` | `query-id`, `text` | `query`,
  optional `image`), `corpus.jsonl` (`_id` | `id` | `corpus-id`, optional `text`, `image`)
  and `qrels.tsv` (query-id, corpus-id, score; a header line is allowed). Graded relevance:
  only scores > 0 count, a repeated pair keeps its highest score (as the harness's
  `load_qrels_mapping`, VLM2Vec `src/utils/dataset_utils.py`). Always global.

`uvrb` -- the UVRB layout (as read by ZoengHN/Embed-RL `eval/uvrb_eval/uvrb_dataset.py`):
  `jsonl/queries.jsonl` (`id`, optional `text`, `image`, `video`), `jsonl/corpus.jsonl`
  (`id`, `video`), `jsonl/instances.jsonl` (`qid`, `pos`: list of corpus ids),
  `videos_frames/<video without extension>/` frame folders and `images/`. Global, binary.

Candidates are de-duplicated by what they show (instruction, text, image path, frame
paths), so each distinct candidate is encoded once per dataset even in local scope.
Queries without any relevant candidate are dropped and counted in `EvalTask.notes`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import iter_jsonl, read_text
from embedrl.core.items import Item, strip_placeholders
from embedrl.data.evalset import (
    EvalTask,
    Media,
    MissingData,
    Pool,
    as_list,
    finish,
    media_root_of,
    num_frames_of,
)
from embedrl.data.registry import DatasetSpec

logger = logging.getLogger(__name__)

ReaderFn = Callable[[DatasetSpec, Path], EvalTask]
READERS: dict[str, ReaderFn] = {}
NEEDED: dict[str, Callable[[DatasetSpec, Path], list[Path]]] = {}


def reader(name: str, needed: Callable[[DatasetSpec, Path], list[Path]]):
    """Register a reader under `name`, with the function listing the paths it needs."""
    def wrap(fn: ReaderFn) -> ReaderFn:
        READERS[name] = fn
        NEEDED[name] = needed
        return fn
    return wrap


def get_reader(name: str) -> ReaderFn:
    if name not in READERS:
        raise EmbedrlError(f"unknown reader {name!r}; known: {', '.join(sorted(READERS))}")
    return READERS[name]


def needed_paths(spec: DatasetSpec, root: str | os.PathLike) -> list[Path]:
    get_reader(spec.reader)
    return NEEDED[spec.reader](spec, Path(root))


def missing_paths(spec: DatasetSpec, root: str | os.PathLike) -> list[str]:
    """The dataset-level files (not media) that are absent under `root`."""
    return [str(p) for p in needed_paths(spec, root) if not p.exists()]


def read_task(spec: DatasetSpec, root: str | os.PathLike) -> EvalTask:
    """Read one dataset. Raises `MissingData` when files or media are absent."""
    missing = missing_paths(spec, root)
    if missing:
        raise MissingData(spec.name, missing)
    return get_reader(spec.reader)(spec, Path(root))


# ---------------------------------------------------------------- image_rows / video_rows

def _rows_needed(spec: DatasetSpec, root: Path) -> list[Path]:
    paths = [root / spec.path]
    if spec.extra.get("corpus"):
        paths.append(root / str(spec.extra["corpus"]))
    return paths


def _row_side(row: dict, prefix: str, media: Media, where: str) -> Item:
    inst = strip_placeholders(str(row.get(f"{prefix}_inst") or ""))
    text = strip_placeholders(str(row.get(f"{prefix}_text") or ""))
    item = Item(text=text, instruction=inst, image=media.image(row.get(f"{prefix}_img_path"), where),
                frames=media.frames(row.get(f"{prefix}_video_path"), where))
    if not (item.text or item.image or item.frames):
        raise EmbedrlError(f"{where}: the query has no text, image or video")
    return item


def _row_candidates(row: dict, media: Media, where: str) -> tuple[list[Item], list[float]]:
    columns = {name: as_list(row.get(name)) for name in ("tgt_text", "tgt_img_path", "tgt_video_path")}
    n = max(len(v) for v in columns.values())
    if n == 0:
        raise EmbedrlError(f"{where}: no candidates (tgt_text / tgt_img_path / tgt_video_path are empty)")
    for name, values in columns.items():
        if len(values) == 1 and n > 1:
            columns[name] = values * n  # one shared value for every candidate
        elif len(values) not in (0, n):
            raise EmbedrlError(f"{where}: {name} has {len(values)} entries but there are {n} candidates")
    inst = strip_placeholders(str(row.get("tgt_inst") or ""))
    cands = []
    for i in range(n):
        text = columns["tgt_text"][i] if columns["tgt_text"] else ""
        if not isinstance(text, str):
            raise EmbedrlError(f"{where}: tgt_text[{i}] is not a string")
        cands.append(Item(
            text=strip_placeholders(text), instruction=inst,
            image=media.image(columns["tgt_img_path"][i], where) if columns["tgt_img_path"] else None,
            frames=media.frames(columns["tgt_video_path"][i], where) if columns["tgt_video_path"] else None))
    rels = row.get("tgt_rel")
    if rels is None:
        rels = [1.0] + [0.0] * (n - 1)
    elif not isinstance(rels, list) or len(rels) != n or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) for r in rels):
        raise EmbedrlError(f"{where}: tgt_rel must be a list of {n} numbers")
    return cands, [float(r) for r in rels]


def _read_rows(spec: DatasetSpec, root: Path) -> EvalTask:
    path = root / spec.path
    media = Media(media_root_of(spec, root, path.parent), num_frames_of(spec))
    pool = Pool()
    queries, relevance, local = [], [], []
    dropped = 0
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        try:
            query = _row_side(row, "qry", media, where)
            cands, rels = _row_candidates(row, media, where)
        except EmbedrlError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise EmbedrlError(f"{where}: malformed row ({e})") from e
        idx = [pool.add(c) for c in cands]
        rel: dict[int, float] = {}
        for i, r in zip(idx, rels, strict=True):
            if r > 0:
                rel[i] = max(rel.get(i, 0.0), r)
        if not rel:
            dropped += 1
            continue
        query.id = str(row.get("qid") or row.get("id") or f"q{lineno}")
        queries.append(query)
        relevance.append(rel)
        local.append(list(dict.fromkeys(idx)))  # unique, row order (gold first)
    corpus = spec.extra.get("corpus")
    if corpus:
        cpath = root / str(corpus)
        for lineno, row in iter_jsonl(cpath):
            cands, _ = _row_candidates(row, media, f"{cpath}:{lineno}")
            for c in cands:
                pool.add(c)
    task = EvalTask(spec.name, spec.scope, queries, pool.items, relevance,
                    local if spec.scope == "local" else None)
    return finish(spec, media, task, dropped)


reader("image_rows", _rows_needed)(_read_rows)
reader("video_rows", _rows_needed)(_read_rows)


# ---------------------------------------------------------------- beir

def _beir_needed(spec: DatasetSpec, root: Path) -> list[Path]:
    folder = root / spec.path
    return [folder / "queries.jsonl", folder / "corpus.jsonl", folder / "qrels.tsv"]


def _first(row: dict, keys: Sequence[str], where: str, required: bool = True) -> Any:
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    if required:
        raise EmbedrlError(f"{where}: missing field {' / '.join(keys)}")
    return None


def read_qrels(path: Path) -> dict[str, dict[str, float]]:
    """query-id -> {corpus-id: score}, scores > 0 only, the highest score of repeated pairs."""
    qrels: dict[str, dict[str, float]] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        parts = line.split("\t")
        if not line.strip():
            continue
        if len(parts) < 3:
            raise EmbedrlError(f"{path}:{lineno}: expected 3 tab-separated columns (query-id, corpus-id, score)")
        try:
            score = float(parts[-1])
        except ValueError:
            if lineno == 1:
                continue  # header
            raise EmbedrlError(f"{path}:{lineno}: score {parts[-1]!r} is not a number") from None
        if score != score:
            raise EmbedrlError(f"{path}:{lineno}: score is NaN")
        qid, cid = parts[0], parts[1]
        if score > 0:
            qrels.setdefault(qid, {})
            qrels[qid][cid] = max(qrels[qid].get(cid, 0.0), score)
    return qrels


@reader("beir", _beir_needed)
def _read_beir(spec: DatasetSpec, root: Path) -> EvalTask:
    folder = root / spec.path
    media = Media(media_root_of(spec, root, folder), num_frames_of(spec))
    q_inst = str(spec.extra.get("query_instruction", ""))
    c_inst = str(spec.extra.get("target_instruction", ""))
    pool = Pool()
    for lineno, row in iter_jsonl(folder / "corpus.jsonl"):
        where = f"{folder / 'corpus.jsonl'}:{lineno}"
        cid = str(_first(row, ("_id", "id", "corpus-id"), where))
        item = Item(text=str(row.get("text") or ""), image=media.image(row.get("image"), where), instruction=c_inst)
        if not (item.text or item.image):
            raise EmbedrlError(f"{where}: corpus entry {cid} has no text or image")
        pool.add(item, cid)
    qrels = read_qrels(folder / "qrels.tsv")
    queries, relevance = [], []
    dropped = 0
    for lineno, row in iter_jsonl(folder / "queries.jsonl"):
        where = f"{folder / 'queries.jsonl'}:{lineno}"
        qid = str(_first(row, ("_id", "id", "query-id"), where))
        text = _first(row, ("text", "query"), where, required=False) or ""
        item = Item(text=str(text), image=media.image(row.get("image"), where), instruction=q_inst,
                    id=qid)
        if not (item.text or item.image):
            raise EmbedrlError(f"{where}: query {qid} has no text or image")
        rel = {}
        for cid, score in qrels.get(qid, {}).items():
            if "id:" + cid not in pool.index:
                raise EmbedrlError(f"{folder / 'qrels.tsv'}: corpus-id {cid!r} (query {qid}) is not in corpus.jsonl")
            rel[pool.index["id:" + cid]] = score
        if not rel:
            dropped += 1
            continue
        queries.append(item)
        relevance.append(rel)
    return finish(spec, media, EvalTask(spec.name, "global", queries, pool.items, relevance), dropped)


# ---------------------------------------------------------------- uvrb

def _uvrb_needed(spec: DatasetSpec, root: Path) -> list[Path]:
    folder = root / spec.path
    return [folder / "jsonl" / f for f in ("queries.jsonl", "corpus.jsonl", "instances.jsonl")]


def _video_stem(path: str) -> str:
    return os.path.splitext(path)[0]


@reader("uvrb", _uvrb_needed)
def _read_uvrb(spec: DatasetSpec, root: Path) -> EvalTask:
    folder = root / spec.path
    frames_root = folder / str(spec.extra.get("frames_dir", "videos_frames"))
    images_root = folder / str(spec.extra.get("images_dir", "images"))
    media = Media(frames_root, num_frames_of(spec))
    images = Media(images_root, num_frames_of(spec))
    q_inst = str(spec.extra.get("query_instruction", ""))
    pool = Pool()
    for lineno, row in iter_jsonl(folder / "jsonl" / "corpus.jsonl"):
        where = f"{folder / 'jsonl' / 'corpus.jsonl'}:{lineno}"
        cid = str(_first(row, ("id",), where))
        video = _first(row, ("video",), where)
        pool.add(Item(frames=media.frames(_video_stem(str(video)), where)), cid)
    positives: dict[str, set[str]] = {}
    for lineno, row in iter_jsonl(folder / "jsonl" / "instances.jsonl"):
        where = f"{folder / 'jsonl' / 'instances.jsonl'}:{lineno}"
        qid = str(_first(row, ("qid",), where))
        pos = row.get("pos") or []
        if not isinstance(pos, list):
            raise EmbedrlError(f"{where}: 'pos' must be a list of corpus ids")
        positives.setdefault(qid, set()).update(str(p) for p in pos)
    queries, relevance = [], []
    dropped = 0
    for lineno, row in iter_jsonl(folder / "jsonl" / "queries.jsonl"):
        where = f"{folder / 'jsonl' / 'queries.jsonl'}:{lineno}"
        qid = str(_first(row, ("id",), where))
        image = images.image(row.get("image"), where)
        frames = None if image else media.frames(_video_stem(str(row["video"])), where) if row.get("video") else None
        item = Item(text=str(row.get("text") or ""), image=image, frames=frames, instruction=q_inst, id=qid)
        if not (item.text or item.image or item.frames):
            raise EmbedrlError(f"{where}: query {qid} has no text, image or video")
        rel = {}
        for cid in sorted(positives.get(qid, ())):
            if "id:" + cid not in pool.index:
                raise EmbedrlError(f"{folder / 'jsonl' / 'instances.jsonl'}: corpus id {cid!r} (query {qid}) is not in corpus.jsonl")
            rel[pool.index["id:" + cid]] = 1.0
        if not rel:
            dropped += 1
            continue
        queries.append(item)
        relevance.append(rel)
    media.missing += images.missing
    return finish(spec, media, EvalTask(spec.name, "global", queries, pool.items, relevance), dropped)
