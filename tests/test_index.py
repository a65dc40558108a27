"""Index: factory choice, resumable sharded builds, store, T-CoT cache, search with the tiny CLIP embedder.

The first half needs no model (precomputed vectors through `build_from_vectors`); the
second half builds real indexes with the tiny open_clip preset, including a build killed
with SIGKILL and resumed, and a two-process `accelerate launch` build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from faults import SimulatedCrash, crash_before_shard
from PIL import Image

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import TCoT, parse_tcot, render_tcot
from embedrl.core.tcot_cache import CacheKey, TCoTCache
from embedrl.data.corpus import Corpus, read_corpus
from embedrl.index import faiss_index as fx
from embedrl.index.add import add_to_index
from embedrl.index.build import (
    MANIFEST,
    build_from_vectors,
    build_index,
    load_manifest,
)
from embedrl.index.search import Retriever
from embedrl.index.shards import shard_path
from embedrl.index.store import ItemStore

REPO = Path(__file__).resolve().parents[1]


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim))
    return fx.normalize(x.astype(np.float32))


def low_rank(n: int, dim: int, rank: int = 6, seed: int = 0) -> np.ndarray:
    """Vectors near a `rank`-dimensional subspace: structure a quantiser can exploit, like real embeddings."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, dim)) + 0.05 * rng.standard_normal((n, dim))
    return fx.normalize(x.astype(np.float32))


def exact_top(xb: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :k]


# ---------------------------------------------------------------- no model needed

def test_choose_factory_follows_size_and_memory():
    assert fx.choose_factory(10_000, 768)[0] == "Flat"
    factory, why = fx.choose_factory(2_000_000, 768, max_bytes=64 << 30)
    assert factory == "HNSW32" and "GiB" in why
    factory, why = fx.choose_factory(5_000_000, 768, max_bytes=4 << 30)
    assert factory == "OPQ64_256,IVF65536_HNSW32,PQ64" and "budget" in why
    factory, _ = fx.choose_factory(500_000, 128, max_bytes=1 << 20)
    assert factory.startswith("OPQ32_128,IVF") and factory.endswith(",PQ32")
    for n, dim, budget in [(10_000, 768, None), (2_000_000, 768, 64 << 30), (500_000, 128, 1 << 20)]:
        fx.new_index(fx.choose_factory(n, dim, budget)[0], dim)  # every choice is a valid factory string


def test_bad_factory_is_a_clear_error(tmp_path):
    with pytest.raises(EmbedrlError, match="invalid FAISS factory string 'IVF,Nope'"):
        build_from_vectors(clustered(50, 16), tmp_path / "idx", factory="IVF,Nope")
    assert not (tmp_path / "idx" / MANIFEST).exists()


def test_flat_index_returns_exact_neighbours(tmp_path):
    xb, xq = clustered(500, 32), clustered(20, 32, seed=1)
    manifest = build_from_vectors(xb, tmp_path / "idx", shard_size=64)
    assert manifest["factory"] == "Flat" and manifest["count"] == 500 and manifest["dim"] == 32
    r = Retriever.from_dir(tmp_path / "idx", load_model=False)
    scores, rows = r.search_vectors(xq, k=5)
    assert (rows == exact_top(xb, xq, 5)).all()
    np.testing.assert_allclose(scores, np.sort(xq @ xb.T, axis=1)[:, ::-1][:, :5], rtol=1e-5, atol=1e-6)
    hits = r.hits(scores, rows)
    assert hits[0][0].id == str(rows[0, 0]) and hits[0][0].item == {"id": str(rows[0, 0])}


def test_ivf_pq_is_trained_on_a_sample_and_searchable(tmp_path):
    xb = low_rank(3000, 32)
    manifest = build_from_vectors(xb, tmp_path / "idx", factory="IVF16,PQ8x4", shard_size=700)
    assert manifest["factory"] == "IVF16,PQ8x4" and manifest["search_params"]["nprobe"] == 16
    r = Retriever.from_dir(tmp_path / "idx", load_model=False)
    _, rows = r.search_vectors(xb[:50], k=10)
    assert fx.recall_at_k(rows, exact_top(xb, xb[:50], 10), 10) > 0.35  # random: 0.003
    hnsw = build_from_vectors(xb, tmp_path / "hnsw", factory="HNSW32")
    assert hnsw["search_params"] == {"efSearch": fx.DEFAULT_EF_SEARCH}


def test_too_many_lists_for_the_corpus_is_refused(tmp_path):
    with pytest.raises(EmbedrlError, match="at least 256 vectors"):
        build_from_vectors(clustered(100, 16), tmp_path / "idx", factory="IVF256,Flat")


