"""Evaluation harness: registries, readers in each real layout, the runner (tiny CLIP), resume, reports.

Fixture datasets are built here in the layouts of eval/README.md. Expected metrics are
computed by hand from how the data is built: a query whose content equals a candidate's
content gets cosine 1 with it, so its rank is known whatever the (random) model is; exact
ties are broken by candidate order (encoding with batch size 1 makes identical inputs give
bit-identical embeddings).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from faults import SimulatedCrash, crash_before_replace
from PIL import Image

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import sample_frames
from embedrl.data.evalset import MissingData
from embedrl.data.readers import read_qrels, read_task
from embedrl.data.registry import DatasetSpec, dump_registry, load_registry
from embedrl.eval.mmeb import evaluate, registry_path, score_path
from embedrl.eval.report import load_baselines, report

REPO = Path(__file__).resolve().parents[1]
L3 = math.log2(3)


# ---------------------------------------------------------------- fixture builders

def _png(path: Path, color, size=32) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(color))
    arr = (np.array(color, dtype=np.uint8)[None, None] + rng.integers(0, 40, (size, size, 3), dtype=np.uint8))
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return str(path)


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


COLORS = {"red": (200, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 200), "gray": (100, 100, 100)}


def make_image_rows(root: Path) -> DatasetSpec:
    """Local image rows: q1's gold equals the query image (rank 1); q2's negative does (gold rank >= 2)."""
    for name, color in COLORS.items():
        _png(root / "image-tasks" / "imgs" / f"{name}.png", color)
    _jsonl(root / "image-tasks" / "Toy-I2I.jsonl", [
        {"qry_inst": "<|image_1|> Find the same image.", "qry_text": "", "qry_img_path": "imgs/red.png",
         "tgt_inst": "", "tgt_text": [""], "tgt_img_path": ["imgs/red.png", "imgs/green.png", "imgs/blue.png"]},
        {"qry_inst": "Find the same image.", "qry_text": "", "qry_img_path": "imgs/green.png",
         "tgt_inst": "", "tgt_text": [""], "tgt_img_path": ["imgs/gray.png", "imgs/green.png", "imgs/blue.png"]},
    ])
    return DatasetSpec("Toy-I2I", "image", "I-RET", "image_rows", "local", "hit@1", "image-tasks/Toy-I2I.jsonl",
                       media_root="image-tasks")


def make_frames(folder: Path, color, n: int) -> None:
    for i in range(1, n + 1):
        _png(folder / f"frame_{i}.jpg", tuple(min(255, c + i) for c in color))


def make_video_rows(root: Path) -> DatasetSpec:
    """Global video rows: each query video has an identical twin among the candidates."""
    frames = root / "video-tasks" / "frames"
    for name, color in COLORS.items():
        make_frames(frames / "clips" / name, color, 10)
        make_frames(frames / "queries" / name, color, 10)  # same pixels, other folder
    _jsonl(root / "video-tasks" / "Toy-V2V.jsonl", [
        # the gold is the twin: rank 1
        {"qry_video_path": "queries/red", "tgt_video_path": ["clips/red"]},
        {"qry_video_path": "queries/green", "tgt_video_path": ["clips/green"]},
        # the gold is blue but the pool holds the twin of the query (gray): gold not at rank 1
        {"qry_video_path": "queries/gray", "tgt_video_path": ["clips/blue"]},
    ])
    _jsonl(root / "video-tasks" / "Toy-V2V_pool.jsonl", [{"tgt_video_path": ["clips/gray"]}])
    return DatasetSpec("Toy-V2V", "video", "V-RET", "video_rows", "global", "hit@1", "video-tasks/Toy-V2V.jsonl",
                       media_root="video-tasks/frames", num_frames=8,
                       extra={"corpus": "video-tasks/Toy-V2V_pool.jsonl"})


def make_beir(root: Path) -> DatasetSpec:
    """BEIR visdoc with graded qrels; d2 (grade 1) and d1 (grade 2) show the query's page and tie."""
    folder = root / "visdoc-tasks" / "Toy-Doc"
    pages = folder / "pages"
    _png(pages / "p_red_a.png", COLORS["red"])
    (pages / "p_red_b.png").write_bytes((pages / "p_red_a.png").read_bytes())
    _png(pages / "p_blue.png", COLORS["blue"])
    _png(pages / "p_green.png", COLORS["green"])
    _jsonl(folder / "corpus.jsonl", [
        {"_id": "d2", "image": "pages/p_red_b.png"},  # corpus order decides the tie: d2 first
        {"_id": "d1", "image": "pages/p_red_a.png"},
        {"_id": "d3", "image": "pages/p_blue.png"},
        {"_id": "d4", "image": "pages/p_green.png"},
    ])
    _jsonl(folder / "queries.jsonl", [
        {"_id": "q1", "image": "pages/p_red_a.png"},
        {"_id": "q2", "image": "pages/p_blue.png"},
        {"_id": "q3", "text": "a query without judgements"},
    ])
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq1\td4\t0\nq2\td3\t1\n")
    return DatasetSpec("Toy-Doc", "visdoc", "ViDoRe-V1", "beir", "global", "ndcg_linear@5", "visdoc-tasks/Toy-Doc")


