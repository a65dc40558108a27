"""MMEB-V2's 24 visual-document tasks as published: BEIR-style Hub datasets with the pages inside.

Each repository (`vidore/*_beir`, `vidore/*_v2`, `openbmb/VisRAG-Ret-Test-*`, `VLM2Vec/ViDoSeek*`,
`VLM2Vec/MMLongBench*`) has three configs of one split (`test`; VisRAG `train`):
`queries` (`query-id`, `query`, ViDoRe v2 also `language`), `corpus` (`corpus-id`, `image`) and
`qrels` (`query-id`, `corpus-id`, `score`). The rules are the harness's (TIGER-AI-Lab/VLM2Vec
`src/data/eval_dataset/{vidore,visrag}_dataset.py`, `src/utils/dataset_utils.py`):

- relevance: qrels rows with score > 0, a repeated (query, page) pair keeping its highest score;
  the grades are kept (nDCG@5 with linear gain is the main metric);
- the pool: every corpus page (global ranking), named by its corpus id, the queries' positives first
  in query order, then the rest of the corpus in corpus order (the harness's flatten-then-corpus);
- `language` (optional): only the queries of that language (the English-only ViDoRe v2 variants);
- pages: the image inside the corpus row, read on demand -- or the PNG the harness (or the
  `visdoc-tasks.images.tar.gz` archive) left in `visdoc-tasks/[images/]<name>/`, when it is there:
  `<corpus-id>.png` (vidore) or `<first 50 chars of the stem>_<md5(name)[:8]><ext>` (visrag).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.data.evalset import EvalTask, TaskBuilder
from embedrl.data.hf import load_split
from embedrl.data.media import CellImage
from embedrl.data.readers import add_qrel, reader, spec_media
from embedrl.data.registry import DatasetSpec


def _folder(spec: DatasetSpec, root: Path) -> Path:
    return root / spec.path


def _needed(spec: DatasetSpec, root: Path) -> list[Path]:
    return [_folder(spec, root)]


def page_file(parser: str, corpus_id: str) -> str:
    """The file name the harness saves a page under."""
    if parser == "vidore":
        return f"{corpus_id}.png"
    base, ext = os.path.splitext(corpus_id)
    return f"{base[:50]}_{hashlib.md5(corpus_id.encode('utf-8')).hexdigest()[:8]}{ext}"


def _read_visdoc(spec: DatasetSpec, root: Path) -> EvalTask:
    import datasets

    folder, split = _folder(spec, root), str(spec.extra.get("split", "test"))
    queries = load_split(folder, "queries", split)
    corpus = load_split(folder, "corpus", split).cast_column("image", datasets.Image(decode=False))
    qrels_rows = load_split(folder, "qrels", split)
    language = spec.extra.get("language")
    if language:
        queries = queries.filter(lambda row: row["language"] == language)
    media = spec_media(spec, root, [f"visdoc-tasks/{spec.name}", f"visdoc-tasks/images/{spec.name}"])
    q_inst = str(spec.extra.get("query_instruction", "")).strip()
    c_inst = str(spec.extra.get("target_instruction", "")).strip()
    row_of = {str(cid): i for i, cid in enumerate(corpus["corpus-id"])}

    def page(cid: str):
        def make() -> Item:
            if cid not in row_of:
                raise EmbedrlError(f"corpus-id {cid!r} is not in the corpus")
            on_disk = media.root.image(page_file(spec.reader, cid))
            image = on_disk or CellImage(corpus, row_of[cid], "image", f"{folder} corpus[{split}] row {row_of[cid]}")
            return Item(instruction=c_inst, image=image)
        return make

    qrels: dict[str, dict[str, float]] = {}
    for row in qrels_rows:
        add_qrel(qrels, str(row["query-id"]), str(row["corpus-id"]), float(row["score"]))
    build = TaskBuilder(spec, media)
    where = f"{folder} queries[{split}]"
    for i, row in enumerate(queries):
        qid = str(row["query-id"])
        positives = qrels.get(qid, {})
        build.row(f"{where} row {i}", qid, lambda row=row: Item(instruction=q_inst, text=str(row["query"])),
                  [(cid, page(cid)) for cid in positives], positives)
    for cid in row_of:
        build.candidate(cid, page(cid))
    return build.task()


reader("vidore", _needed)(_read_visdoc)
reader("visrag", _needed)(_read_visdoc)