def test_crash_then_resume_gives_the_uninterrupted_index(tmp_path, monkeypatch):
    xb, xq = clustered(1000, 16), clustered(30, 16, seed=2)
    out = tmp_path / "idx"
    with monkeypatch.context() as patch, pytest.raises(SimulatedCrash):
        crash_before_shard(patch, 3)
        build_from_vectors(xb, out, factory="IVF8,Flat", shard_size=150)
    assert not (out / MANIFEST).exists()  # nothing looks complete
    with pytest.raises(EmbedrlError, match="not a complete index.*resume"):
        Retriever.from_dir(out, load_model=False)
    done = {i: shard_path(out, i, ".npy").stat().st_mtime_ns for i in range(3)}
    shard_path(out, 3, ".npy").write_bytes(b"half-written")  # a crash between vectors and metadata
    build_from_vectors(xb, out, factory="IVF8,Flat", shard_size=150)
    assert {i: shard_path(out, i, ".npy").stat().st_mtime_ns for i in range(3)} == done  # not redone
    build_from_vectors(xb, tmp_path / "ref", factory="IVF8,Flat", shard_size=150)
    a = Retriever.from_dir(out, load_model=False).search_vectors(xq, 10)
    b = Retriever.from_dir(tmp_path / "ref", load_model=False).search_vectors(xq, 10)
    assert (a[1] == b[1]).all() and np.allclose(a[0], b[0])


def test_rerun_is_a_no_op_and_another_factory_reuses_the_shards(tmp_path):
    xb = clustered(400, 16)
    out = tmp_path / "idx"
    first = build_from_vectors(xb, out, shard_size=100)
    stamp = shard_path(out, 0, ".npy").stat().st_mtime_ns
    assert build_from_vectors(xb, out, shard_size=100)["created"] == first["created"]
    again = build_from_vectors(xb, out, shard_size=100, factory="HNSW32")
    assert again["factory"] == "HNSW32" and again["count"] == 400
    assert shard_path(out, 0, ".npy").stat().st_mtime_ns == stamp
    with pytest.raises(EmbedrlError, match="another corpus or model"):
        build_from_vectors(clustered(400, 16, seed=5), out, shard_size=100)
    assert build_from_vectors(clustered(400, 16, seed=5), out, shard_size=100, overwrite=True)["count"] == 400


def test_missing_or_corrupt_index_file_is_a_clear_error(tmp_path):
    build_from_vectors(clustered(100, 16), tmp_path / "idx")
    index_file = tmp_path / "idx" / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:40])
    with pytest.raises(EmbedrlError, match="corrupt or unreadable"):
        Retriever.from_dir(tmp_path / "idx", load_model=False)
    index_file.unlink()
    with pytest.raises(EmbedrlError, match="index file missing"):
        Retriever.from_dir(tmp_path / "idx", load_model=False)
    with pytest.raises(EmbedrlError, match="index directory not found"):
        Retriever.from_dir(tmp_path / "nowhere", load_model=False)


def test_gpu_without_faiss_gpu_is_a_clear_error(tmp_path):
    if fx.gpu_available():
        pytest.skip("faiss-gpu and a GPU are present")
    with pytest.raises(EmbedrlError, match="--gpu needs faiss-gpu"):
        build_from_vectors(clustered(50, 16), tmp_path / "idx", gpu=True)


