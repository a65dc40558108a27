"""Readers: turn one registry entry plus a data root into an in-memory `EvalTask`.

A reader is a function `(spec, root) -> EvalTask` registered by name with `@reader(name, needed)`;
the registry's `reader:` field picks it, so adding a layout never touches the runner. `needed`
lists the dataset-level files (annotations) a reader needs, so `data check` and the runner can
report a dataset whose files are absent as *missing* and go on with the others. Rows that cannot
be used are counted as missed queries (`evalset.TaskBuilder`).

The published layouts, as their owners' downloads leave them (registered when this module loads):
  MMEB-V2 image tasks   embedrl.data.mmeb_image   (image_cls, image_qa, image_i2t, image_t2i, image_i2i_vg)
  MMEB-V2 video tasks   embedrl.data.mmeb_video   (video_classification, ssv2, msrvtt, msvd, didemo,
                                                   youcook2, vatex, moment_retrieval, momentseeker,
                                                   videomme, nextqa, egoschema, mvbench, activitynetqa)
  MMEB-V2 visual docs   embedrl.data.mmeb_visdoc  (vidore, visrag)
  UVRB                  `uvrb` below
The reader names are the MMEB-V2 harness's `dataset_parser` names (TIGER-AI-Lab/VLM2Vec
experiments/public/eval/*.yaml), so a registry row reads like the harness's YAML.

embedrl's own JSONL layouts, for one's own data (paths relative to the data root; eval/README.md):

`image_rows` / `video_rows` -- one JSONL file, one query per line, MMEB-V2 style:
    qry_inst, qry_text, qry_img_path | qry_video_path     the query (video: a folder of frames)
    tgt_inst, tgt_text (list), tgt_img_path (list) | tgt_video_path (list)   candidates, gold first
    tgt_rel (list, optional)  graded relevance per candidate (default: 1 for the first, 0 for the rest)
  Media paths are relative to `media_root` (default: the JSONL's folder). `local` scope: a query
  against its own candidates; `global`: against the de-duplicated union of every row's candidates
  plus an optional `corpus:` JSONL of extra candidates. A one-element `tgt_text` / `tgt_img_path`
  list is repeated for every candidate.

`beir` -- a folder with `queries.jsonl` (`_id` | `id` | `query-id`, `text` | `query`, optional
  `image`), `corpus.jsonl` (`_id` | `id` | `corpus-id`, optional `text`, `image`) and `qrels.tsv`
  (query-id, corpus-id, score; a header line is allowed). Graded: scores > 0 count, a repeated
  pair keeps its highest score. Always global.

`uvrb` -- the UVRB layout as read by the Embed-RL paper's harness (ZoengHN/Embed-RL
  `eval/uvrb_eval/uvrb_dataset.py`; UVRB's own card could not be checked): under
  `<path>/` or `UVRB_extracted/<path>/UVRB/<path>/`, `jsonl/queries.jsonl` (`id`, optional `text`,
  `image`, `video`), `jsonl/corpus.jsonl` (`id`, `video`), `jsonl/instances.jsonl` (`qid`, `pos`),
  `videos_frames/<video without extension>/` frame folders and `images/`. Global, binary.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import iter_jsonl, read_text
from embedrl.core.items import Item, strip_placeholders
from embedrl.data.evalset import EvalTask, Media, MissingData, TaskBuilder, as_list, num_frames_of
from embedrl.data.media import media_root
from embedrl.data.registry import DatasetSpec

logger = logging.getLogger(__name__)

ReaderFn = Callable[[DatasetSpec, Path], EvalTask]
READERS: dict[str, ReaderFn] = {}
NEEDED: dict[str, Callable[[DatasetSpec, Path], list[Path]]] = {}
PUBLISHED = ("embedrl.data.mmeb_image", "embedrl.data.mmeb_video", "embedrl.data.mmeb_visdoc")


def reader(name: str, needed: Callable[[DatasetSpec, Path], list[Path]]):
    """Register a reader under `name`, with the function listing the paths it needs."""
    def wrap(fn: ReaderFn) -> ReaderFn:
        READERS[name] = fn
        NEEDED[name] = needed
        return fn
    return wrap


def get_reader(name: str) -> ReaderFn:
    for module in PUBLISHED:
        importlib.import_module(module)
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
    """Read one dataset. Raises `MissingData` when its files, or all of its media, are absent."""
    missing = missing_paths(spec, root)
    if missing:
        raise MissingData(spec.name, missing)
    return get_reader(spec.reader)(spec, Path(root))


def spec_media(spec: DatasetSpec, root: Path, default: str | None = None) -> Media:
    """The entry's media: `media_root` (a folder or a list of alternatives) and `archives`."""
    folders = spec.media_root if spec.media_root is not None else default
    return Media(media_root(root, folders, as_list(spec.extra.get("archives"))), num_frames_of(spec))


# ---------------------------------------------------------------- image_rows / video_rows

