"""The synthetic benchmark: layout, readability by our readers, hard negatives, annotations, determinism, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_jsonl
from embedrl.core.items import Item
from embedrl.core.tcot import check_evidence, parse_tcot, render_tcot
from embedrl.data.pairs import read_pairs
from embedrl.data.registry import load_registry
from embedrl.lab.synth.benchmark import SIZES, generate_benchmark, read_meta
from embedrl.lab.synth.scenes import CANVAS, Scene, render, scene_diff
from embedrl.lab.synth.tasks import TASK_NAMES, TASKS
from embedrl.lab.synth.text import SHAPE_PLURALS

SEED = 3


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "bench"
    summary = generate_benchmark(out, seed=SEED, size="tiny")
    assert not summary["skipped"] and summary["out"] == str(out)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _scenes(root: Path) -> dict[str, Scene]:
    return {row["id"]: Scene.from_dict(row) for row in read_jsonl(root / "scenes.jsonl")}


def _eval_rows(root: Path, config: str) -> list[dict]:
    """A set's rows as the published parquet holds them."""
    import pyarrow.parquet as pq

    return pq.read_table(root / "eval" / config / "test-00000-of-00001.parquet").to_pylist()


def _scene_of(path: str) -> str:
    """Scene id from a media path: images/<id>.png, crops/<id>-x-y.png, videos/<id>."""
    return Path(path).name.split(".")[0].split("-")[0]


def test_layout_counts_and_registry(bench):
    meta = read_meta(bench)
    assert meta["seed"] == SEED and meta["size"] == "tiny"
    for name in ("train/pairs.jsonl", "registry.yaml", "corpus.jsonl", "oracle.jsonl", "scenes.jsonl"):
        assert (bench / name).is_file(), name
    plan = SIZES["tiny"]
    assert meta["counts"]["train/pairs.jsonl"] == len(read_jsonl(bench / "train/pairs.jsonl")) == plan.train_per_task * len(TASKS)
    specs = load_registry(bench / "registry.yaml")
    assert [s.name for s in specs] == list(TASK_NAMES)
    by_name = {s.name: s for s in specs}
    assert {s.category for s in specs} == {"I-RET", "I-QA", "I-VG", "I-CLS", "V-RET"}
    assert by_name["Synth-VideoRet"].reader == "msrvtt" and by_name["Synth-VideoRet"].scope == "global"
    assert by_name["Synth-CLS"].reader == "image_cls" and by_name["Synth-Composed"].reader == "image_i2i_vg"
    assert all(s.metric == "hit@1" for s in specs)
    for spec in specs:
        rows = _eval_rows(bench, spec.name)
        assert len(rows) == plan.eval_queries == meta["counts"][f"eval/{spec.name}/test-00000-of-00001.parquet"]
    assert len(list((bench / "videos").iterdir())) == meta["counts"]["videos"]
    assert len(read_jsonl(bench / "oracle.jsonl")) == meta["counts"]["oracle.jsonl"] == (
        plan.train_per_task + plan.eval_queries) * len(TASKS)


def test_eval_sets_read_by_the_harness_readers(bench):
    from embedrl.data.readers import read_task

    for spec in load_registry(bench / "registry.yaml"):
        task = read_task(spec, bench)
        assert len(task.queries) == SIZES["tiny"].eval_queries
        n = read_meta(bench)["tasks"][spec.name]["candidates"]
        if spec.scope == "local":
            assert all(len(c) == n for c in task.local_candidates)
        for rel in task.relevance:
            assert list(rel.values()) == [1.0]


