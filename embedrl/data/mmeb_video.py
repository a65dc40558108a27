"""MMEB-V2's 18 video tasks as published: annotation datasets (`VLM2Vec/*`, `lmms-lab/YouCook2`) plus
the frame archives of `TIGER-Lab/MMEB-V2` (`video-tasks/frames/{video_cls,video_ret,video_mret,video_qa}`).

Each reader is one of the harness's parsers (TIGER-AI-Lab/VLM2Vec `src/data/eval_dataset/*.py`), its
columns and candidate names as published; instructions come from the registry entry
(`query_instruction`, `target_instruction`: the harness's constants). A video is its frame folder,
8 frames sampled uniformly (media.py); raw videos are never needed.

    video_classification  video -> label; global: the pool is the row labels plus the dataset's full
                          label list (`labels`: a list, or a key of the bundled mmeb_v2_labels.json)
    ssv2                  video -> label among the row's `neg_text` (local; the gold need not be first)
    msrvtt msvd didemo    caption -> video; global over the row videos, named by video id
    youcook2 vatex
    moment_retrieval      caption + video -> clip; local over the clip folders beside the video's
                          `query/` frames; the folder named positive* is the gold
    momentseeker          text, text + image or text + video -> clip; local over `positive_frames` (all
                          relevant) and `negative_frames`
    videomme nextqa       video + question -> answer option; local, options as each parser writes them
    egoschema mvbench
    activitynetqa
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, sample_frames
from embedrl.data.evalset import EvalTask, TaskBuilder
from embedrl.data.hf import load_split
from embedrl.data.mmeb_image import annotation, annotation_needed, rows_of
from embedrl.data.readers import reader, spec_media
from embedrl.data.registry import DatasetSpec

OPTION_LETTERS = "ABCD"


def _inst(spec: DatasetSpec, key: str = "query_instruction") -> str:
    return str(spec.extra.get(key, "")).strip()


def labels_of(spec: DatasetSpec) -> list[str]:
    labels = spec.extra.get("labels") or []
    if isinstance(labels, str):
        table = json.loads((resources.files("embedrl.data") / "mmeb_v2_labels.json").read_text(encoding="utf-8"))
        if labels not in table:
            raise EmbedrlError(f"{spec.name}: no label list {labels!r} (known: {', '.join(table)})")
        labels = table[labels]
    return [str(label) for label in labels]


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(str(path)))[0]


# ---------------------------------------------------------------- classification and retrieval

def _read_classification(spec: DatasetSpec, root: Path, local: bool) -> EvalTask:
    where, rows = rows_of(spec, root)
    media = spec_media(spec, root)
    build = TaskBuilder(spec, media)
    text = lambda label: lambda: Item(text=label)  # noqa: E731
    for i, row in enumerate(rows):
        try:
            vid, gold = str(row["video_id"]), str(row["pos_text"])
            names = [str(t) for t in row["neg_text"]] if local else [gold]
        except (KeyError, TypeError) as e:
            build.miss(f"{where} row {i}", f"malformed row ({type(e).__name__}: {e})")
            continue
        query = lambda vid=vid: Item(instruction=_inst(spec), frames=media.frames(vid))  # noqa: E731
        build.row(f"{where} row {i}", f"q{i}", query, [(n, text(n)) for n in names], {gold: 1.0})
    for label in labels_of(spec):
        build.candidate(label, text(label))
    return build.task()


reader("video_classification", annotation_needed)(lambda s, r: _read_classification(s, r, local=False))
reader("ssv2", annotation_needed)(lambda s, r: _read_classification(s, r, local=True))

# per parser: (video id, caption) of a row
RETRIEVAL: dict[str, Callable[[dict], tuple[str, str]]] = {
    "msrvtt": lambda row: (str(row["video_id"]), str(row["caption"])),
    "msvd": lambda row: (str(row["video_id"]), str(row["caption"][0])),
    "didemo": lambda row: (_stem(row["video"]), str(row["caption"])),
    "youcook2": lambda row: (str(row["id"]), str(row["sentence"])),
    "vatex": lambda row: (str(row["videoID"]), str(row["enCap"][0])),
}


def _read_retrieval(spec: DatasetSpec, root: Path, columns: Callable[[dict], tuple[str, str]]) -> EvalTask:
    where, rows = rows_of(spec, root)
    media = spec_media(spec, root)
    build = TaskBuilder(spec, media)

    def video(vid: str) -> Callable[[], Item]:
        return lambda: Item(instruction=_inst(spec, "target_instruction"), frames=media.frames(vid))

    for i, row in enumerate(rows):
        try:
            vid, caption = columns(row)
        except (KeyError, IndexError, TypeError) as e:
            build.miss(f"{where} row {i}", f"malformed row ({type(e).__name__}: {e})")
            continue
        build.row(f"{where} row {i}", str(row.get("qid") or f"q{i}"),
                  lambda c=caption: Item(instruction=_inst(spec), text=c), [(vid, video(vid))], {vid: 1.0})
    corpus = spec.extra.get("corpus_subset")  # extra candidate videos (not a harness feature: the synthetic set's)
    if corpus:
        folder, _, split = annotation(spec, root)
        for row in load_split(folder, str(corpus), split):
            build.candidate(str(row["video_id"]), video(str(row["video_id"])))
    return build.task()


for _parser, _columns in RETRIEVAL.items():
    reader(_parser, annotation_needed)(lambda s, r, _columns=_columns: _read_retrieval(s, r, _columns))


# ---------------------------------------------------------------- moment retrieval

@reader("moment_retrieval", annotation_needed)
def _read_moments(spec: DatasetSpec, root: Path) -> EvalTask:
    where, rows = rows_of(spec, root)
    media = spec_media(spec, root)
    build = TaskBuilder(spec, media)
    for i, row in enumerate(rows):
        try:
            name, text = _stem(row["video_path"]), str(row["query"])
        except (KeyError, TypeError) as e:
            build.miss(f"{where} row {i}", f"malformed row ({type(e).__name__}: {e})")
            continue
        clips = media.root.subfolders(name)
        if clips is None:
            media.absent.add(media.root.where(name))
            build.miss(f"{where} row {i}", f"no clip folders for video {name} ({media.root.where(name)})")
            continue
        clips = [(f"{name}/{c}", frames) for c, frames in clips if c != "query"]
        gold = [c for c, _ in clips if c.split("/")[-1].startswith("positive")]
        build.row(f"{where} row {i}", f"q{i}",
                  lambda name=name, text=text: Item(instruction=_inst(spec), text=text,
                                                    frames=media.frames(f"{name}/query")),
                  [(c, lambda c=c, frames=frames: _clip(spec, c, frames, media.num_frames)) for c, frames in clips],
                  {g: 1.0 for g in gold[:1]})
    return build.task()


def _clip(spec: DatasetSpec, name: str, frames: list, num_frames: int) -> Item:
    if not frames:
        raise EmbedrlError(f"clip folder {name} holds no frames")
    return Item(instruction=_inst(spec, "target_instruction"), frames=sample_frames(frames, num_frames))


@reader("momentseeker", annotation_needed)
def _read_momentseeker(spec: DatasetSpec, root: Path) -> EvalTask:
    where, rows = rows_of(spec, root)
    media = spec_media(spec, root)
    build = TaskBuilder(spec, media)

    def clip_name(path: str) -> str:
        return "video_frames/" + str(path).replace("/", "_").split(".mp4")[0]

    def query(row: dict) -> Item:
        given, text = str(row.get("input_frames") or ""), str(row["query"])
        if given.endswith(".mp4"):
            return Item(instruction=_inst(spec, "query_instruction_video"), text=text,
                        frames=media.frames(clip_name(given)))
        if given.endswith(".jpg"):
            return Item(instruction=_inst(spec, "query_instruction_image"), text=text,
                        image=media.image(f"query_{given}"))
        return Item(instruction=_inst(spec, "query_instruction_text"), text=text)

    for i, row in enumerate(rows):
        try:
            pos = [clip_name(e["output_path"]) for e in row["positive_frames"]]
            neg = [clip_name(e["output_path"]) for e in row["negative_frames"]]
        except (KeyError, TypeError) as e:
            build.miss(f"{where} row {i}", f"malformed row ({type(e).__name__}: {e})")
            continue
        make = lambda c: lambda: Item(instruction=_inst(spec, "target_instruction"), frames=media.frames(c))  # noqa: E731
        build.row(f"{where} row {i}", f"q{i}", lambda row=row: query(row), [(c, make(c)) for c in pos + neg],
                  {c: 1.0 for c in pos})
    return build.task()


# ---------------------------------------------------------------- video QA

def _stripped(option: str) -> str:
    """The harness's option text: `o[o.find('. '):].strip('. ')` ("A. red" -> "red")."""
    return option[option.find(". "):].strip(". ")