def _rows_needed(spec: DatasetSpec, root: Path) -> list[Path]:
    paths = [root / spec.path]
    if spec.extra.get("corpus"):
        paths.append(root / str(spec.extra["corpus"]))
    return paths


def _row_candidates(row: dict, where: str) -> list[dict[str, Any]]:
    """The row's candidates as raw values (text, image, video), shared one-element lists repeated."""
    columns = {name: as_list(row.get(name)) for name in ("tgt_text", "tgt_img_path", "tgt_video_path")}
    n = max(len(v) for v in columns.values())
    if n == 0:
        raise EmbedrlError(f"{where}: no candidates (tgt_text / tgt_img_path / tgt_video_path are empty)")
    for name, values in columns.items():
        if len(values) == 1 and n > 1:
            columns[name] = values * n
        elif len(values) not in (0, n):
            raise EmbedrlError(f"{name} has {len(values)} entries but there are {n} candidates")
    out = []
    for i in range(n):
        text = columns["tgt_text"][i] if columns["tgt_text"] else ""
        if not isinstance(text, str):
            raise EmbedrlError(f"tgt_text[{i}] is not a string")
        out.append({"text": text, "image": columns["tgt_img_path"][i] if columns["tgt_img_path"] else "",
                    "video": columns["tgt_video_path"][i] if columns["tgt_video_path"] else ""})
    return out


def _rels(row: dict, n: int) -> list[float]:
    rels = row.get("tgt_rel")
    if rels is None:
        return [1.0] + [0.0] * (n - 1)
    if not isinstance(rels, list) or len(rels) != n or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) for r in rels):
        raise EmbedrlError(f"tgt_rel must be a list of {n} numbers")
    return [float(r) for r in rels]


def _read_rows(spec: DatasetSpec, root: Path) -> EvalTask:
    path = root / spec.path
    folder = os.path.relpath(path.parent, root)
    media = spec_media(spec, root, folder)
    build = TaskBuilder(spec, media, ids="index")

    def side(row: dict, prefix: str) -> Item:
        item = Item(text=strip_placeholders(str(row.get(f"{prefix}_text") or "")),
                    instruction=strip_placeholders(str(row.get(f"{prefix}_inst") or "")),
                    image=media.image(row.get(f"{prefix}_img_path")),
                    frames=media.frames(row.get(f"{prefix}_video_path")))
        if not (item.text or item.image or item.frames):
            raise EmbedrlError("the query has no text, image or video")
        return item

    def cand(c: dict, inst: str) -> Callable[[], Item]:
        return lambda: Item(text=strip_placeholders(c["text"]), instruction=inst,
                            image=media.image(c["image"]), frames=media.frames(c["video"]))

    bad: list[str] = []
    for lineno, row in iter_jsonl(path, errors=bad):
        where = f"{path}:{lineno}"
        try:
            cands = _row_candidates(row, where)
            rels = _rels(row, len(cands))
        except EmbedrlError as e:
            build.miss(where, str(e))
            continue
        inst = strip_placeholders(str(row.get("tgt_inst") or ""))
        names = [json.dumps([inst, c["text"], c["image"], c["video"]]) for c in cands]
        relevance: dict[str, float] = {}
        for name, r in zip(names, rels):
            relevance[name] = max(relevance.get(name, 0.0), r)
        build.row(where, str(row.get("qid") or row.get("id") or f"q{lineno}"), lambda row=row: side(row, "qry"),
                  [(name, cand(c, inst)) for name, c in zip(names, cands)], relevance)
    for message in bad:
        where, _, reason = message.partition(": ")
        build.miss(where, reason)
    corpus = spec.extra.get("corpus")
    if corpus:
        for lineno, row in iter_jsonl(root / str(corpus)):
            inst = strip_placeholders(str(row.get("tgt_inst") or ""))
            for c in _row_candidates(row, f"{root / str(corpus)}:{lineno}"):
                build.candidate(json.dumps([inst, c["text"], c["image"], c["video"]]), cand(c, inst))
    return build.task()


reader("image_rows", _rows_needed)(_read_rows)
reader("video_rows", _rows_needed)(_read_rows)


# ---------------------------------------------------------------- beir (JSONL)

def _beir_needed(spec: DatasetSpec, root: Path) -> list[Path]:
    folder = root / spec.path
    return [folder / "queries.jsonl", folder / "corpus.jsonl", folder / "qrels.tsv"]


def first_of(row: dict, keys: Sequence[str], required: bool = True) -> Any:
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    if required:
        raise EmbedrlError(f"missing field {' / '.join(keys)}")
    return None


def add_qrel(qrels: dict[str, dict[str, float]], qid: str, cid: str, score: float) -> None:
    """The harness's `load_qrels_mapping`: scores > 0 only, a repeated pair keeps its highest score."""
    if score > 0:
        qrels.setdefault(qid, {})
        qrels[qid][cid] = max(qrels[qid].get(cid, 0.0), score)


