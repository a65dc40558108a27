"""The synthetic benchmark: `generate_benchmark(out, seed, size)` / `embedrl data synth --out DIR`.

Procedurally rendered scenes (synth_scenes), captions with paraphrases (synth_text) and seven
tasks mirroring MMEB-V2 categories (synth_tasks), written in the MMEB-V2 layouts so the
same readers, trainers and evaluation harness run on it and on real data. Everything is
a function of the seed: a second run with the same seed and size writes byte-identical files.

Layout (every path inside a file is relative to DIR):

    DIR/images/<scene>.png            112x112 scenes (queries and candidates)
    DIR/crops/<scene>-<x>-<y>.png     40x40 region crops (grounding candidates)
    DIR/videos/<scene>/frame_01.png   8-frame clips (frame_01 ... frame_08)
    DIR/train/pairs.jsonl             training pairs, MMEB-train style, with hard negatives and
                                      generic-annotator T-CoTs (qry_tcot, pos_tcot, neg_tcot: one
                                      per negative); read with
                                      `embedrl.data.pairs.read_pairs(DIR/"train/pairs.jsonl", root=DIR)`
    DIR/eval/                         the evaluation sets as a Hub dataset repository in MMEB-V2's published
                                      layout (README.md configs, <Set>/test-00000-of-00001.parquet): image
                                      sets as `ziyjiang/MMEB_Test_Instruct` rows (qry_inst, qry_text,
                                      qry_img_path, tgt_inst, tgt_text, tgt_img_path; gold first), the video
                                      set as MSR-VTT's (video_id, video, caption) plus a config of the
                                      distractor videos (<Set>-corpus); read by the MMEB-V2 readers
    DIR/registry.yaml                 one `embedrl.data.registry` entry per eval set (data root: DIR),
                                      `reader` the harness parser each set mirrors
    DIR/corpus.jsonl                  every distinct eval candidate as `Item.to_dict()`, stable ids
    DIR/oracle.jsonl                  per training pair and eval query: the details that separate
                                      the gold from its hard negatives (analysis only)
    DIR/scenes.jsonl                  every scene's metadata (objects, boxes) by scene id
    DIR/meta.json                     seed, size, version, counts; written last (= complete)

Re-running on a DIR that already holds a complete benchmark with the same seed, size and
generator version does nothing and says so; another benchmark there is replaced only with
`overwrite=True`; a non-empty folder holding anything else is refused. Files are generated
in DIR/.synth-staging and moved into place with meta.json last, so an interrupted run never
leaves a benchmark that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import atomic_write, ensure_dir, read_json, write_json, write_jsonl
from embedrl.core.items import Item
from embedrl.core.tcot import render_tcot
from embedrl.data.registry import DatasetSpec, dump_registry
from embedrl.lab.synth.scenes import NUM_FRAMES, object_box, render, render_frames, save_png
from embedrl.lab.synth.tasks import TASKS, Ctx, Example, Side, Task, annotate, evidence_tcot

logger = logging.getLogger(__name__)

GENERATOR = "embedrl.lab.synth.benchmark"
VERSION = 5  # 2: hard negatives carry generic-annotator T-CoTs (neg_tcot); 3: an image + text query's
# T-CoT is about the objects its text names, not the picture's most salient ones; 4: a composed query's
# T-CoT describes the edited object as the change leaves it (before: as the unchanged picture, a hard
# negative, shows it); 5: version 4's rows written in MMEB-V2's published layout (same scores:
# tests/test_synth.py)
PLACEHOLDER = "<|image_1|>"
# the MMEB-V2 harness parser each set is written for (embedrl/data/mmeb_image.py, mmeb_video.py)
PARSERS = {"Synth-T2I": "image_t2i", "Synth-I2T": "image_i2t", "Synth-VQA": "image_qa",
           "Synth-Grounding": "image_i2i_vg", "Synth-Composed": "image_i2i_vg", "Synth-CLS": "image_cls",
           "Synth-VideoRet": "msrvtt"}
EVAL_REPO = "eval"
TRAIN_NEGS = 2  # hard negatives per training pair
EVAL_HARD = 3  # one-detail hard negatives per eval query (VQA / CLS: every other answer)
STAGING = ".synth-staging"
OWNED = ("images", "crops", "videos", "train", "eval", "registry.yaml", "corpus.jsonl", "oracle.jsonl",
         "scenes.jsonl", "meta.json", STAGING)
DESCRIPTION = ("Synthetic multimodal retrieval benchmark: rendered scenes of coloured shapes and short clips, "
               "seven MMEB-V2-style tasks (retrieval both ways, VQA, grounding, composed queries, "
               "classification, video retrieval) with hard negatives that differ from the gold in one detail.")


@dataclass(frozen=True)
class Plan:
    train_per_task: int
    eval_queries: int


SIZES = {"tiny": Plan(15, 20), "small": Plan(215, 100), "medium": Plan(860, 400)}


class _Media:
    """Assigns each scene / crop / clip its file once; `write` renders them all."""

    def __init__(self):
        self.images: dict[str, Side] = {}
        self.videos: dict[str, Side] = {}

    def image(self, side: Side) -> str:
        if side.scene is None or side.scene.video:
            return ""
        if side.crop is None:
            rel = f"images/{side.scene.id}.png"
        else:
            rel = f"crops/{side.scene.id}-{side.crop[0]}-{side.crop[1]}.png"
        self.images.setdefault(rel, side)
        return rel

    def video(self, side: Side) -> str:
        if side.scene is None or not side.scene.video:
            return ""
        rel = f"videos/{side.scene.id}"
        self.videos.setdefault(rel, side)
        return rel

    def frames(self, side: Side) -> list[str]:
        folder = self.video(side)
        return [f"{folder}/frame_{k:02d}.png" for k in range(1, NUM_FRAMES + 1)] if folder else []

    def write(self, root: Path) -> dict[str, int]:
        from tqdm import tqdm

        for sub in ("images", "crops", "videos"):
            ensure_dir(root / sub)
        jobs = sorted(self.images.items()) + sorted(self.videos.items())
        for rel, side in tqdm(jobs, desc="rendering", unit="file", disable=None):
            if side.scene.video:
                ensure_dir(root / rel)
                for k, img in enumerate(render_frames(side.scene), start=1):
                    save_png(img, root / rel / f"frame_{k:02d}.png")
            else:
                img = render(side.scene)
                save_png(img.crop(side.crop) if side.crop else img, root / rel)
        crops = sum(1 for r in self.images if r.startswith("crops/"))
        return {"images": len(self.images) - crops, "crops": crops, "videos": len(self.videos),
                "frames": len(self.videos) * NUM_FRAMES}


def _rng(seed: int, task: str, split: str) -> random.Random:
    return random.Random(f"embedrl-synth:{seed}:{task}:{split}")


def _examples(task: Task, seed: int, split: str, n: int, n_hard: int, scenes: dict,
              exclude: set[str] = frozenset()) -> list[Example]:
    ctx = Ctx(_rng(seed, task.name, split), n_hard)
    out: list[Example] = []
    for _ in range(50 * n + 100):
        if len(out) == n:
            break
        ctx.scenes = {}
        ex = task.build(ctx)
        if ex is None or any(s.id in exclude for s in (ex.query.scene, ex.gold_scene) if s is not None):
            continue
        scenes.update(ctx.scenes)
        out.append(ex)
    else:
        raise RuntimeError(f"{task.name}: could not build {n} examples")  # a generator bug, not user input
    return out


def _fold(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


def _oracle(ex: Example, split: str, task: Task, file: str, line: int, hard: list[dict], qid: str = "") -> dict:
    described = [ex.gold_scene.objects[d["object"]].describe() for d in hard
                 if ex.gold_scene is not None and d["object"] is not None]
    rethink = "These details separate the match from its closest alternatives."
    row = {"split": split, "dataset": task.name, "file": file, "line": line}
    if qid:
        row["qid"] = qid
    row.update({"gold_scene": ex.gold_scene.id if ex.gold_scene else None, "hard_negatives": hard,
                "qry_evidence": ex.qry_ev, "pos_evidence": ex.pos_ev})
    for side, ev in (("qry", ex.qry_ev), ("pos", ex.pos_ev)):
        answer = "; ".join(dict.fromkeys(described)) or ", ".join(ev.get("text_keywords", []))
        row[f"{side}_tcot"] = render_tcot(evidence_tcot(ev, answer, rethink))
    return row


def _train_row(task: Task, ex: Example, media: _Media) -> dict:
    q, pos, negs = ex.query, ex.gold, [side for side, _ in ex.hard[:TRAIN_NEGS]]
    row: dict = {"dataset": task.name}
    if task.modality == "video":
        row["qry"] = _fold(task.qry_inst, q.text)
        row["pos_text"] = _fold(task.tgt_inst, pos.text)
        row["pos_frames"] = media.frames(pos)
        row["neg_text"] = [_fold(task.tgt_inst, n.text) for n in negs]
        row["neg_frames"] = [media.frames(n) for n in negs]
    else:
        def text(side: Side, inst: str) -> str:
            return _fold(PLACEHOLDER if side.scene is not None else "", inst, side.text)
        row["qry"] = text(q, task.qry_inst)
        row["qry_image_path"] = media.image(q)
        row["pos_text"] = text(pos, task.tgt_inst)
        row["pos_image_path"] = media.image(pos)
        row["neg_text"] = [text(n, task.tgt_inst) for n in negs]
        row["neg_image_path"] = [media.image(n) for n in negs]
    row["qry_tcot"] = render_tcot(annotate(q))
    row["pos_tcot"] = render_tcot(annotate(pos))
    row["neg_tcot"] = [render_tcot(annotate(n)) for n in negs]
    return row


def _eval_rows(task: Task, examples: list[Example], rng: random.Random, media: _Media):
    """Rows (gold first, the rest shuffled), their oracle rows, and the candidates as Items."""
    rows, oracle, items = [], [], []
    pool = [ex.gold for ex in examples]
    for qi, ex in enumerate(examples):
        room = task.n_cands - 1
        rest: list[tuple[Side, dict | None]] = list(ex.hard[:room])
        rest += [(o, None) for o in ex.others[: room - len(rest)]]
        seen = {ex.gold.key} | {s.key for s, _ in rest}
        for side in rng.sample(pool, len(pool)):
            if len(rest) >= room:
                break
            if side.key not in seen:
                seen.add(side.key)
                rest.append((side, None))
        rng.shuffle(rest)
        cands = [ex.gold] + [s for s, _ in rest]
        hard = [{"index": k + 1, **d} for k, (_, d) in enumerate(rest) if d is not None]
        qid = f"{task.name}-{qi:05d}"
        if task.modality == "video":  # MSR-VTT's columns; the other candidates join the pool as the corpus
            vid = ex.gold.scene.id
            row = {"qid": qid, "video_id": vid, "video": f"{vid}.mp4", "caption": ex.query.text,
                   "distractors": [c.scene.id for c in cands[1:]]}
        else:  # MMEB_Test_Instruct's columns, with the Phi-3 image placeholder where a side has an image
            def inst(text: str, has_image: bool) -> str:
                return f"{PLACEHOLDER}\n{text}" if has_image and text else text
            image = media.image(ex.query)
            row = {"qid": qid, "qry_inst": inst(task.qry_inst, bool(image)), "qry_text": ex.query.text,
                   "qry_img_path": image, "tgt_inst": inst(task.tgt_inst, bool(media.image(ex.gold))),
                   "tgt_text": [c.text for c in cands], "tgt_img_path": [media.image(c) for c in cands]}
        rows.append(row)
        oracle.append(_oracle(ex, "eval", task, _parquet(task.name), qi + 1, hard, qid))
        for c in cands:
            items.append(Item(text=c.text, instruction=task.tgt_inst, image=media.image(c) or None,
                              frames=media.frames(c) or None))
    return rows, oracle, items


def eval_examples(seed: int, size: str):
    """(example, media) for every held-out query of a benchmark, in the generator's order (its
    scenes are drawn in sequence across tasks, so no task can be rebuilt alone)."""
    media, eval_scenes = _Media(), {}
    for task in TASKS:
        for ex in _examples(task, seed, "eval", SIZES[size].eval_queries, EVAL_HARD, eval_scenes):
            yield ex, media


def _corpus(items: list[Item]) -> list[dict]:
    out, seen = [], set()
    for item in items:
        d = item.to_dict()
        blob = json.dumps(d, sort_keys=True)
        if blob in seen:
            continue
        seen.add(blob)
        prefix = "v" if item.frames else "i" if item.image else "t"
        out.append({"id": prefix + hashlib.sha1(blob.encode()).hexdigest()[:15], **d})
    return out


def _parquet(config: str) -> str:
    return f"{EVAL_REPO}/{config}/test-00000-of-00001.parquet"


def _write_repo(root: Path, tables: dict[str, list[dict]]) -> dict[str, int]:
    """The eval sets as a Hub dataset repository: one config per set, README.md front matter naming them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts, lines = {}, ["---", "configs:"]
    for config, rows in tables.items():
        path = root / _parquet(config)
        ensure_dir(path.parent)
        with atomic_write(path, "wb") as f:
            pq.write_table(pa.Table.from_pylist(rows), f)
        counts[_parquet(config)] = len(rows)
        lines += [f"- config_name: {config}", "  data_files:", "  - split: test", f"    path: {config}/test-*"]
    with atomic_write(root / EVAL_REPO / "README.md") as f:
        f.write("\n".join(lines + ["---", "", DESCRIPTION, ""]))
    return counts