def _lettered(question: str, options: list[str]) -> tuple[str, list[str]]:
    """The harness's `qa_template`: the question, "Options:", then "(A) ..." lines; the lettered options."""
    lettered = [f"({chr(ord('A') + k)}) {o}" for k, o in enumerate(options)]
    return "\n".join([question, "Options:", *lettered]).rstrip(), lettered


def _videomme(row: dict) -> tuple[str, str, list[tuple[str, str]], str]:
    options = [str(o) for o in row["options"]]
    text = str(row["question"]) + "\n" + "\n".join(options)
    return str(row["videoID"]), text, [(o, _stripped(o)) for o in options], options[OPTION_LETTERS.index(row["answer"])]


def _nextqa(row: dict) -> tuple[str, str, list[tuple[str, str]], str]:
    options = [str(row[f"a{k}"]) for k in range(5)]
    text, _ = _lettered(str(row["question"]), options)
    return str(row["video"]), text, [(o, o) for o in options], options[int(row["answer"])]


def _egoschema(row: dict) -> tuple[str, str, list[tuple[str, str]], str]:
    options = [str(o) for o in row["option"]]
    text = str(row["question"]) + " ".join(options)  # as the harness joins them (no separator after the question)
    return str(row["video_idx"]), text, [(o, _stripped(o)) for o in options], options[int(row["answer"])]