def read_qrels(path: Path) -> dict[str, dict[str, float]]:
    """query-id -> {corpus-id: score} from a TSV (query-id, corpus-id, score; header allowed)."""
    qrels: dict[str, dict[str, float]] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):  # UTF-8 checked, naming the line
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
        add_qrel(qrels, parts[0], parts[1], score)
    return qrels


@reader("beir", _beir_needed)
def _read_beir(spec: DatasetSpec, root: Path) -> EvalTask:
    folder = root / spec.path
    media = spec_media(spec, root, spec.path)
    q_inst = str(spec.extra.get("query_instruction", ""))
    c_inst = str(spec.extra.get("target_instruction", ""))
    build = TaskBuilder(spec, media)
    for lineno, row in iter_jsonl(folder / "corpus.jsonl"):
        def make(row=row) -> Item:
            item = Item(text=str(row.get("text") or ""), image=media.image(row.get("image")), instruction=c_inst)
            if not (item.text or item.image):
                raise EmbedrlError("corpus entry has no text or image")
            return item
        try:
            build.candidate(str(first_of(row, ("_id", "id", "corpus-id"))), make)
        except EmbedrlError as e:
            raise EmbedrlError(f"{folder / 'corpus.jsonl'}:{lineno}: {e}") from None
    qrels = read_qrels(folder / "qrels.tsv")
    for lineno, row in iter_jsonl(folder / "queries.jsonl"):
        where = f"{folder / 'queries.jsonl'}:{lineno}"
        qid = str(row.get("_id") or row.get("id") or row.get("query-id") or f"q{lineno}")

        def query(row=row, qid=qid) -> Item:
            text = first_of(row, ("text", "query"), required=False) or ""
            item = Item(text=str(text), image=media.image(row.get("image")), instruction=q_inst)
            if not (item.text or item.image):
                raise EmbedrlError(f"query {qid} has no text or image")
            return item
        build.row(where, qid, query, [], qrels.get(qid, {}))
    return build.task()


# ---------------------------------------------------------------- uvrb

def uvrb_folder(spec: DatasetSpec, root: Path) -> Path:
    """`<path>/`, or the extracted release's `UVRB_extracted/<path>/UVRB/<path>/`."""
    plain = root / spec.path
    extracted = root / "UVRB_extracted" / spec.path / "UVRB" / spec.path
    return extracted if not plain.is_dir() and extracted.is_dir() else plain


def _uvrb_needed(spec: DatasetSpec, root: Path) -> list[Path]:
    folder = uvrb_folder(spec, root)
    return [folder / "jsonl" / f for f in ("queries.jsonl", "corpus.jsonl", "instances.jsonl")]


def video_stem(path: str) -> str:
    return os.path.splitext(str(path))[0]


@reader("uvrb", _uvrb_needed)
def _read_uvrb(spec: DatasetSpec, root: Path) -> EvalTask:
    folder = uvrb_folder(spec, root)
    rel = os.path.relpath(folder, root)
    frames = Media(media_root(root, f"{rel}/{spec.extra.get('frames_dir', 'videos_frames')}"), num_frames_of(spec))
    images = Media(media_root(root, f"{rel}/{spec.extra.get('images_dir', 'images')}"), num_frames_of(spec))
    q_inst = str(spec.extra.get("query_instruction", ""))
    build = TaskBuilder(spec, frames)
    for lineno, row in iter_jsonl(folder / "jsonl" / "corpus.jsonl"):
        try:
            cid = str(first_of(row, ("id",)))
            video = video_stem(first_of(row, ("video",)))
        except EmbedrlError as e:
            raise EmbedrlError(f"{folder / 'jsonl' / 'corpus.jsonl'}:{lineno}: {e}") from None
        build.candidate(cid, lambda video=video: Item(frames=frames.frames(video)))
    positives: dict[str, dict[str, float]] = {}
    for lineno, row in iter_jsonl(folder / "jsonl" / "instances.jsonl"):
        pos = row.get("pos") or []
        if "qid" not in row or not isinstance(pos, list):
            raise EmbedrlError(f"{folder / 'jsonl' / 'instances.jsonl'}:{lineno}: expected 'qid' and a list 'pos'")
        positives.setdefault(str(row["qid"]), {}).update({str(p): 1.0 for p in pos})
    for lineno, row in iter_jsonl(folder / "jsonl" / "queries.jsonl"):
        where = f"{folder / 'jsonl' / 'queries.jsonl'}:{lineno}"
        qid = str(row.get("id") or f"q{lineno}")

        def query(row=row, qid=qid) -> Item:
            image = images.image(row.get("image"))
            video = None if image or not row.get("video") else frames.frames(video_stem(row["video"]))
            item = Item(text=str(row.get("text") or ""), image=image, frames=video, instruction=q_inst)
            if not (item.text or item.image or item.frames):
                raise EmbedrlError(f"query {qid} has no text, image or video")
            return item
        build.row(where, qid, query, [], positives.get(qid, {}))
    frames.absent |= images.absent
    frames.kinds["images"] |= images.kinds["images"]
    return build.task()