def _spec(task: Task) -> DatasetSpec:
    extra: dict = {"subset": task.name, "split": "test"}
    if task.modality == "video":
        extra.update(corpus_subset=f"{task.name}-corpus", query_instruction=task.qry_inst,
                     target_instruction=task.tgt_inst)
    return DatasetSpec(name=task.name, modality=task.modality, category=task.category, reader=PARSERS[task.name],
                       scope=task.scope, metric="hit@1", path=EVAL_REPO,
                       media_root="videos" if task.modality == "video" else ".",
                       num_frames=NUM_FRAMES if task.modality == "video" else None,
                       notes=f"{task.notes}; {task.n_cands} candidates per query", extra=extra)


def _write_benchmark(root: Path, seed: int, size: str) -> dict:
    plan = SIZES[size]
    media, scenes, counts = _Media(), {}, {}
    eval_scenes: dict = {}
    corpus_items, oracle = [], []
    tables: dict[str, list[dict]] = {}
    for task in TASKS:
        examples = _examples(task, seed, "eval", plan.eval_queries, EVAL_HARD, eval_scenes)
        rows, orc, items = _eval_rows(task, examples, _rng(seed, task.name, "eval-candidates"), media)
        if task.modality == "video":
            distractors = dict.fromkeys(v for row in rows for v in row.pop("distractors"))
            tables[f"{task.name}-corpus"] = [{"video_id": v, "video": f"{v}.mp4"} for v in distractors]
        tables[task.name] = rows
        oracle += orc
        corpus_items += items
    counts.update(_write_repo(root, tables))
    scenes.update(eval_scenes)
    per_task = [_examples(t, seed, "train", plan.train_per_task, TRAIN_NEGS, scenes, set(eval_scenes)) for t in TASKS]
    train_rows, train_oracle = [], []
    for i in range(plan.train_per_task):  # interleave tasks, so any prefix of the file mixes them
        for task, examples in zip(TASKS, per_task, strict=True):
            ex = examples[i]
            train_rows.append(_train_row(task, ex, media))
            hard = [{"index": k, **d} for k, (_, d) in enumerate(ex.hard[:TRAIN_NEGS])]
            train_oracle.append(_oracle(ex, "train", task, "train/pairs.jsonl", len(train_rows), hard))
    counts["train/pairs.jsonl"] = write_jsonl(root / "train" / "pairs.jsonl", train_rows)
    counts["oracle.jsonl"] = write_jsonl(root / "oracle.jsonl", train_oracle + oracle)
    counts["corpus.jsonl"] = write_jsonl(root / "corpus.jsonl", _corpus(corpus_items))
    scene_rows = ({"id": sid, **s.to_dict(), "boxes": [object_box(s, i) for i in range(len(s.objects))]}
                  for sid, s in sorted(scenes.items()))
    counts["scenes.jsonl"] = write_jsonl(root / "scenes.jsonl", scene_rows)
    with atomic_write(root / "registry.yaml") as f:
        f.write(dump_registry([_spec(t) for t in TASKS]))
    counts.update(media.write(root))
    meta = {"generator": GENERATOR, "version": VERSION, "seed": seed, "size": size, "description": DESCRIPTION,
            "tasks": {t.name: {"category": t.category, "modality": t.modality, "scope": t.scope,
                               "candidates": t.n_cands} for t in TASKS},
            "counts": counts}
    write_json(root / "meta.json", meta)
    return meta