def write_registry(path: Path, specs) -> Path:
    path.write_text(dump_registry(list(specs)))
    return path


# ---------------------------------------------------------------- registries

def test_mmeb_v2_registry_counts_and_names():
    specs = load_registry(registry_path("mmeb_v2"))
    assert len(specs) == 78
    assert Counter(s.modality for s in specs) == {"image": 36, "video": 18, "visdoc": 24}
    assert Counter(s.category for s in specs) == {
        "I-CLS": 10, "I-QA": 10, "I-RET": 12, "I-VG": 4, "V-CLS": 5, "V-QA": 5, "V-RET": 5, "V-MRET": 3,
        "ViDoRe-V1": 10, "ViDoRe-V2": 4, "VisRAG": 6, "VisDoc-OOD": 4}
    by_name = {s.name: s for s in specs}
    for name in ("ImageNet-1K", "MSCOCO_t2i", "MSR-VTT", "ViDoRe_arxivqa", "MMLongBench-page", "K700"):
        assert name in by_name
    assert {s.metric for s in specs if s.modality != "visdoc"} == {"hit@1"}
    assert {s.metric for s in specs if s.modality == "visdoc"} == {"ndcg_linear@5"}
    assert all(s.scope == "local" for s in specs if s.modality == "image")
    assert all(s.scope == "global" and s.reader in ("vidore", "visrag") for s in specs if s.modality == "visdoc")
    assert {s.name for s in specs if s.modality == "video" and s.scope == "global"} == {
        "K700", "HMDB51", "UCF101", "Breakfast", "DiDeMo", "MSR-VTT", "MSVD", "VATEX", "YouCook2"}
    assert by_name["ViDoSeek-page"].extra["aliases"] == ["ViDoSeek-page-fixed"]
    assert all(not Path(s.path).is_absolute() for s in specs)
    # every entry reads a Hub repository download with a reader of the harness's parsers
    assert all(s.path.startswith("hf/") for s in specs)
    assert by_name["ViDoSeek-page"].path == "hf/VLM2Vec/ViDoSeek-page-fixed"  # the fixed labels
    assert by_name["MMLongBench-page"].path == "hf/VLM2Vec/MMLongBench-page-fixed"
    assert by_name["MomentSeeker"].path == "hf/VLM2Vec/MomentSeeker"  # de-duplicated (1602), not _1k8
    assert by_name["YouCook2"].path == "hf/lmms-lab/YouCook2" and by_name["YouCook2"].extra["split"] == "val"
    assert len(by_name["MVBench"].extra["subsets"]) == 20
    from embedrl.data.mmeb_video import labels_of
    assert [len(labels_of(by_name[n])) for n in ("K700", "HMDB51", "UCF101", "Breakfast")] == [700, 51, 101, 10]


def test_recipe_symlink_and_uvrb_registry():
    link = REPO / "eval" / "mmeb_v2.yaml"
    assert link.is_symlink() and link.resolve() == registry_path("mmeb_v2").resolve()
    uvrb = load_registry(registry_path("uvrb"))
    assert len(uvrb) == 16 and {s.reader for s in uvrb} == {"uvrb"}
    assert Counter(s.category for s in uvrb) == {"TXT": 12, "CMP": 2, "VIS": 2}
    metrics = {s.name: s.metric for s in uvrb}
    assert metrics["CMRB"] == "recall@10" and metrics["MS-TI"] == metrics["MS-TV"] == "precision@1"
    assert Counter(metrics.values())["recall@1"] == 13
    with pytest.raises(EmbedrlError, match="no registry"):
        registry_path("no_such_registry")


# ---------------------------------------------------------------- readers

def test_image_rows_reader_local(tmp_path):
    spec = make_image_rows(tmp_path)
    task = read_task(spec, tmp_path)
    assert task.scope == "local" and len(task.queries) == 2
    assert len(task.candidates) == 4  # green and blue are shared by both rows: encoded once
    assert task.queries[0].instruction == "Find the same image."  # placeholder stripped
    assert task.queries[0].image.endswith("imgs/red.png")
    assert task.local_candidates == [[0, 1, 2], [3, 1, 2]]  # row order, shared candidates reused
    assert task.relevance == [{0: 1.0}, {3: 1.0}]  # gold first