def test_eval_rows_gold_first_and_declared_count(bench):
    meta, scenes = read_meta(bench), _scenes(bench)
    for task in TASKS:
        rows = _eval_rows(bench, task.name)
        oracle = [r for r in read_jsonl(bench / "oracle.jsonl") if r["split"] == "eval" and r["dataset"] == task.name]
        n = meta["tasks"][task.name]["candidates"]
        if task.modality == "video":  # MSR-VTT's rows: the gold video; the rest of the pool is the corpus config
            corpus = {r["video_id"] for r in _eval_rows(bench, f"{task.name}-corpus")}
            for row, orc in zip(rows, oracle, strict=True):
                assert row["qid"] == orc["qid"] and row["video_id"] == orc["gold_scene"]
                assert {h["scene"] for h in orc["hard_negatives"]} <= corpus | {r["video_id"] for r in rows}
            continue
        for row, orc in zip(rows, oracle, strict=True):
            assert row["qid"] == orc["qid"]
            paths = row["tgt_img_path"]
            assert len(row["tgt_text"]) == len(paths) == n
            keys = list(zip(row["tgt_text"], paths, strict=True))
            assert len(set(keys)) == n, "candidates of a query are distinct"
            assert row["qry_inst"].startswith("<|image_1|>") == bool(row["qry_img_path"])
            if task.name in ("Synth-T2I", "Synth-Composed", "Synth-Grounding"):
                assert _scene_of(paths[0]) == orc["gold_scene"]
            if task.name in ("Synth-I2T", "Synth-CLS", "Synth-VQA", "Synth-Grounding"):
                assert _scene_of(row["qry_img_path"]) == orc["gold_scene"]
            if task.name == "Synth-CLS":
                shapes = [o.shape for o in scenes[orc["gold_scene"]].objects]
                major = max(set(shapes), key=shapes.count)
                assert row["tgt_text"][0] == SHAPE_PLURALS[major]
                assert sorted(row["tgt_text"]) == sorted(SHAPE_PLURALS.values())
            for h in orc["hard_negatives"]:  # the recorded hard negative is where the row has it
                assert 1 <= h["index"] < n
                if h["scene"] and task.name != "Synth-I2T":
                    assert _scene_of(paths[h["index"]]) == h["scene"]


def test_hard_negatives_differ_in_exactly_one_detail(bench):
    scenes = _scenes(bench)
    checked = 0
    for row in read_jsonl(bench / "oracle.jsonl"):
        assert row["hard_negatives"], row["qid"] if "qid" in row else row["line"]
        for h in row["hard_negatives"]:
            assert h["gold"] != h["neg"]
            if not h["scene"]:
                continue
            gold, neg = scenes[row["gold_scene"]], scenes[h["scene"]]
            assert scene_diff(gold, neg) == [(h["object"], h["attribute"])]
            assert gold.objects[h["object"]].get(h["attribute"]) == h["gold"]
            assert neg.objects[h["object"]].get(h["attribute"]) == h["neg"]
            checked += 1
    assert checked > 100


def test_hard_negative_images_differ_from_gold_pixels(bench):
    scenes = _scenes(bench)
    for row in read_jsonl(bench / "oracle.jsonl")[:40]:
        for h in row["hard_negatives"]:
            if h["scene"] and not scenes[h["scene"]].video:
                assert render(scenes[row["gold_scene"]]).tobytes() != render(scenes[h["scene"]]).tobytes()


def test_pairs_read_with_read_pairs(bench):
    pairs, skipped = read_pairs(bench / "train" / "pairs.jsonl", root=bench)
    assert not skipped and len(pairs) == SIZES["tiny"].train_per_task * len(TASKS)
    assert {p.dataset for p in pairs} == set(TASK_NAMES)
    for p in pairs:
        assert len(p.negs) == 2 and p.qry_tcot and p.pos_tcot
        assert "<|image_1|>" not in p.query.text
        if p.dataset == "Synth-VideoRet":
            assert len(p.pos.frames) == 8 and all(len(n.frames) == 8 for n in p.negs)
        if p.dataset in ("Synth-T2I", "Synth-Composed", "Synth-Grounding"):
            assert p.pos.image and all(n.image for n in p.negs)
            assert p.pos.load_image().size == ((CANVAS, CANVAS) if p.dataset != "Synth-Grounding" else (40, 40))
    negs_equal_pos = [p for p in pairs for n in p.negs if n.content_hash() == p.pos.content_hash()]
    assert not negs_equal_pos


def test_annotations_and_oracle_tcots_are_valid(bench):
    pairs, _ = read_pairs(bench / "train" / "pairs.jsonl", root=bench, check_media=False)
    for p in pairs:
        assert len(p.neg_tcots) == len(p.negs)  # hard negatives are annotated like positives
        for text, item in ((p.qry_tcot, p.query), (p.pos_tcot, p.pos), *zip(p.neg_tcots, p.negs)):
            tcot = parse_tcot(text)
            assert tcot.valid, (text, tcot.reason)
            assert render_tcot(tcot) == text
            assert tcot.has_evidence and tcot.answer
            assert check_evidence(tcot, item) is None
    for row in read_jsonl(bench / "oracle.jsonl"):
        for side in ("qry", "pos"):
            tcot = parse_tcot(row[f"{side}_tcot"])
            assert tcot.valid and tcot.has_evidence, row
            assert all(0 <= b[0] < b[2] <= 1000 and 0 <= b[1] < b[3] <= 1000 for b in tcot.boxes)