def read_meta(out: str | os.PathLike) -> dict | None:
    """The meta.json of a complete benchmark in `out`, or None."""
    path = Path(out) / "meta.json"
    if not path.is_file():
        return None
    try:
        meta = read_json(path)
    except EmbedrlError:
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == GENERATOR else None


def _check_target(out: Path, meta: dict | None, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise EmbedrlError(f"{out} exists and is not a directory")
    entries = set(os.listdir(out)) if out.is_dir() else set()
    if meta is not None and not overwrite:
        raise EmbedrlError(f"{out} holds a synthetic benchmark with seed {meta.get('seed')}, size "
                           f"{meta.get('size')} (version {meta.get('version')}); pass --overwrite to replace it")
    if meta is None and not entries <= set(OWNED):
        raise EmbedrlError(f"{out} is not empty and holds no synthetic benchmark; choose a new or empty directory")
    if meta is None and entries:
        logger.warning("%s holds an incomplete benchmark (interrupted run?); replacing it", out)


def _install(staging: Path, out: Path) -> None:
    """Move the staged files into `out`, meta.json last; an old benchmark is made incomplete first."""
    (out / "meta.json").unlink(missing_ok=True)
    for name in OWNED:
        path = out / name
        if name in (STAGING, "meta.json") or not path.exists():
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for name in sorted(os.listdir(staging)):
        if name != "meta.json":
            os.replace(staging / name, out / name)
    os.replace(staging / "meta.json", out / "meta.json")


def _summary(out: Path, meta: dict, seconds: float, skipped: bool) -> dict:
    paths = {"train": out / "train" / "pairs.jsonl", "registry": out / "registry.yaml",
             "corpus": out / "corpus.jsonl", "oracle": out / "oracle.jsonl", "scenes": out / "scenes.jsonl",
             "meta": out / "meta.json"}
    paths = {k: str(v) for k, v in paths.items()}
    paths["eval"] = {t: str(out / _parquet(t)) for t in meta.get("tasks", {})}
    size_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"out": str(out), "seed": meta["seed"], "size": meta["size"], "skipped": skipped,
            "seconds": round(seconds, 2), "bytes": size_bytes, "counts": meta["counts"], "paths": paths}