def test_image_rows_graded_rel_and_malformed_rows(tmp_path):
    spec = make_image_rows(tmp_path)
    path = tmp_path / spec.path
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["tgt_rel"] = [0, 2, 1]
    _jsonl(path, rows)
    task = read_task(spec, tmp_path)
    c = task.local_candidates[0]
    assert task.relevance[0] == {c[1]: 2.0, c[2]: 1.0}
    rows[1]["tgt_img_path"] = ["imgs/red.png", "imgs/green.png"]
    rows[1]["tgt_text"] = ["a", "b", "c"]
    _jsonl(path, rows)
    task = read_task(spec, tmp_path)  # the malformed row is a missed query, named by file and line
    assert len(task.queries) == 1 and len(task.missed) == 1
    assert "Toy-I2I.jsonl:2: tgt_img_path has 2 entries" in task.missed[0]
    path.write_text(path.read_text().splitlines()[0] + "\n{not json\n")
    task = read_task(spec, tmp_path)
    assert len(task.missed) == 1 and "Toy-I2I.jsonl:2: malformed JSON" in task.missed[0]


def test_missing_files_and_media_are_reported(tmp_path):
    spec = make_image_rows(tmp_path)
    with pytest.raises(MissingData, match="nothere"):
        read_task(DatasetSpec("X", "image", "I-RET", "image_rows", "local", "hit@1", "nothere.jsonl"), tmp_path)
    os.remove(tmp_path / "image-tasks" / "imgs" / "blue.png")
    task = read_task(spec, tmp_path)  # blue is a negative of both rows: left out of the pool, both queries kept
    assert len(task.queries) == 2 and not task.missed and task.absent == {"images": 1}
    assert task.local_candidates == [[0, 1], [2, 1]]
    os.remove(tmp_path / "image-tasks" / "imgs" / "red.png")  # q1's image and gold
    task = read_task(spec, tmp_path)
    assert len(task.queries) == 1 and len(task.missed) == 1 and "red.png" in task.missed[0]
    for name in ("green", "gray"):
        os.remove(tmp_path / "image-tasks" / "imgs" / f"{name}.png")
    with pytest.raises(MissingData) as err:  # nothing usable: the dataset is missing, not scored 0
        read_task(spec, tmp_path)
    assert [p for p in err.value.paths if p.endswith("green.png")]


def test_every_frame_sampler_is_the_harness_linspace():
    """Readers, embedding formats and the trainer share one sampler: MMEB-V2's harness takes
    np.linspace(0, n - 1, k) truncated. The in-line formula the formats once had, int(i * (n - 1) /
    (k - 1)), agrees for k = 2, 4, 8, 16, 32 but not at every k (n = 31, k = 23)."""
    for n in range(1, 100):
        for k in range(1, 40):
            expected = list(range(n)) if n <= k else [int(x) for x in np.linspace(0, n - 1, k)]
            assert sample_frames(list(range(n)), k) == expected, (n, k)
    assert sample_frames(list(range(31)), 23) != [int(i * 30 / 22) for i in range(23)]
    assert sample_frames(list("abc"), None) == sample_frames(list("abc"), 0) == list("abc")


def test_frame_sampling_is_uniform_and_natural_sorted(tmp_path):
    spec = make_video_rows(tmp_path)
    task = read_task(spec, tmp_path)
    frames = [Path(f).name for f in task.queries[0].frames]
    # linspace(0, 9, 8) truncated = 0 1 2 3 5 6 7 9 over frame_1..frame_10 in natural order
    assert frames == [f"frame_{i}.jpg" for i in (1, 2, 3, 4, 6, 7, 8, 10)]
    assert sample_frames(list("abcde"), 8) == list("abcde")
    assert sample_frames([str(i) for i in range(20)], 8) == ["0", "2", "5", "8", "10", "13", "16", "19"]
    assert task.scope == "global" and task.local_candidates is None
    assert len(task.candidates) == 4  # red, green, blue from rows + gray from the corpus file


def test_beir_reader_graded_qrels(tmp_path):
    spec = make_beir(tmp_path)
    qrels = read_qrels(tmp_path / spec.path / "qrels.tsv")
    assert qrels == {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 1.0}}  # header skipped, zero dropped
    task = read_task(spec, tmp_path)
    assert [q.id for q in task.queries] == ["q1", "q2"]  # q3 has no judgement: dropped, noted
    assert task.notes and "1 queries" in task.notes[0]
    ids = task.candidate_ids
    assert {ids[i]: r for i, r in task.relevance[0].items()} == {"d1": 2.0, "d2": 1.0}
    (tmp_path / spec.path / "qrels.tsv").write_text("q1\tdX\t1\n")
    with pytest.raises(EmbedrlError, match="dX"):
        read_task(spec, tmp_path)