def _mvbench(row: dict) -> tuple[str, str, list[tuple[str, str]], str]:
    options = [str(c) for c in row["candidates"]]
    text, lettered = _lettered(str(row["question"]), options)
    gold = lettered[options.index(str(row["answer"]))]
    return f"{row['subset']}/{row['video']}", text, [(o, o) for o in lettered], gold


def _activitynetqa(row: dict) -> tuple[str, str, list[tuple[str, str]], str]:
    return (f"v_{row['video_name']}", str(row["question"]) + "? (A) yes; (B) no.",
            [("yes", "yes"), ("no", "no")], str(row["answer"]))


QA = {"videomme": _videomme, "nextqa": _nextqa, "egoschema": _egoschema, "mvbench": _mvbench,
      "activitynetqa": _activitynetqa}


def _qa_rows(spec: DatasetSpec, root: Path):
    """MVBench is 20 configs concatenated, each row tagged with its config (`subset`), as the harness does."""
    subsets = spec.extra.get("subsets")
    if not subsets:
        yield from [rows_of(spec, root)]
        return
    for name in subsets:
        one = DatasetSpec(**{**spec.__dict__, "extra": {**spec.extra, "subset": name}})
        where, rows = rows_of(one, root)
        yield where, rows.add_column("subset", [name] * len(rows))


def _read_qa(spec: DatasetSpec, root: Path, parse) -> EvalTask:
    media = spec_media(spec, root)
    build = TaskBuilder(spec, media)
    n = 0
    for where, rows in _qa_rows(spec, root):
        for i, row in enumerate(rows):
            try:
                video, text, options, gold = parse(row)
            except (KeyError, IndexError, TypeError, ValueError) as e:
                build.miss(f"{where} row {i}", f"malformed row ({type(e).__name__}: {e})")
                continue
            build.row(f"{where} row {i}", f"q{n}",
                      lambda v=video, t=text: Item(instruction=_inst(spec), text=t, frames=media.frames(v)),
                      [(name, lambda t=shown: Item(text=t)) for name, shown in options], {gold: 1.0})
            n += 1
    return build.task()


for _parser, _parse in QA.items():
    reader(_parser, annotation_needed)(lambda s, r, _parse=_parse: _read_qa(s, r, _parse))