def generate_benchmark(out: str | os.PathLike, seed: int = 0, size: str = "small", overwrite: bool = False) -> dict:
    """Write the synthetic benchmark to `out` (see the module docstring); returns a summary.

    The summary holds `out`, `seed`, `size`, `skipped` (an identical benchmark was already
    there), `seconds`, `bytes` (on disk), `counts` (rows per file, images, crops, videos,
    frames) and `paths` (absolute paths of the files, `eval` by set name).
    """
    if size not in SIZES:
        raise EmbedrlError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EmbedrlError(f"seed must be a non-negative integer, got {seed!r}")
    out = Path(out)
    start = time.perf_counter()
    meta = read_meta(out)
    if meta and not overwrite and (meta.get("seed"), meta.get("size"), meta.get("version")) == (seed, size, VERSION):
        logger.info("%s already holds the complete benchmark (seed %d, size %s); nothing to do", out, seed, size)
        return _summary(out, meta, time.perf_counter() - start, skipped=True)
    _check_target(out, meta, overwrite)
    ensure_dir(out)
    staging = out / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    try:
        ensure_dir(staging)
        logger.info("generating the %s synthetic benchmark (seed %d) in %s", size, seed, out)
        meta = _write_benchmark(staging, seed, size)
        _install(staging, out)
    except OSError as e:
        raise EmbedrlError(f"cannot write the benchmark to {out}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _summary(out, meta, time.perf_counter() - start, skipped=False)