def test_uvrb_reader(tmp_path):
    folder = tmp_path / "TOY"
    for name, color in COLORS.items():
        make_frames(folder / "videos_frames" / name, color, 4)
    _png(folder / "images" / "q.png", COLORS["red"])
    _jsonl(folder / "jsonl" / "corpus.jsonl", [{"id": n, "video": f"{n}.mp4"} for n in COLORS])
    _jsonl(folder / "jsonl" / "queries.jsonl", [
        {"id": "t", "text": "a red clip"}, {"id": "i", "image": "q.png"}, {"id": "v", "video": "green.mp4"}])
    _jsonl(folder / "jsonl" / "instances.jsonl", [
        {"qid": "t", "pos": ["red", "gray"]}, {"qid": "i", "pos": ["red"]}, {"qid": "v", "pos": ["green"]}])
    spec = DatasetSpec("TOY", "video", "TXT", "uvrb", "global", "recall@1", "TOY")
    task = read_task(spec, tmp_path)
    assert [q.modality for q in task.queries] == ["text", "image", "video"]
    assert len(task.queries[2].frames) == 4
    assert sorted(task.candidate_ids[i] for i in task.relevance[0]) == ["gray", "red"]


# ---------------------------------------------------------------- runner (real tiny CLIP embedder)

@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    import torch

    from embedrl.models.base import load_embedder

    torch.set_num_threads(1)
    return load_embedder(str(tiny_clip_dir))


@pytest.fixture
def toy_root(tmp_path):
    root = tmp_path / "data"
    specs = [make_image_rows(root), make_video_rows(root), make_beir(root)]
    return root, write_registry(tmp_path / "toy.yaml", specs)


def test_runner_metrics_in_every_layout(clip, toy_root, tmp_path):
    root, registry = toy_root
    run = evaluate(clip, registry, root, tmp_path / "out", batch_size=1)
    assert run.computed == ["Toy-I2I", "Toy-V2V", "Toy-Doc"] and not run.missing
    res = run.results["metrics"]
    img = res["image"]["Toy-I2I"]
    assert img["hit@1"] == 0.5 and img["hit@5"] == 1.0  # q1 gold at 1; q2 gold behind its twin
    assert img["precision@5"] == pytest.approx(0.2) and img["recall@5"] == 1.0
    assert img["num_candidates"] == 4 and img["num_pred"] == 2
    vid = res["video"]["Toy-V2V"]
    assert vid["hit@1"] == pytest.approx(2 / 3) and vid["hit@5"] == 1.0  # pool of 4 videos
    doc = res["visdoc"]["Toy-Doc"]
    q1_linear = (1 + 2 / L3) / (2 + 1 / L3)  # ranking d2 (1), d1 (2): tie kept in corpus order
    assert doc["ndcg_linear@5"] == pytest.approx((q1_linear + 1) / 2, abs=1e-6)
    assert doc["ndcg_exponential@5"] == pytest.approx(((1 + 3 / L3) / (3 + 1 / L3) + 1) / 2, abs=1e-6)
    assert doc["tied_at_1"] == 1 and doc["num_data"] == 2
    pred = [json.loads(x) for x in (tmp_path / "out" / "visdoc" / "Toy-Doc_pred.jsonl").read_text().splitlines()]
    assert pred[0]["qid"] == "q1" and pred[0]["prediction"][:2] == ["d2", "d1"]
    assert pred[0]["label"] == ["d1", "d2"] and pred[0]["rel_scores"] == [2.0, 1.0]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved) == {"metadata", "metrics"} and saved["metadata"]["main_metrics"]["Toy-Doc"] == "ndcg_linear@5"


def test_killed_run_resumes_without_recomputing(clip, toy_root, tmp_path, monkeypatch):
    root, registry = toy_root
    out = tmp_path / "out"
    with monkeypatch.context() as patch, pytest.raises(SimulatedCrash):
        crash_before_replace(patch, "*_score.json", 2)  # the second dataset's predictions are written, not its score
        evaluate(clip, registry, root, out, batch_size=8)
    specs = load_registry(registry)
    first = score_path(out, specs[0])
    assert first.is_file() and not score_path(out, specs[1]).exists()
    mtime = first.stat().st_mtime_ns
    run = evaluate(clip, registry, root, out, batch_size=8)
    assert run.resumed == ["Toy-I2I"] and run.computed == ["Toy-V2V", "Toy-Doc"]
    assert first.stat().st_mtime_ns == mtime
    assert set(run.results["metrics"]) == {"image", "video", "visdoc"}
    again = evaluate(clip, registry, root, out, batch_size=8)
    assert again.computed == [] and len(again.resumed) == 3