def test_generic_annotator_evidence_is_often_incomplete(bench):
    """The annotator does not see the negatives: its boxes miss the discriminating object in some pairs."""
    rows = read_jsonl(bench / "train" / "pairs.jsonl")
    oracle = [r for r in read_jsonl(bench / "oracle.jsonl") if r["split"] == "train"]
    covered = []
    for row, orc in zip(rows, oracle, strict=True):
        needed = {tuple(b) for b in orc["pos_evidence"].get("bbox_2d", [])}
        if row["dataset"] == "Synth-T2I" and needed:
            given = {tuple(b) for b in parse_tcot(row["pos_tcot"]).boxes}
            covered.append(needed <= given)
    assert covered and 0 < sum(covered) < len(covered)


def test_corpus_items(bench):
    rows = read_jsonl(bench / "corpus.jsonl")
    items = [Item.from_dict(r, root=bench) for r in rows]
    assert len({i.id for i in items}) == len(items) == read_meta(bench)["counts"]["corpus.jsonl"]
    assert {i.modality for i in items} == {"image", "text", "video"}
    assert all(os.path.isfile(i.image) for i in items if i.image)


def test_same_seed_is_byte_identical_and_rerun_skips(bench, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["-q", "data", "synth", "--out", str(out), "--seed", str(SEED), "--size", "tiny"]) == 0
    assert "registry:" in capsys.readouterr().out
    assert _files(out) == _files(bench)
    before = {p: (out / p).stat().st_mtime_ns for p in _files(out)}
    assert generate_benchmark(out, seed=SEED, size="tiny")["skipped"]
    assert {p: (out / p).stat().st_mtime_ns for p in _files(out)} == before
    meta = (out / "meta.json").stat().st_mtime_ns
    assert all((out / p).stat().st_mtime_ns <= meta for p in before)  # meta.json is written last


def test_other_benchmark_needs_overwrite_and_leftovers_are_replaced(bench, tmp_path):
    out = tmp_path / "b"
    (out / ".synth-staging" / "images").mkdir(parents=True)  # what an interrupted run leaves
    (out / "images").mkdir()
    (out / "images" / "stale.png").write_bytes(b"x")
    generate_benchmark(out, seed=SEED + 1, size="tiny")
    assert not (out / "images" / "stale.png").exists() and not (out / ".synth-staging").exists()
    with pytest.raises(EmbedrlError, match="--overwrite"):
        generate_benchmark(out, seed=SEED, size="tiny")
    assert read_meta(out)["seed"] == SEED + 1
    generate_benchmark(out, seed=SEED, size="tiny", overwrite=True)
    assert _files(out) == _files(bench)


