"""MMEB-V2's 36 image tasks as published: `ziyjiang/MMEB_Test_Instruct` rows, images from `TIGER-Lab/MMEB-V2`.

Rows (one subset per dataset, split `test`): `qry_inst`, `qry_text`, `qry_img_path`, `tgt_inst`,
`tgt_text` (list), `tgt_img_path` (list); the first candidate is the gold one. Images are the
extracted `image-tasks/mmeb_v1.tar.gz` (`image-tasks/<Subset>/...`, the paths the rows hold).
The five readers are the harness's five parsers (TIGER-AI-Lab/VLM2Vec `src/data/eval_dataset/image_*`),
which differ in what a candidate is and in its name -- the key the pool is de-duplicated by:

    image_cls, image_qa, image_i2t   text candidates: `tgt_text[i]`, named by that text (no instruction)
    image_t2i                        image candidates with `tgt_inst` (and `tgt_text[i]` when the first
                                     caption is not empty: WebQA, EDIS), named by `tgt_img_path[i]`
    image_i2i_vg                     as t2i, named `tgt_img_path[i] + ":" + tgt_text[i]` without '"'
                                     (several objects of one picture are different targets: RefCOCO-Matching)

The Phi-3 placeholder `<|image_1|>` is removed from instructions and texts: the item keeps its
image, and the embedding format decides where the model's image tokens go and how the instruction
joins the text (embedrl/models/formats.py, including each family's MMEB-V2 side rules).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, strip_placeholders
from embedrl.data.evalset import EvalTask, TaskBuilder
from embedrl.data.hf import load_split
from embedrl.data.readers import reader, spec_media
from embedrl.data.registry import DatasetSpec

# where the extracted images sit: image-tasks/ after the download script's `mv MMEB/* .`, or still in MMEB/
IMAGE_ROOTS = ["image-tasks", "image-tasks/MMEB"]


def annotation(spec: DatasetSpec, root: Path) -> tuple[Path, str | None, str]:
    """(repository folder, subset, split) of a published dataset entry: `path` is the folder the
    Hub repository was downloaded to (`hf/<owner>/<name>`), `subset` and `split` its config."""
    return root / spec.path, spec.extra.get("subset"), str(spec.extra.get("split", "test"))


def annotation_needed(spec: DatasetSpec, root: Path) -> list[Path]:
    return [annotation(spec, root)[0]]


def rows_of(spec: DatasetSpec, root: Path):
    """(where-prefix, rows) of an entry, `num_sample_per_subset` applied as the harness does (first N)."""
    folder, subset, split = annotation(spec, root)
    rows = load_split(folder, subset, split)
    cap = spec.extra.get("num_sample_per_subset")
    if cap and int(cap) < len(rows):
        rows = rows.select(range(int(cap)))
    return f"{folder}{os.sep}{subset or ''}[{split}]", rows


def _texts(row: dict, n: int) -> list[str]:
    texts = [str(t) for t in row.get("tgt_text") or []]
    if len(texts) == 1 and n > 1:
        return texts * n
    if texts and len(texts) != n:
        raise EmbedrlError(f"tgt_text has {len(texts)} entries but tgt_img_path has {n}")
    return texts or [""] * n


def _read_image_task(spec: DatasetSpec, root: Path, candidate: str) -> EvalTask:
    where, rows = rows_of(spec, root)
    media = spec_media(spec, root, IMAGE_ROOTS)
    build = TaskBuilder(spec, media)
    for i, row in enumerate(rows):
        def query(row=row) -> Item:
            image = media.image(row.get("qry_img_path")) if candidate != "image_t2i" else None
            item = Item(text=strip_placeholders(str(row.get("qry_text") or "")), image=image,
                        instruction=strip_placeholders(str(row.get("qry_inst") or "")))
            if not (item.text or item.image):
                raise EmbedrlError("the query has no text or image")
            return item
        try:
            cands = _candidates(row, media, candidate)
        except (EmbedrlError, KeyError, TypeError) as e:
            build.miss(f"{where} row {i}", f"malformed row ({e})")
            continue
        if not cands:
            build.miss(f"{where} row {i}", "no candidates")
            continue
        build.row(f"{where} row {i}", str(row.get("qid") or f"q{i}"), query, cands, {cands[0][0]: 1.0})
    return build.task()


def _candidates(row: dict, media, candidate: str) -> list[tuple[str, Callable[[], Item]]]:
    """(name, builder) per candidate of a row, gold first."""
    if candidate == "text":
        return [(str(t), lambda t=t: Item(text=strip_placeholders(str(t)))) for t in row["tgt_text"]]
    paths = [str(p) for p in row["tgt_img_path"]]
    texts = _texts(row, len(paths))
    captioned = bool(texts[0].strip())  # the harness decides on the first caption (WebQA, EDIS, RefCOCO-Matching)
    inst = strip_placeholders(str(row.get("tgt_inst") or ""))
    out = []
    for path, text in zip(paths, texts):
        name = path if candidate == "image_t2i" else f"{path}:{text.strip(chr(34))}"
        out.append((name, lambda path=path, text=text: Item(
            text=strip_placeholders(text) if captioned else "", instruction=inst, image=media.image(path))))
    return out


for _parser, _candidate in (("image_cls", "text"), ("image_qa", "text"), ("image_i2t", "text"),
                            ("image_t2i", "image_t2i"), ("image_i2i_vg", "image_i2i_vg")):
    reader(_parser, annotation_needed)(
        lambda spec, root, _candidate=_candidate: _read_image_task(spec, root, _candidate))