def test_sigkill_during_eval_then_rerun_equals_an_uninterrupted_run(clip, tiny_clip_dir, toy_root, tmp_path):
    root, registry = toy_root
    out = tmp_path / "out"
    args = ["eval", "mmeb", "--model", str(tiny_clip_dir), "--data-root", str(root), "--registry", str(registry),
            "--out", str(out), "--batch-size", "8", "--no-report"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "faults.py"), "--kill-before-replace",
                             "*_score.json@2", "--", *args], capture_output=True, env=env, timeout=300)
    assert killed.returncode == -9
    assert (out / "video" / "Toy-V2V_pred.jsonl").is_file() and not (out / "video" / "Toy-V2V_score.json").exists()
    rerun = subprocess.run([sys.executable, "-m", "embedrl", *args], capture_output=True, text=True, env=env,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "computed 2, resumed 1, missing 0" in rerun.stdout
    reference = evaluate(clip, registry, root, tmp_path / "reference", batch_size=8).results["metrics"]
    resumed = json.loads((out / "results.json").read_text())["metrics"]
    assert resumed == reference


def test_missing_dataset_is_listed_not_fatal(clip, toy_root, tmp_path):
    root, registry = toy_root
    specs = load_registry(registry) + [
        DatasetSpec("Absent", "image", "I-CLS", "image_rows", "local", "hit@1", "image-tasks/Absent.jsonl")]
    run = evaluate(clip, specs, root, tmp_path / "out", datasets=["Absent", "Toy-I2I"], batch_size=8)
    assert run.computed == ["Toy-I2I"] and "Absent" in run.missing


class EchoReasoner:
    """A reasoner stand-in that returns empty T-CoTs; it records which roles were asked."""

    def __init__(self):
        self.roles = []

    def generate(self, items, role="query"):
        from embedrl.core.tcot import TCoT

        self.roles.append((role, len(items)))
        return [TCoT() for _ in items]


def test_tcot_modes_call_the_reasoner_per_side(clip, toy_root, tmp_path):
    root, registry = toy_root
    reasoner = EchoReasoner()
    evaluate(clip, registry, root, tmp_path / "q", datasets=["Toy-I2I"], reasoner=reasoner, tcot_mode="query")
    assert reasoner.roles == [("query", 2)]
    reasoner.roles.clear()
    evaluate(clip, registry, root, tmp_path / "b", datasets=["Toy-I2I"], reasoner=reasoner, tcot_mode="both")
    assert reasoner.roles == [("target", 4), ("query", 2)]
    with pytest.raises(EmbedrlError, match="reasoner"):
        evaluate(clip, registry, root, tmp_path / "c", tcot_mode="both")


def test_a_set_can_have_a_tcot_mode_of_its_own(clip, toy_root, tmp_path):
    """Queries raw on one set (candidates keep their T-CoTs), the default mode on the rest; a typo
    in a set's name is refused rather than leaving that set on the default."""
    root, registry = toy_root
    reasoner = EchoReasoner()
    run = evaluate(clip, registry, root, tmp_path / "t", reasoner=reasoner, tcot_mode="both",
                   tcot_mode_by_set={"Toy-I2I": "target"})
    assert "Toy-I2I" in run.computed and len(run.computed) > 1
    scores = {spec.name: json.loads(score_path(tmp_path / "t", spec).read_text())
              for spec in load_registry(registry) if spec.name in run.computed}
    assert "query_tcots" not in scores["Toy-I2I"] and scores["Toy-I2I"]["target_tcots"]["written"] == 4
    assert all("query_tcots" in s for name, s in scores.items() if name != "Toy-I2I")
    assert run.results["metadata"]["tcot_mode_by_set"] == {"Toy-I2I": "target"}
    with pytest.raises(EmbedrlError, match="Toy-I2i"):
        evaluate(clip, registry, root, tmp_path / "x", reasoner=reasoner, tcot_mode="both",
                 tcot_mode_by_set={"Toy-I2i": "target"})
    with pytest.raises(EmbedrlError, match="needs a reasoner"):
        evaluate(clip, registry, root, tmp_path / "y", tcot_mode_by_set={"Toy-I2I": "target"})


class HalfBrokenReasoner:
    """Every other T-CoT broken: bad tags, or key frames for an image."""

    def generate(self, items, role="query"):
        from embedrl.core.tcot import TCoT, parse_tcot

        broken = [parse_tcot('<thinking>{"bbox_2d": [9, 9, 1, 1]}</thinking><rethink>r</rethink><answer>a</answer>'), TCoT(key_frames=[2])]
        return [TCoT(keywords=["red"]) if i % 2 == 0 else broken[i // 2 % 2] for i in range(len(items))]


def test_scores_count_the_tcots_that_fell_back_to_raw_input(clip, toy_root, tmp_path, caplog):
    root, registry = toy_root
    with caplog.at_level("WARNING", logger="embedrl.core.tcot"):
        evaluate(clip, registry, root, tmp_path / "out", datasets=["Toy-I2I"], reasoner=HalfBrokenReasoner(),
                 tcot_mode="both")
    score = json.loads(score_path(tmp_path / "out", load_registry(registry)[0]).read_text())
    assert score["query_tcots"] == {"written": 2, "usable": 1,
                                    "problems": {"box [9, 9, 1, 1] is inverted or empty": 1}}
    assert score["target_tcots"] == {"written": 4, "usable": 2, "problems": {
        "box [9, 9, 1, 1] is inverted or empty": 1, "key frames given for an item without frames": 1}}
    assert "query T-CoTs: 1 of 2 are broken" in caplog.text and "target T-CoTs: 2 of 4 are broken" in caplog.text
    # without a reasoner there is nothing to count
    evaluate(clip, registry, root, tmp_path / "raw", datasets=["Toy-I2I"])
    assert "query_tcots" not in json.loads(score_path(tmp_path / "raw", load_registry(registry)[0]).read_text())


def test_cli_eval_mmeb_then_report(tiny_clip_dir, toy_root, tmp_path, capsys):
    import embedrl.cli as cli

    root, registry = toy_root
    out = tmp_path / "out"
    assert cli.main(["eval", "mmeb", "--model", str(tiny_clip_dir), "--data-root", str(root),
                     "--registry", str(registry), "--out", str(out), "--batch-size", "1"]) == 0
    text = capsys.readouterr().out
    assert "computed 3" in text and "| Model | Overall |" in text
    assert cli.main(["eval", "report", str(out), "--per-dataset"]) == 0
    text = capsys.readouterr().out
    assert "Toy-I2I" in text and "ViDoRe-V1" in text
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["eval", "mmeb", "--model", str(tiny_clip_dir), "--data-root", str(root),
                     "--out", str(out), "--tcot", "query"]) == 1
    assert cli.main(["eval", "mmeb", "--model", str(tiny_clip_dir), "--data-root", str(root),
                     "--out", str(out), "--tcot-set", "Toy-I2I:target"]) == 1
    assert "not NAME=MODE" in capsys.readouterr().err


def make_uvrb(root: Path, name: str) -> None:
    folder = root / name
    for color_name, color in COLORS.items():
        make_frames(folder / "videos_frames" / color_name, color, 4)
    _jsonl(folder / "jsonl" / "corpus.jsonl", [{"id": n, "video": f"{n}.mp4"} for n in COLORS])
    _jsonl(folder / "jsonl" / "queries.jsonl", [{"id": f"q-{n}", "text": f"a {n} clip"} for n in COLORS])
    _jsonl(folder / "jsonl" / "instances.jsonl", [{"qid": f"q-{n}", "pos": [n]} for n in COLORS])


def test_cli_eval_uvrb_with_ability_aggregates(tiny_clip_dir, tmp_path, capsys):
    import embedrl.cli as cli

    make_uvrb(tmp_path / "uvrb", "MSRVTT")
    out = tmp_path / "out"
    assert cli.main(["eval", "uvrb", "--model", str(tiny_clip_dir), "--data-root", str(tmp_path / "uvrb"),
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "computed 1, resumed 0, missing 15" in text
    ability_table = text.split("## Per ability")[1]
    assert ability_table.splitlines()[2].startswith("| Model | TXT | CG | FG |")
    score = json.loads((out / "video" / "MSRVTT_score.json").read_text())
    assert score["num_data"] == 4 and score["num_candidates"] == 4
    md, (s,) = report([out], with_baselines=False)
    assert s.overall.n == 1 and s.overall.total == 16
    assert s.abilities["CG"].n == 1 and s.abilities["CG"].value == pytest.approx(score["recall@1"])


# ---------------------------------------------------------------- reports

def _leaderboard_json(path: Path, drop_video: bool = False) -> Path:
    """A hand-made leaderboard file: image 0.60 each, video 0.30, visdoc 12 x 0.80 + 12 x 0.60."""
    specs = load_registry(registry_path("mmeb_v2"))
    metrics = {"image": {}, "video": {}, "visdoc": {}}
    doc_i = 0
    for s in specs:
        if s.modality == "image":
            metrics["image"][s.name] = {"hit@1": 0.60, "ndcg_linear@5": 0.99}
        elif s.modality == "video":
            metrics["video"][s.name] = {"hit@1": 0.30}
        else:
            name = s.name + "-fixed" if s.name in ("ViDoSeek-page", "MMLongBench-page") else s.name
            metrics["visdoc"][name] = {"ndcg_linear@5": 0.80 if doc_i < 12 else 0.60, "hit@1": 0.0}
            doc_i += 1
    if drop_video:
        metrics["video"] = {name: "FILE_N/A" for name in metrics["video"]}
    path.write_text(json.dumps({"metadata": {"model_name": path.stem}, "metrics": metrics}))
    return path


def test_report_on_leaderboard_json_by_hand(tmp_path):
    md, (s,) = report([_leaderboard_json(tmp_path / "other-tool.json")], with_baselines=False,
                      plot_path=tmp_path / "bars.png")
    assert s.modalities["image"].cell() == "60.00"
    assert s.modalities["video"].cell() == "30.00"
    assert s.modalities["visdoc"].cell() == "70.00"  # -fixed names matched through aliases
    # overall = mean over all 78 datasets = (36*60 + 18*30 + 24*70) / 78, not (60+30+70)/3
    assert s.overall.cell() == f"{(36 * 60 + 18 * 30 + 24 * 70) / 78:.2f}" == "56.15"
    assert s.categories["ViDoRe-V1"].cell() == "80.00" and s.categories["VisDoc-OOD"].cell() == "60.00"
    assert "| other-tool | 56.15 | 60.00 | 30.00 | 70.00 |" in md
    assert (tmp_path / "bars.png").stat().st_size > 1000


def test_report_partial_results_and_baselines(tmp_path):
    md, (s,) = report([_leaderboard_json(tmp_path / "partial.json", drop_video=True)])
    assert s.modalities["video"].value is None and s.overall.n == 60
    assert s.overall.cell() == f"{(36 * 60 + 24 * 70) / 60:.2f}* (60/78)"
    names = [b["name"] for b in load_baselines("mmeb_v2")]
    assert any("VLM2Vec-V2" in n for n in names) and any("GME" in n for n in names)
    assert all(b.get("source") for b in load_baselines("mmeb_v2"))
    assert "VLM2Vec-V2.0 (Qwen2-VL-2B) † | 58.39" in md


def test_report_rejects_non_leaderboard_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(EmbedrlError, match="leaderboard-format"):
        report([bad])


def test_global_ranking_in_chunks_equals_one_shot(monkeypatch):
    import embedrl.eval.mmeb as mmeb
    from embedrl.core.items import Item
    from embedrl.data.evalset import EvalTask
    from embedrl.eval.metrics import rank_scores

    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(37, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    c[7] = c[3]  # an exact tie: candidate 3 must stay ahead of 7
    task = EvalTask("t", "global", [Item(text=str(i)) for i in range(37)], [Item(text=str(i)) for i in range(50)],
                    [{0: 1.0}] * 37)
    monkeypatch.setattr(mmeb, "SCORE_CELLS", 50 * 4)  # 4 query rows per chunk
    ranked, scores, _ = mmeb.rank_task(task, q, c, top=10)
    assert np.array_equal(np.stack(ranked), rank_scores(q @ c.T, top=10))
    assert all(list(r).index(3) < list(r).index(7) for r in ranked if 3 in r and 7 in r)


def test_data_check_uvrb_in_the_extracted_release_layout(tmp_path, capsys):
    import shutil

    import embedrl.cli as cli

    make_uvrb(tmp_path / "UVRB_extracted" / "MSRVTT" / "UVRB", "MSRVTT")
    assert cli.main(["data", "check", "uvrb", "--root", str(tmp_path), "--datasets", "MSRVTT"]) == 0
    shutil.rmtree(tmp_path / "UVRB_extracted" / "MSRVTT" / "UVRB" / "MSRVTT" / "videos_frames" / "blue")
    capsys.readouterr()
    assert cli.main(["data", "check", "uvrb", "--root", str(tmp_path), "--datasets", "MSRVTT", "DiDeMo"]) == 1
    out = capsys.readouterr().out
    assert "0 present, 1 partial, 1 missing" in out and "frames missing for 1 videos" in out
    assert "hf download Alibaba-NLP/UVRB" in out


# ---------------------------------------------------------------- nothing silently wrong

def _other_clip(tiny_clip_dir):
    import torch

    from embedrl.models.base import load_embedder

    other = load_embedder(str(tiny_clip_dir))
    with torch.no_grad():
        next(other.module.parameters()).add_(0.05)
    return other


def test_a_rerun_with_another_model_is_refused_and_results_never_mix(clip, tiny_clip_dir, toy_root, tmp_path):
    root, registry = toy_root
    out = tmp_path / "out"
    evaluate(clip, registry, root, out, batch_size=8)
    spec = load_registry(registry)[0]
    fingerprint = json.loads(score_path(out, spec).read_text())["fingerprint"]
    assert fingerprint["model"]["hash"] == clip.fingerprint() and fingerprint["tcot_mode"] == "none"
    assert fingerprint["reasoner"] is None and len(fingerprint["data"]) == 40

    other = _other_clip(tiny_clip_dir)
    with pytest.raises(EmbedrlError, match=r"holds scores of another run: Toy-I2I differs in model hash.*--overwrite"):
        evaluate(other, registry, root, out, batch_size=8)
    with pytest.raises(EmbedrlError, match="T-CoT mode"):  # another mode of the same model is another run too
        evaluate(clip, registry, root, out, batch_size=8, reasoner=EchoReasoner(), tcot_mode="query")
    # a run of other datasets would still leave the first model's scores beside the new ones: refused as well
    with pytest.raises(EmbedrlError, match="another run"):
        evaluate(other, registry, root, out, datasets=["Toy-Doc"], batch_size=8)

    run = evaluate(other, registry, root, out, batch_size=8, overwrite=True)
    assert run.computed == ["Toy-I2I", "Toy-V2V", "Toy-Doc"] and run.resumed == []
    fresh = evaluate(other, registry, root, tmp_path / "fresh", batch_size=8).results["metrics"]
    assert run.results["metrics"] == fresh  # only the second model's scores
    assert run.results["metadata"]["model_name"] == other.name_or_path


def test_scores_of_changed_data_are_recomputed_and_said_so(clip, toy_root, tmp_path, caplog):
    root, registry = toy_root
    out = tmp_path / "out"
    evaluate(clip, registry, root, out, batch_size=8)
    rows = root / "image-tasks" / "Toy-I2I.jsonl"
    rows.write_text(rows.read_text().splitlines()[0] + "\n")  # one query left
    with caplog.at_level("WARNING", logger="embedrl.eval.mmeb"):
        run = evaluate(clip, registry, root, out, batch_size=8)
    assert run.recomputed == {"Toy-I2I": "its data changed since it was scored"}
    assert run.computed == ["Toy-I2I"] and run.resumed == ["Toy-V2V", "Toy-Doc"]
    assert run.results["metrics"]["image"]["Toy-I2I"]["num_data"] == 1
    assert "Toy-I2I: its data changed since it was scored; recomputing" in caplog.text


def test_large_data_files_are_fingerprinted_by_size_and_time_without_reading_them(toy_root, monkeypatch):
    """Deciding a resume must not read a visdoc corpus's gigabytes; small files (rows, qrels) stay
    hashed by content, so a touch alone does not recompute them."""
    from embedrl.data.registry import load_registry
    from embedrl.eval import fingerprint

    root, registry = toy_root
    spec = next(s for s in load_registry(registry) if s.name == "Toy-I2I")
    rows = root / "image-tasks" / "Toy-I2I.jsonl"
    by_content = fingerprint.data_fingerprint(spec, root)
    stat = rows.stat()
    os.utime(rows, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert fingerprint.data_fingerprint(spec, root) == by_content

    monkeypatch.setattr(fingerprint, "CONTENT_HASH_LIMIT", 0)  # every file counts as large

    def no_reading(*args, **kwargs):
        raise AssertionError(f"a large file was read: {args[0]}")

    monkeypatch.setattr(fingerprint, "open", no_reading, raising=False)
    by_stat = fingerprint.data_fingerprint(spec, root)
    assert by_stat != by_content and fingerprint.data_fingerprint(spec, root) == by_stat
    os.utime(rows, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    assert fingerprint.data_fingerprint(spec, root) != by_stat  # rewritten in place: recomputed


def test_cli_eval_with_a_missing_data_root_fails_before_writing_anything(tiny_clip_dir, tmp_path, capsys):
    import embedrl.cli as cli

    out = tmp_path / "out"
    assert cli.main(["eval", "mmeb", "--model", str(tiny_clip_dir), "--data-root", str(tmp_path / "nowhere"),
                     "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"embedrl: error: data root {tmp_path / 'nowhere'} is not a directory\n"
    assert not out.exists()


def test_report_names_scores_on_another_scale_nan_missing_metrics_and_unknown_datasets(tmp_path, caplog):
    path = _leaderboard_json(tmp_path / "odd.json")
    data = json.loads(path.read_text())
    image = data["metrics"]["image"]
    names = sorted(image)
    image[names[0]]["hit@1"] = 81.9        # a 0-100 scale
    image[names[1]]["hit@1"] = float("nan")
    del image[names[2]]["hit@1"]           # no main metric
    image["MSCOCO_t2ii"] = {"hit@1": 0.5}  # misspelled
    path.write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="embedrl.eval.report"):
        md, (s,) = report([path], with_baselines=False)
    assert s.overall.n == 75 and s.modalities["image"].cell() == "60.00* (33/36)"  # the odd values left out
    assert f"{names[0]}: hit@1 = 81.9 is outside 0-1" in caplog.text
    assert f"{names[1]}: hit@1 is NaN" in caplog.text
    assert f"{names[2]}: no number for its main metric 'hit@1' (it has: ndcg_linear@5)" in caplog.text
    assert "MSCOCO_t2ii: not a dataset of this registry (did you mean MSCOCO_t2i?)" in caplog.text
    assert "## Problems" in md and "MSCOCO_t2ii" in md
    assert f"odd lacks: {', '.join(sorted([names[0], names[1], names[2]], key=list(s.datasets).index))}" in md


@pytest.mark.parametrize("content, message", [
    (b'{"metadata": "a string", "metrics": {}}', "'metadata' must be a mapping"),
    (b'{"metadata": {"model_name": "caf\xe9"}, "metrics": {}}', r"bad\.json:1: not UTF-8 text \(byte 0xe9\)"),
])
def test_report_refuses_malformed_result_files_with_one_line(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    with pytest.raises(EmbedrlError, match=message):
        report([bad])