def test_cli_errors_are_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for out in (blocker / "sub", blocker, foreign):
        assert main(["data", "synth", "--out", str(out), "--size", "tiny"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("embedrl: error:")
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit) as e:
        main(["data", "synth", "--out", str(tmp_path / "x"), "--size", "huge"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice" in err
    with pytest.raises(EmbedrlError, match="unknown size"):
        generate_benchmark(tmp_path / "y", size="huge")


def test_oracle_rows_point_at_their_rows(bench):
    import pyarrow.parquet as pq

    files = {}
    for row in read_jsonl(bench / "oracle.jsonl"):
        if row["file"] not in files:
            path = bench / row["file"]
            files[row["file"]] = pq.read_table(path).to_pylist() if path.suffix == ".parquet" else read_jsonl(path)
        target = files[row["file"]][row["line"] - 1]
        assert target.get("dataset", row["dataset"]) == row["dataset"]
        assert target.get("qid") == row.get("qid")
    assert json.loads((bench / "meta.json").read_text())["version"] >= 1


def test_annotator_tcots_cover_every_eval_item_and_feed_the_ceiling_script(synth_tiny_dir, tiny_clip_dir):
    from embedrl.data.readers import read_task
    from embedrl.eval.mmeb import load_specs
    from embedrl.lab.diagnostics.heldout import annotator_tcots, media_key

    tcots = annotator_tcots(seed=0, size="tiny")
    for spec in load_specs(synth_tiny_dir / "registry.yaml"):
        task = read_task(spec, synth_tiny_dir)
        for item in [*task.queries, *task.candidates]:
            tcot = tcots[media_key(item.text, item.image, item.frames)]
            assert tcot.valid and tcot.has_evidence
            if item.text and not item.image and not item.frames:
                assert all(k.lower() in item.text.lower() for k in tcot.keywords)  # copied from the text
    from embedrl.lab.diagnostics import oracle_ceiling

    rows = oracle_ceiling.main(["--embedder", str(tiny_clip_dir), "--data", str(synth_tiny_dir),
                                                "--queries", "3"])
    assert set(rows) == {"raw", "oracle query T-CoT", "annotator T-CoT, both sides"}
    assert all(0 <= v <= 100 for r in rows.values() for v in r.values())


@pytest.mark.parametrize("name", ["Synth-VQA", "Synth-Grounding", "Synth-Composed"])
def test_annotated_query_tcot_is_about_what_its_text_names(name):
    """An image + text query's teacher T-CoT boxes the objects its question, expression or edit
    names (what must be matched), not the picture's most salient ones."""
    from embedrl.lab.synth.benchmark import _examples
    from embedrl.lab.synth.scenes import salience_order
    from embedrl.lab.synth.tasks import annotate

    task = next(t for t in TASKS if t.name == name)
    examples = _examples(task, SEED, "train", 40, 3, {})
    about_other = 0
    for ex in examples:
        tcot = annotate(ex.query)
        if ex.query.about:
            assert tcot.boxes == ex.qry_ev["bbox_2d"]
            assert tcot.rethink.startswith("After the change" if name == "Synth-Composed" else "The text is about")
            about_other += list(ex.query.about) != salience_order(ex.query.scene)[:len(ex.query.about)]
    assert about_other > 10  # the text's objects are often not the most salient: the annotator must read it


def test_a_composed_query_tcot_says_what_the_change_makes():
    """What a composed query must match is the edited picture: its teacher T-CoT names the edited
    object as the change leaves it (the positive), not as the unchanged picture shows it (the
    query's own image, one of its hard negatives)."""
    from embedrl.lab.synth.benchmark import _examples
    from embedrl.lab.synth.tasks import annotate

    task = next(t for t in TASKS if t.name == "Synth-Composed")
    changed = 0
    for ex in _examples(task, SEED, "train", 40, 3, {}):
        (i,) = ex.query.about
        tcot = annotate(ex.query)
        after, before = ex.gold_scene.objects[i], ex.query.scene.objects[i]
        assert tcot.answer == after.describe()
        assert f"{after.colour} {after.shape}" in tcot.keywords
        assert any(h.scene is ex.query.scene for h, _ in ex.hard)  # the unchanged picture is a hard negative
        changed += after.describe() != before.describe()
    assert changed > 20  # colour, shape and size edits change the words (position edits move the box)


def test_composed_edits_match_the_held_out_queries_and_the_reading_script_runs(synth_tiny_dir, tiny_reasoner_dir):
    """Every held-out composed query has its edit rebuilt (before / after words), and
    embedrl.lab.diagnostics.composed_reading reads a reasoner's T-CoTs for them."""

    from embedrl.data.readers import read_task
    from embedrl.eval.mmeb import load_specs
    from embedrl.lab.diagnostics.heldout import composed_edits, media_key

    spec = {s.name: s for s in load_specs(synth_tiny_dir / "registry.yaml")}["Synth-Composed"]
    queries = read_task(spec, synth_tiny_dir).queries
    edits = composed_edits(seed=0, size="tiny")
    pairs = [edits[media_key(q.text, q.image, q.frames)] for q in queries]
    assert len(pairs) == len(queries) and any(before != after for before, after in pairs)
    from embedrl.lab.diagnostics import composed_reading

    rows = composed_reading.main(["--data", str(synth_tiny_dir), "--reasoner", str(tiny_reasoner_dir)])
    (row,) = rows.values()
    assert set(row) == {"usable", "names the result", "names the unchanged object"}
    assert all(0 <= v <= 100 for v in row.values())


def test_the_reading_script_asks_grounding_phrases_and_composed_edits(synth_tiny_dir, tiny_reasoner_dir):
    """embedrl.lab.diagnostics.reading: the warm-up's refer, caption and edit prompts on the held-out queries."""
    from embedrl.lab.diagnostics import reading

    rows = reading.main(["--data", str(synth_tiny_dir), "--reasoner", str(tiny_reasoner_dir),
                                                "--queries", "6"])
    (row,) = rows.values()
    assert set(row) == {"names the referred object", "caption's first object", "names the edit's result",
                        "names the unchanged object"}
    assert all(0 <= v <= 100 for v in row.values())


def _as_jsonl_layout(bench: Path, out: Path) -> Path:
    """The same benchmark in embedrl's own JSONL layout (image_rows / video_rows), the layout version 4 wrote."""
    from embedrl.data.registry import DatasetSpec, dump_registry

    specs = []
    for spec in load_registry(bench / "registry.yaml"):
        rows = _eval_rows(bench, spec.name)
        extra = {}
        if spec.modality == "video":
            inst, tgt = spec.extra["query_instruction"], spec.extra["target_instruction"]
            rows = [{"qid": r["qid"], "qry_inst": inst, "qry_text": r["caption"], "tgt_inst": tgt,
                     "tgt_video_path": [f"videos/{r['video_id']}"]} for r in rows]
            corpus = [{"tgt_inst": tgt, "tgt_video_path": [f"videos/{r['video_id']}"]}
                      for r in _eval_rows(bench, f"{spec.name}-corpus")]
            (out / f"{spec.name}_corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
            extra["corpus"] = str(out / f"{spec.name}_corpus.jsonl")  # absolute: outside the data root
        (out / f"{spec.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        specs.append(DatasetSpec(spec.name, spec.modality, spec.category,
                                 "video_rows" if spec.modality == "video" else "image_rows", spec.scope, spec.metric,
                                 str(out / f"{spec.name}.jsonl"), media_root=".", num_frames=spec.num_frames,
                                 extra=extra))
    (out / "registry.yaml").write_text(dump_registry(specs))
    return out / "registry.yaml"


def test_published_layout_scores_equal_the_jsonl_layout(synth_tiny_dir, tiny_clip_dir, tmp_path):
    """One benchmark, two layouts: the published readers and embedrl's JSONL readers give the same items,
    pools and every metric of every set."""
    from embedrl.data.readers import read_task
    from embedrl.eval.mmeb import evaluate
    from embedrl.models.base import load_embedder

    jsonl_registry = _as_jsonl_layout(synth_tiny_dir, tmp_path)
    for a, b in zip(load_registry(synth_tiny_dir / "registry.yaml"), load_registry(jsonl_registry), strict=True):
        ta, tb = read_task(a, synth_tiny_dir), read_task(b, synth_tiny_dir)
        assert [(q.id, q.text, q.instruction, q.image, q.frames) for q in ta.queries] == \
               [(q.id, q.text, q.instruction, q.image, q.frames) for q in tb.queries], a.name
        assert [(c.text, c.instruction, c.image, c.frames) for c in ta.candidates] == \
               [(c.text, c.instruction, c.image, c.frames) for c in tb.candidates], a.name
        assert ta.relevance == tb.relevance and ta.local_candidates == tb.local_candidates
    clip, sets = load_embedder(str(tiny_clip_dir)), ["Synth-CLS", "Synth-Composed", "Synth-VideoRet"]
    published = evaluate(clip, synth_tiny_dir / "registry.yaml", synth_tiny_dir, tmp_path / "a", datasets=sets).results
    own = evaluate(clip, jsonl_registry, synth_tiny_dir, tmp_path / "b", datasets=sets).results
    merged = {**published["metrics"]["image"], **published["metrics"]["video"]}
    assert sorted(merged) == sorted(sets)
    for name, scores in {**own["metrics"]["image"], **own["metrics"]["video"]}.items():
        for key, value in scores.items():
            if isinstance(value, float):
                assert merged[name][key] == pytest.approx(value, abs=1e-9), (name, key)
