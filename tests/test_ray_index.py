"""`embedrl index build --engine ray` on a local Ray cluster (2 CPUs) started once for this module.

The Ray build writes the local build's shards (vectors bit for bit, rows, T-CoTs written by the
actors' own reasoner); resumed over an interrupted build, it encodes only the missing shards, and
a worker SIGKILLed mid-build (after a shard's vectors, before its metadata) is restarted by Ray:
the build finishes with every item exactly once.

Bit-for-bit needs the same threads per process: CPU matrix kernels split their sums by thread
count, so two local builds at 1 and 2 threads already differ in the last bits (~4e-8). A Ray
worker with one CPU runs one thread, so the local build here runs at one thread too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError
from embedrl.core.tcot_cache import TCoTCache
from embedrl.index.build import load_manifest
from embedrl.index.search import Retriever
from embedrl.index.shards import shard_path

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'embedrl[ray]')")

TESTS = Path(__file__).resolve().parent
SHARD = 12


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """A 2-CPU Ray cluster in this process; its workers run `faults.ray_worker_faults` (armed per test)."""
    folder = tmp_path_factory.mktemp("faults")
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": path, "EMBEDRL_TEST_FAULTS": str(folder)},
                          "worker_process_setup_hook": "faults.ray_worker_faults"})
    yield folder
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(synth_tiny_dir, tmp_path_factory) -> Path:
    """60 items of the synthetic corpus (images, texts, videos), media paths absolute."""
    rows = [json.loads(line) for line in (synth_tiny_dir / "corpus.jsonl").read_text().splitlines()]
    kinds = {"image": [], "text": [], "frames": []}
    for row in rows:
        kinds[next(k for k in ("frames", "image", "text") if k in row)].append(row)
    picked = [r for k in kinds for r in kinds[k][:20]]
    for row in picked:
        if "image" in row:
            row["image"] = str(synth_tiny_dir / row["image"])
        if "frames" in row:
            row["frames"] = [str(synth_tiny_dir / f) for f in row["frames"]]
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return path


def build(args: list[str]) -> None:
    assert main(["-q", "index", "build", "--shard-size", str(SHARD), *args]) == 0


@pytest.fixture(scope="module")
def local(corpus, tiny_clip_dir, tiny_reasoner_dir, tmp_path_factory) -> Path:
    """The local build, one thread (as each 1-CPU Ray worker): T-CoTs for the text items by the tiny reasoner."""
    import torch

    out = tmp_path_factory.mktemp("local") / "idx"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build(["--model", str(tiny_clip_dir), "--corpus", str(corpus), "--out", str(out), "--reasoner",
               str(tiny_reasoner_dir), "--tcot-modalities", "text", "--tcot-cache", str(out.parent / "cache.sqlite")])
    finally:
        torch.set_num_threads(threads)
    return out


def assert_same_shards(a: Path, b: Path) -> None:
    count = len(list((a / "shards").glob("shard_*.npy")))
    assert count == len(list((b / "shards").glob("shard_*.npy"))) == 5
    for i in range(count):
        assert np.array_equal(np.load(shard_path(a, i, ".npy")), np.load(shard_path(b, i, ".npy"))), i
        meta_a, meta_b = (json.loads(shard_path(d, i, ".json").read_text()) for d in (a, b))
        for key in ("start", "stop", "rows", "tcots", "skipped"):
            assert meta_a[key] == meta_b[key], (i, key)


def args_for(out: Path, clip: Path, reasoner: Path, corpus: Path, cache: Path) -> list[str]:
    return ["--model", str(clip), "--corpus", str(corpus), "--out", str(out), "--reasoner", str(reasoner),
            "--tcot-modalities", "text", "--tcot-cache", str(cache), "--engine", "ray", "--workers", "2"]


def test_ray_build_writes_the_local_shards(faults, corpus, local, tiny_clip_dir, tiny_reasoner_dir, tmp_path):
    out = tmp_path / "idx"
    # its own T-CoT cache: the actors' reasoner writes the T-CoTs
    build(args_for(out, tiny_clip_dir, tiny_reasoner_dir, corpus, tmp_path / "cache.sqlite"))
    assert_same_shards(local, out)
    with TCoTCache(tmp_path / "cache.sqlite") as cache:
        assert len(cache) == 20  # the 20 text items
    assert all(json.loads(shard_path(out, i, ".json").read_text())["stats"]["worker"] for i in range(5))
    ray_index, local_index = Retriever.from_dir(out, load_model=False), Retriever.from_dir(local, load_model=False)
    assert ray_index.store.ids() == local_index.store.ids() and len(ray_index) == 60
    ray_index.close(), local_index.close()


def test_a_killed_worker_is_retried_and_a_rerun_skips_finished_shards(
        faults, corpus, local, tiny_clip_dir, tiny_reasoner_dir, tmp_path):
    out = tmp_path / "idx"
    (out / "shards").mkdir(parents=True)
    for name in ["plan.json"] + [f"shard_0000{i}{ext}" for i in (0, 1) for ext in (".npy", ".json")]:
        shutil.copy2(local / "shards" / name, out / "shards" / name)  # an interrupted build (local, even)
    kept = {i: shard_path(out, i, ".npy").stat().st_mtime_ns for i in (0, 1)}
    (faults / "kill_shard").write_text("2")
    try:
        build(args_for(out, tiny_clip_dir, tiny_reasoner_dir, corpus, local.parent / "cache.sqlite")
              + ["--index-shards", "2"])
    finally:
        (faults / "kill_shard").unlink()
    assert (faults / "fired").is_file()  # a worker died after shard 2's vectors, before its metadata
    assert {i: shard_path(out, i, ".npy").stat().st_mtime_ns for i in kept} == kept  # not encoded again
    ids = [json.loads(line)["id"] for line in corpus.read_text().splitlines()]
    r = Retriever.from_dir(out, load_model=False)
    assert load_manifest(out)["count"] == len(r) == 60 and len(r.manifest["index_shards"]) == 2
    assert r.store.ids() == ids  # every item once, in corpus order
    assert_same_shards(local, out)
    r.close()


def test_a_worker_that_cannot_start_fails_the_build_with_a_clear_error(faults, corpus, tiny_clip_dir,
                                                                           tmp_path, monkeypatch):
    from embedrl.index.build import build_index
    from embedrl.index.ray_engine import RayEngine
    from embedrl.models.base import load_embedder

    engine = RayEngine(workers=1)
    embedder = load_embedder(str(tiny_clip_dir))
    with pytest.raises(EmbedrlError, match="not enough for one worker of 1 CPU.* and 1 GPU"):
        build_index(embedder, corpus, tmp_path / "gpu", shard_size=SHARD, engine=RayEngine(gpus_per_worker=1))
    monkeypatch.setattr(type(embedder), "fingerprint", lambda self: "0" * 16)  # the driver's copy differs
    with pytest.raises(EmbedrlError, match="is not the driver's"):
        build_index(embedder, corpus, tmp_path / "idx", shard_size=SHARD, engine=engine)


def test_bench_index_engine_ray_prints_items_per_second_and_ratios(faults, corpus, tiny_clip_dir, capsys):
    assert main(["-q", "bench", "index", "--engine", "ray", "--workers", "1", "--n", "24", "--model",
                 str(tiny_clip_dir), "--corpus", str(corpus), "--shard-size", "12"]) == 0
    out = capsys.readouterr().out
    assert "index build of 24 items" in out and "per-item overhead of Ray" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("local ", "ray "))]
    assert rows[0][:3] == ["local", "1", "1"] and rows[-1][:3] == ["ray", "1", "1"]
    base = max((r for r in rows if r[0] == "local"), key=lambda r: int(r[2]))  # this process's threads
    assert float(base[5]) == 1.0 and all(float(r[4]) > 0 for r in rows)  # x local of the baseline; items/s