def test_bench_index_prints_the_table(tmp_path, capsys):
    from embedrl.cli import main

    assert main(["-q", "bench", "index", "--data", "structured", "--n", "3000", "--dim", "32", "--nq", "40",
                 "--latency-queries", "5", "--no-autofaiss", "--json", str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out
    assert "3000 vectors x 32 dims, 40 queries" in table
    rows = {r["name"]: r for r in json.loads((tmp_path / "b.json").read_text())["rows"]}
    assert set(rows) == {"Flat (exact)", "HNSW32", "IVF-PQ", "IVF-PQ+refine"}
    assert rows["Flat (exact)"]["recall"] == 1.0 and rows["HNSW32"]["recall"] >= 0.95
    assert rows["IVF-PQ+refine"]["recall"] >= 0.95


def test_store_round_trip(tmp_path):
    with ItemStore(tmp_path / "s.sqlite") as store:
        store.put_many(0, [{"id": "a", "text": "café"}, {"id": "b", "image": "x.png"}],
                       ["<answer>a</answer>", None], [{"label": 3}, {}])
        assert store.count() == 2
        a, missing, b = store.get_many([0, 7, 1])
        assert a == {"row": 0, "id": "a", "item": {"id": "a", "text": "café"}, "tcot": "<answer>a</answer>",
                     "fields": {"label": 3}}
        assert missing is None and b["item"]["image"] == "x.png"
    with pytest.raises(EmbedrlError, match="metadata store missing"):
        ItemStore(tmp_path / "none.sqlite", readonly=True)


class WordReasoner:
    """A rule-based reasoner (keywords = the item's words); counts what it generates."""

    cache_key = ("word-reasoner", "v0hash", "p1")

    def __init__(self):
        self.generated = 0

    def generate(self, items, role="target", **kwargs):
        self.generated += len(items)
        return [TCoT(keywords=item.text.split()[:3], rethink=role, answer=item.text) for item in items]


def test_cache_second_pass_hits_and_keeps_broken_generations(tmp_path):
    items = [Item(text=f"item {i} red") for i in range(5)] + [Item(text="item 0 red")]  # a duplicate
    reasoner = WordReasoner()
    with TCoTCache(tmp_path / "c.sqlite") as cache:
        first = cache.get_or_generate(items, "target", reasoner)
        assert reasoner.generated == 5 and cache.stats() == {"hits": 0, "misses": 6}
        assert first[1].keywords == ["item", "1", "red"] and first[0].same_content(first[5])
    with TCoTCache(tmp_path / "c.sqlite") as cache:  # another process, later
        second = cache.get_or_generate(items, "target", reasoner)
        assert reasoner.generated == 5 and cache.stats() == {"hits": 6, "misses": 0}
        assert [t.same_content(u) for t, u in zip(first, second)] == [True] * 6
        cache.get_or_generate(items[:1], "query", reasoner)  # roles are cached separately
        assert reasoner.generated == 6
        key = CacheKey(*WordReasoner.cache_key, "target", "deadbeef")
        cache.put_many([(key, "<thinking>{broken</thinking><answer>x</answer>")])
        broken = cache.get_many([key])[0]
        assert broken.valid is False and "not valid JSON" in broken.reason


def test_corpus_readers(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "img" / "a.png")
    rows = [{"id": "x1", "text": "hello", "image": "img/a.png", "label": "greeting"}, {"text": "bye"}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = read_corpus(tmp_path / "c.jsonl")
    assert [i.id for i in corpus.items] == ["x1", "2"] and corpus.fields == [{"label": "greeting"}, {}]
    assert corpus.items[0].image == str(tmp_path / "img" / "a.png")

    videos = tmp_path / "videos"
    for name in ("v2", "v1"):
        (videos / name).mkdir(parents=True)
        for f in ("frame_10.png", "frame_2.png", "frame_1.png"):
            Image.new("RGB", (8, 8)).save(videos / name / f)
    images = read_corpus(videos)
    assert [i.id for i in images.items] == ["v1/frame_1.png", "v1/frame_10.png", "v1/frame_2.png",
                                            "v2/frame_1.png", "v2/frame_10.png", "v2/frame_2.png"]
    vids = read_corpus(videos, kind="videos")
    assert [v.id for v in vids.items] == ["v1", "v2"]
    assert [Path(f).name for f in vids.items[0].frames] == ["frame_1.png", "frame_2.png", "frame_10.png"]

    (tmp_path / "dup.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(EmbedrlError, match="duplicate item id 'a'"):
        read_corpus(tmp_path / "dup.jsonl")
    with pytest.raises(EmbedrlError, match="corpus not found"):
        read_corpus(tmp_path / "nope")


# ---------------------------------------------------------------- with the tiny CLIP embedder

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "cyan", "magenta", "pink"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i, color in enumerate(COLORS):
        sub = root / ("sub" if i % 3 == 0 else "")
        sub.mkdir(exist_ok=True)
        im = Image.new("RGB", (48, 48), color)
        im.paste(Image.new("RGB", (16, 16), COLORS[-1 - i]), (i * 2, i * 2))
        im.save(sub / f"{i:02d}_{color}.png")
    (root / "05_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    from embedrl.models.base import load_embedder

    return load_embedder(str(tiny_clip_dir))


def test_build_and_search_images_scores_match_the_embedder(tmp_path, clip, image_folder):
    manifest = build_index(clip, image_folder, tmp_path / "idx", shard_size=4)
    assert manifest["count"] == len(COLORS) and manifest["embedder"]["fingerprint"] == clip.fingerprint()
    report = json.loads((tmp_path / "idx" / "build_report.json").read_text())
    assert report["skipped_count"] == 1 and report["skipped"][0]["id"] == "05_corrupt.png"
    assert "cannot read image" in report["skipped"][0]["reason"]

    r = Retriever.from_dir(tmp_path / "idx")  # loads the embedder the manifest names
    queries = [Item(image=str(image_folder / "02_blue.png")), Item(text="a yellow square")]
    hits = r.search(queries, k=3)
    assert hits[0][0].id == "02_blue.png" and hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    # the scores are the cosine similarities the evaluation harness computes for the same pairs
    corpus = read_corpus(image_folder)
    pos = {item.id: i for i, item in enumerate(corpus.items)}
    targets = clip.encode([corpus.items[pos[h.id]] for h in hits[1]]).numpy()
    expected = clip.encode(queries[1:]).numpy() @ targets.T
    np.testing.assert_allclose([h.score for h in hits[1]], expected[0], atol=1e-5)


def test_mismatched_model_is_refused(tmp_path, clip, tiny_clip_dir, image_folder):
    import torch

    from embedrl.models.base import load_embedder

    build_index(clip, image_folder, tmp_path / "idx", shard_size=8)
    other = load_embedder(str(tiny_clip_dir))
    with torch.no_grad():
        next(other.module.parameters()).add_(0.01)
    with pytest.raises(EmbedrlError, match=rf"hash {other.fingerprint()}.*built with .*hash {clip.fingerprint()}"):
        Retriever.from_dir(tmp_path / "idx", model=other)
    build_from_vectors(clustered(50, 32), tmp_path / "vec32")
    with pytest.raises(EmbedrlError, match="dim 64.*dim 32"):
        Retriever.from_dir(tmp_path / "vec32", model=clip)


def test_reasoner_targets_are_cached_across_rebuilds_and_added_items_found(tmp_path, clip, image_folder):
    corpus = Corpus([Item(text=f"a {c} square", id=c) for c in COLORS])
    reasoner = WordReasoner()
    first = build_index(clip, Corpus(corpus.items[:8]), tmp_path / "a", reasoner=reasoner,
                        cache=tmp_path / "cache.sqlite", shard_size=3)
    assert first["reasoner"] == {"id": "word-reasoner", "hash": "v0hash", "prompt_version": "p1"}
    assert reasoner.generated == 8
    build_index(clip, Corpus(corpus.items[:8]), tmp_path / "b", reasoner=reasoner,
                cache=tmp_path / "cache.sqlite", factory="HNSW32", shard_size=5)
    assert reasoner.generated == 8  # a rebuild generates nothing
    report = json.loads((tmp_path / "b" / "build_report.json").read_text())
    assert report["tcot_cache"] == {"hits": 8, "misses": 0}
    assert report["tcots"] == {"written": 8, "usable": 8, "problems": {}}

    added = add_to_index(tmp_path / "a", corpus.items[8:], clip, reasoner=reasoner, cache=tmp_path / "cache.sqlite")
    assert added["added"] == 3 and load_manifest(tmp_path / "a")["count"] == 11
    r = Retriever.from_dir(tmp_path / "a", model=clip, reasoner=reasoner, cache=tmp_path / "cache.sqlite")
    hit = r.search(Item(text="a pink square"), k=1)[0][0]
    assert hit.id == "pink" and hit.evidence["keywords"] == ["a", "pink", "square"]
    assert parse_tcot(hit.tcot).same_content(parse_tcot(render_tcot(reasoner.generate([Item(text="a pink square")])[0])))
    with pytest.raises(EmbedrlError, match="built with reasoner"):
        add_to_index(tmp_path / "a", corpus.items[:1], clip)


class SloppyReasoner(WordReasoner):
    """Breaks every other T-CoT it writes (an unclosed tag)."""

    cache_key = ("sloppy-reasoner", "v0hash", "p1")

    def generate(self, items, role="target", **kwargs):
        return [t if i % 2 == 0 else parse_tcot("<thinking>{") for i, t in enumerate(super().generate(items, role))]


def test_build_report_counts_the_tcots_that_fell_back_to_raw_input(tmp_path, clip, caplog):
    corpus = Corpus([Item(text=f"a {c} square", id=c) for c in list(COLORS)[:8]])
    with caplog.at_level("WARNING", logger="embedrl.core.tcot"):
        build_index(clip, corpus, tmp_path / "idx", reasoner=SloppyReasoner(), cache=tmp_path / "cache.sqlite",
                    shard_size=4)
    report = json.loads((tmp_path / "idx" / "build_report.json").read_text())
    assert report["tcots"] == {"written": 8, "usable": 4, "problems": {"<thinking> block not closed": 4}}
    assert "corpus T-CoTs" in caplog.text and "4 of 8 are broken" in caplog.text


def test_search_finds_the_gold_as_often_as_the_evaluation_harness_says(tmp_path, clip):
    from embedrl.data.readers import read_task
    from embedrl.data.registry import load_registry
    from embedrl.eval.metrics import evaluate_rankings
    from embedrl.eval.mmeb import evaluate_task
    from embedrl.lab.synth.benchmark import generate_benchmark

    data = tmp_path / "synth"
    generate_benchmark(data, seed=0, size="tiny")
    name = "Synth-VideoRet"  # global scope: each query is ranked against the whole candidate pool
    spec = next(s for s in load_registry(data / "registry.yaml") if s.name == name)
    task = read_task(spec, data)
    score, preds, _ = evaluate_task(clip, task, ks=(1, 5))

    manifest = build_index(clip, f"{data / 'registry.yaml'}:{name}", tmp_path / "idx")
    assert manifest["count"] == len(task.candidates) and manifest["factory"] == "Flat"
    hits = Retriever.from_dir(tmp_path / "idx", model=clip).search(task.queries, k=5, use_tcot=False)
    for q, p in zip(hits, preds):  # the same ranking, up to the order of (near-)tied candidates
        np.testing.assert_allclose([h.score for h in q], p["scores"][:5], atol=1e-5)
        for h, pid, ps in zip(q, p["prediction"], p["scores"]):
            assert h.id == pid or abs(h.score - ps) < 1e-5
    cids = task.candidate_ids
    relevance = [{cids[i]: r for i, r in rel.items()} for rel in task.relevance]
    ours = evaluate_rankings([[h.id for h in q] for q in hits], relevance, ks=(1, 5))
    assert ours["hit@1"] == score["hit@1"] and ours["hit@5"] == score["hit@5"]
    assert ours == pytest.approx({k: score[k] for k in ours})


def test_tiny_reasoner_targets_are_generated_once(tmp_path, clip, tiny_reasoner_dir):
    from embedrl.models.reasoner import load_reasoner

    reasoner = load_reasoner(str(tiny_reasoner_dir))
    corpus = Corpus([Item(text=f"a {c} circle", id=c) for c in COLORS[:4]])
    cache = tmp_path / "cache.sqlite"
    manifest = build_index(clip, corpus, tmp_path / "a", reasoner=reasoner, cache=cache)
    assert manifest["reasoner"]["id"] == str(tiny_reasoner_dir) and reasoner.generated_items == 4
    build_index(clip, corpus, tmp_path / "b", reasoner=reasoner, cache=cache, factory="HNSW32")
    assert reasoner.generated_items == 4  # the second index reused every cached T-CoT
    r = Retriever.from_dir(tmp_path / "a", cache=cache)  # embedder and reasoner named by the manifest
    hits = r.search(corpus.items[1], k=4)[0]
    assert len(hits) == 4 and all(h.tcot for h in hits)


def _cli(*args, env_extra=None, check=True, kill_after_vectors=None):
    """`embedrl ARGS` in a subprocess; with `kill_after_vectors`, SIGKILLed once that shard's vectors are written."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    command = [sys.executable, "-m", "embedrl"] if kill_after_vectors is None else [
        sys.executable, str(REPO / "tests" / "faults.py"), "--kill-after-vectors", str(kill_after_vectors), "--"]
    proc = subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"embedrl {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def _index_contents(index_dir):
    r = Retriever.from_dir(index_dir, load_model=False)
    vectors = r.index.reconstruct_n(0, r.index.ntotal)
    return r.store.ids(), vectors


def test_sigkill_during_build_then_resume(tmp_path, tiny_clip_dir, clip, image_folder):
    out = tmp_path / "idx"
    args = ["index", "build", "--model", str(tiny_clip_dir), "--corpus", str(image_folder), "--out", str(out),
            "--shard-size", "3"]
    killed = _cli(*args, check=False, kill_after_vectors=2)
    assert killed.returncode == -9  # SIGKILL, after writing shard 2's vectors but not its metadata
    assert shard_path(out, 2, ".npy").exists() and not shard_path(out, 2, ".json").exists()
    assert not (out / MANIFEST).exists()
    with pytest.raises(EmbedrlError, match="not a complete index"):
        Retriever.from_dir(out, model=clip)
    stamps = [shard_path(out, i, ".json").stat().st_mtime_ns for i in range(2)]
    summary = json.loads(_cli(*args).stdout)
    assert summary["count"] == len(COLORS) and summary["skipped"] == 1
    assert [shard_path(out, i, ".json").stat().st_mtime_ns for i in range(2)] == stamps  # resumed
    build_index(clip, image_folder, tmp_path / "ref", shard_size=3)
    ids, vectors = _index_contents(out)
    ref_ids, ref_vectors = _index_contents(tmp_path / "ref")
    assert ids == ref_ids
    np.testing.assert_allclose(vectors, ref_vectors, atol=1e-5)

    info = json.loads(_cli("index", "info", str(out)).stdout)
    assert info["count"] == len(COLORS) and info["build_report"]["skipped_count"] == 1
    hits = json.loads(_cli("index", "search", str(out), "--image", str(image_folder / "sub" / "03_yellow.png"),
                           "-k", "2").stdout)
    assert hits[0]["id"] == "sub/03_yellow.png" and len(hits) == 2 and hits[0]["score"] > hits[1]["score"]
    missing = _cli("index", "search", str(tmp_path / "nowhere"), "--text", "x", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == f"embedrl: error: index directory not found: {tmp_path / 'nowhere'}"


@pytest.mark.slow  # ~30 s: two launched processes each import torch and load the model
def test_two_processes_build_the_same_index_as_one(tmp_path, tiny_clip_dir, clip, image_folder):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("accelerate launcher not installed")
    out = tmp_path / "two"
    # `--multi_gpu` on a machine without GPUs: two processes over gloo on CPU (accelerate's
    # `--cpu --num_processes 2` would start only one without mpirun)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "embedrl", "-q", "index", "build", "--model", str(tiny_clip_dir),
         "--corpus", str(image_folder), "--out", str(out), "--shard-size", "2"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - t0 < 600
    ranks = {json.loads(shard_path(out, i, ".json").read_text())["stats"]["rank"] for i in range(6)}
    assert ranks == {0, 1}  # both processes encoded shards
    build_index(clip, image_folder, tmp_path / "one", shard_size=2)
    ids, vectors = _index_contents(out)
    ref_ids, ref_vectors = _index_contents(tmp_path / "one")
    assert ids == ref_ids and len(ids) == len(COLORS)
    np.testing.assert_allclose(vectors, ref_vectors, atol=1e-5)


def test_a_reasoner_limited_to_images_leaves_text_items_raw_in_the_index(tmp_path, clip, image_folder,
                                                                           tiny_reasoner_dir):
    from embedrl.models.reasoner import load_reasoner

    images = sorted(p for p in image_folder.rglob("*.png") if "corrupt" not in p.name)[:2]
    corpus = Corpus([Item(text="a red square", id="t0"), Item(image=str(images[0]), id="i0"),
                     Item(text="a blue square", id="t1"), Item(image=str(images[1]), id="i1")])
    reasoner = load_reasoner(tiny_reasoner_dir, device="cpu", max_new_tokens=8, modalities=["image"])
    manifest = build_index(clip, corpus, tmp_path / "idx", reasoner=reasoner, cache=tmp_path / "cache.sqlite")
    assert manifest["reasoner"]["modalities"] == ["image"] and reasoner.generated_items == 2
    r = Retriever.from_dir(tmp_path / "idx", model=clip, cache=tmp_path / "cache.sqlite")
    hits = {h.id: h for h in r.search(Item(text="a red square"), k=4)[0]}
    assert hits["t0"].tcot is None and hits["t1"].tcot is None
    assert hits["i0"].tcot is not None and hits["i1"].tcot is not None
    assert r._query_reasoner().modalities == ("image",)  # loaded from the manifest, limited alike


# ---------------------------------------------------------------- nothing silently wrong

def _texts(n: int, offset: int = 0) -> list[Item]:
    return [Item(text=f"a {COLORS[i % len(COLORS)]} square number {i}", id=f"t{i}") for i in range(offset, offset + n)]


def test_a_rebuild_with_another_factory_keeps_the_added_items(tmp_path, clip, capsys):
    from embedrl.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in _texts(16)))
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in _texts(5, offset=16)))
    out = tmp_path / "idx"
    build = ["index", "build", "--model", clip.name_or_path, "--corpus", str(corpus), "--out", str(out),
             "--shard-size", "6"]
    assert main(build) == 0
    assert main(["index", "add", str(out), "--corpus", str(more)]) == 0
    assert load_manifest(out)["count"] == 21
    capsys.readouterr()
    assert main([*build, "--factory", "HNSW32"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 21
    r = Retriever.from_dir(out, model=clip)
    assert r.manifest["factory"] == "HNSW32" and sorted(r.store.ids()) == sorted(f"t{i}" for i in range(21))
    assert r.search(_texts(1, offset=19)[0], k=1)[0][0].id == "t19"
    assert sorted(p.name for p in out.glob("*.faiss")) == [r.manifest["index_file"]]  # the replaced files are gone


def test_adding_ids_the_index_holds_is_refused_or_skipped_and_reported(tmp_path, clip):
    out = tmp_path / "idx"
    build_index(clip, Corpus(_texts(6)), out, distributed=False)
    with pytest.raises(EmbedrlError, match=r"2 item id\(s\) are already in .*: t4, t5\. .*--duplicates skip"):
        add_to_index(out, _texts(4, offset=4), clip)
    assert load_manifest(out)["count"] == 6  # nothing was added
    result = add_to_index(out, _texts(4, offset=4), clip, duplicates="skip")
    assert result["added"] == 2 and result["count"] == 8
    assert result["skipped"] == [{"id": "t4", "reason": "id already in the index"},
                                 {"id": "t5", "reason": "id already in the index"}]
    report = json.loads((out / "build_report.json").read_text())
    assert report["skipped_count"] == 2 and report["adds"][-1]["skipped"] == 2
    r = Retriever.from_dir(out, model=clip)
    ids = [h.id for h in r.search(_texts(1, offset=5)[0], k=8)[0]]
    assert sorted(ids) == sorted(f"t{i}" for i in range(8))  # every item once


def test_a_failed_rebuild_leaves_the_old_index_loadable(tmp_path, clip, capsys):
    from embedrl.cli import main

    out = tmp_path / "idx"
    build_index(clip, Corpus(_texts(12)), out, distributed=False)
    before = load_manifest(out)
    with pytest.raises(EmbedrlError, match="at least 256 vectors"):
        build_index(clip, Corpus(_texts(12)), out, factory="IVF256,Flat", distributed=False)
    assert load_manifest(out) == before
    r = Retriever.from_dir(out, model=clip)
    assert len(r) == 12 and r.search(_texts(1, offset=3)[0], k=1)[0][0].id == "t3"
    # a replacing build (--overwrite) that fails also leaves the old index whole until it is complete
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "image": str(tmp_path / "missing.png")}) + "\n")
    assert main(["index", "build", "--model", clip.name_or_path, "--corpus", str(bad), "--out", str(out),
                 "--overwrite"]) == 1
    assert "no item of the corpus could be encoded" in capsys.readouterr().err
    assert load_manifest(out) == before and len(Retriever.from_dir(out, model=clip)) == 12


def test_media_paths_of_a_relative_corpus_are_stored_resolved(tmp_path, clip, image_folder, monkeypatch):
    from embedrl.cli import main

    data = tmp_path / "data"
    shutil.copytree(image_folder, data / "img")
    (data / "corpus.jsonl").write_text(json.dumps({"id": "b", "image": "img/02_blue.png"}) + "\n"
                                       + json.dumps({"id": "f", "frames": ["img/01_green.png", "img/04_purple.png"]})
                                       + "\n")
    monkeypatch.chdir(data)
    assert main(["index", "build", "--model", clip.name_or_path, "--corpus", "corpus.jsonl", "--out", "idx"]) == 0
    assert main(["index", "build", "--model", clip.name_or_path, "--corpus", "img", "--out", "folder"]) == 0
    monkeypatch.chdir(tmp_path)  # somewhere else: the stored paths still name the files
    hits = {h.id: h for h in Retriever.from_dir(data / "idx", model=clip).search(Item(text="blue"), k=2)[0]}
    assert hits["b"].item["image"] == str(data / "img" / "02_blue.png")
    assert all(Path(f).is_absolute() and Path(f).is_file() for f in hits["f"].item["frames"])
    stored = Retriever.from_dir(data / "folder", model=clip).store.get_many([0])[0]["item"]["image"]
    assert Path(stored).is_absolute() and Path(stored).is_file()


def test_an_all_bad_corpus_writes_the_report_it_points_to_and_add_skips_join_it(tmp_path, clip, image_folder,
                                                                                 capsys):
    from embedrl.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"id": f"x{i}", "image": str(image_folder / "05_corrupt.png")}) + "\n"
                           for i in range(3)))
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", clip.name_or_path, "--corpus", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"embedrl: error: no item of the corpus could be encoded (see {out / 'build_report.json'})\n"
    report = json.loads((out / "build_report.json").read_text())
    assert report["skipped_count"] == 3 and "cannot read image" in report["skipped"][0]["reason"]

    good = tmp_path / "good"
    build_index(clip, Corpus(_texts(4)), good, distributed=False)
    result = add_to_index(good, read_corpus(bad), clip)
    assert result["added"] == 0 and [s["id"] for s in result["skipped"]] == ["x0", "x1", "x2"]
    report = json.loads((good / "build_report.json").read_text())
    assert report["skipped_count"] == 3 and report["adds"][0]["skipped"] == 3
    assert json.loads(_cli("index", "info", str(good)).stdout)["build_report"]["skipped_count"] == 3


def test_sigkill_during_add_then_rerun_equals_an_uninterrupted_add(tmp_path, tiny_clip_dir, clip):
    corpus, more = tmp_path / "corpus.jsonl", tmp_path / "more.jsonl"
    corpus.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in _texts(10)))
    more.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in _texts(6, offset=10)))
    out = tmp_path / "idx"
    build_index(clip, corpus, out, distributed=False, shard_size=4)
    before = load_manifest(out)
    add = ["index", "add", str(out), "--corpus", str(more)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "faults.py"), "--kill-before-replace",
                             MANIFEST, "--", *add], capture_output=True, env=env, cwd=REPO, timeout=300)
    assert killed.returncode == -9  # rows appended to the store, new index file written, manifest not yet
    assert load_manifest(out) == before and len(Retriever.from_dir(out, model=clip)) == 10
    assert json.loads(_cli(*add).stdout)["count"] == 16
    build_index(clip, corpus, tmp_path / "ref", distributed=False, shard_size=4)
    add_to_index(tmp_path / "ref", read_corpus(more), clip)
    ids, vectors = _index_contents(out)
    ref_ids, ref_vectors = _index_contents(tmp_path / "ref")
    assert ids == ref_ids
    np.testing.assert_allclose(vectors, ref_vectors, atol=1e-6)


def test_a_batch_size_below_one_is_a_clear_error(tmp_path, clip, capsys):
    from embedrl.cli import main

    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": "x"}) + "\n")
    assert main(["index", "build", "--model", clip.name_or_path, "--corpus", str(corpus), "--out",
                 str(tmp_path / "idx"), "--batch-size", "0"]) == 1
    assert capsys.readouterr().err == "embedrl: error: batch size must be at least 1, not 0 (items per encoder batch)\n"
    assert not (tmp_path / "idx").exists()


def _can_mount_privately() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--map-root-user", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.slow  # three builds in fresh processes
@pytest.mark.skipif(not _can_mount_privately(), reason="no private mount namespaces here (unshare)")
def test_a_full_disk_at_any_point_of_a_build_is_a_one_line_error(tmp_path, clip, synth_tiny_dir):
    """The build's output on a real full disk (a small tmpfs in a private mount namespace), filled at three points:
    shards, the FAISS index file, the metadata store."""
    corpus = synth_tiny_dir / "corpus.jsonl"
    build_index(clip, corpus, tmp_path / "reference", shard_size=64, distributed=False)
    total = sum(p.stat().st_size for p in (tmp_path / "reference").rglob("*") if p.is_file())
    mount = tmp_path / "mnt"
    mount.mkdir()
    command = [sys.executable, "-m", "embedrl", "-q", "index", "build", "--model", clip.name_or_path, "--corpus",
               str(corpus), "--shard-size", "64", "--out", str(mount / "out")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    failed_at = set()
    for share in (0.3, 0.55, 0.85):
        size = int(total * share) // 4096 * 4096
        proc = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c",
                               f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', str(mount), *command],
                              capture_output=True, text=True, env=env, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
        assert lines[0].startswith(f"embedrl: error: cannot write {mount / 'out'}/")
        failed_at.add(Path(lines[0].split()[4].rstrip(":")).name.split(".")[0].lstrip("."))
    assert len(failed_at) >= 2, failed_at  # not always the same writer


class ProseReasoner(WordReasoner):
    """Writes T-CoTs as the paper's reasoner does: prose around the thinking's JSON."""

    cache_key = ("prose-reasoner", "v0hash", "p1")

    def generate(self, items, role="target", **kwargs):
        self.generated += len(items)
        return [parse_tcot(f'<thinking>It says {item.text}. {{"text_keywords": ["{item.text}"]}}</thinking>'
                           f"<rethink>{role}</rethink><answer>{item.text}</answer>") for item in items]


def test_the_index_and_the_cache_keep_t_cots_as_the_reasoner_wrote_them(tmp_path, clip):
    corpus = Corpus([Item(text=f"a {c} square", id=c) for c in COLORS[:4]])
    build_index(clip, corpus, tmp_path / "idx", reasoner=ProseReasoner(), cache=tmp_path / "cache.sqlite")
    r = Retriever.from_dir(tmp_path / "idx", model=clip, reasoner=ProseReasoner())
    hit = r.search(Item(text="a red square"), k=1)[0][0]
    assert hit.tcot.startswith(f"<thinking>It says a {hit.id} square. ") and hit.evidence["keywords"] == [f"a {hit.id} square"]
    with TCoTCache(tmp_path / "cache.sqlite") as cache:  # the cache reads back the raw text too
        again = cache.get_or_generate([corpus.items[0]], "target", ProseReasoner())[0]
    assert again.valid and again.raw.startswith("<thinking>It says a red square. ")


def test_an_index_reloads_its_embedder_in_the_format_it_was_built_with(tmp_path, tiny_reasoner_dir):
    """A Hub-id-like model with no embedrl.json: the manifest keeps the format, and another one is refused."""
    from embedrl.models.base import load_embedder

    embedder = load_embedder(str(tiny_reasoner_dir), format="vlm2vec")
    corpus = Corpus([Item(text=f"a {c} square", id=c) for c in COLORS[:4]])
    manifest = build_index(embedder, corpus, tmp_path / "idx")
    assert manifest["embedder"]["format"] == "vlm2vec"
    r = Retriever.from_dir(tmp_path / "idx")
    assert r.embedder.format.name == "vlm2vec" and r.search(Item(text="a red square"), k=1)[0][0].id == "red"
    with pytest.raises(EmbedrlError, match="built in the vlm2vec embedding format, not gme"):
        Retriever.from_dir(tmp_path / "idx", format="gme")
