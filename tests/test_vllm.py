"""vLLM generation: T-CoTs on vLLM's offline engine, EG-RL rollouts through TRL's vLLM integration,
Ray GPU actors.

The settings are checked everywhere (a CPU machine gets a one-line error naming the fix); the
runs themselves are marked `gpu` and skip without a CUDA device and vllm (`pytest -m gpu` on
a GPU machine with `pip install -e '.[dev,vllm]'`).
"""

from __future__ import annotations

import importlib.util

import pytest

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item


def _has_gpu_and_vllm() -> bool:
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


needs_vllm = pytest.mark.skipif(not _has_gpu_and_vllm(), reason="needs a CUDA GPU and vllm (pip install 'embedrl[vllm]')")


def egrl_settings(reasoner, embedder, data, out) -> list[str]:
    return [f"reasoner={reasoner}", f"embedder={embedder}", f"data_root={data}",
            f"train_data={data / 'train' / 'pairs.jsonl'}", f"output_dir={out}", "max_steps=2",
            "per_device_train_batch_size=4", "num_generations=2", "max_completion_length=16", "logging_steps=1",
            "max_train_pairs=8"]


# ---------------------------------------------------------------- settings, on any machine

@pytest.mark.skipif(_has_gpu_and_vllm(), reason="checks the errors a machine without vLLM or a GPU gives")
def test_vllm_settings_without_a_gpu_or_vllm_are_one_line_errors(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir,
                                                                  tmp_path, capsys):
    from embedrl.models.reasoner import load_reasoner
    from embedrl.train.egrl.config import build_egrl_config

    with pytest.raises(EmbedrlError, match="vLLM reasoner backend needs"):
        load_reasoner(tiny_reasoner_dir, backend="vllm")
    with pytest.raises(EmbedrlError, match="backend must be one of hf, vllm"):
        load_reasoner(tiny_reasoner_dir, backend="tgi")
    with pytest.raises(EmbedrlError, match="use_vllm: true (needs vllm|with vllm_mode: colocate)"):
        build_egrl_config(None, [*egrl_settings(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir, tmp_path),
                                 "use_vllm=true"])
    assert main(["index", "build", "--model", str(tiny_clip_dir), "--corpus", str(synth_tiny_dir / "corpus.jsonl"),
                 "--out", str(tmp_path / "idx"), "--reasoner", str(tiny_reasoner_dir),
                 "--reasoner-backend", "vllm"]) == 1
    assert "vLLM reasoner backend needs" in capsys.readouterr().err


def test_ray_options_need_the_ray_engine(tiny_clip_dir, synth_tiny_dir, tmp_path, capsys):
    assert main(["index", "build", "--model", str(tiny_clip_dir), "--corpus", str(synth_tiny_dir / "corpus.jsonl"),
                 "--out", str(tmp_path / "idx"), "--workers", "2"]) == 1
    assert "need --engine ray" in capsys.readouterr().err


# ---------------------------------------------------------------- runs, on a GPU

@pytest.mark.gpu
@needs_vllm
def test_vllm_reasoner_writes_what_the_transformers_reasoner_writes(tiny_reasoner_dir, synth_tiny_dir, tmp_path):
    import json

    from embedrl.models.reasoner import load_reasoner

    rows = [json.loads(line) for line in (synth_tiny_dir / "corpus.jsonl").read_text().splitlines()]
    items = [Item.from_dict(r, root=synth_tiny_dir) for r in rows[::20]]  # images, texts, videos
    hf = load_reasoner(tiny_reasoner_dir, device="cuda", dtype="float32")
    vllm = load_reasoner(tiny_reasoner_dir, backend="vllm", dtype="float32", cache=tmp_path / "cache.sqlite",
                         engine_kwargs={"enforce_eager": True})
    assert vllm.cache_key == hf.cache_key  # one cache for both backends
    want = [t[0] for t in hf.generate_text(items, "target", max_new_tokens=32)]
    got = [t[0] for t in vllm.generate_text(items, "target", max_new_tokens=32)]
    same = sum(a == b for a, b in zip(want, got))
    assert same >= 0.9 * len(items), list(zip(want, got))  # greedy; kernels may break a rare near-tie apart
    assert len(vllm.generate(items, role="target")) == len(items) and vllm.cache.misses == len(items)
    vllm.generate(items, role="target")  # read back from the cache
    assert vllm.cache.hits == len(items) and vllm.generated_items == len(items)


@pytest.mark.gpu
@needs_vllm
def test_eg_rl_rollouts_on_vllm_colocate(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir, tmp_path):
    from embedrl.models.reasoner import load_reasoner
    from embedrl.train.egrl.config import build_egrl_config
    from embedrl.train.egrl.trainer import train_eg_rl

    config = build_egrl_config(None, [*egrl_settings(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir, tmp_path),
                                      "use_vllm=true", "vllm_mode=colocate", "vllm_gpu_memory_utilization=0.3"])
    out = train_eg_rl(config)
    assert load_reasoner(out).generate([Item(text="a red circle")], role="query", max_new_tokens=8)[0] is not None


@pytest.mark.gpu
@needs_vllm
def test_ray_gpu_actors_generate_with_vllm_and_encode(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'embedrl[ray]')")
    from embedrl.index.search import Retriever

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        assert main(["index", "build", "--model", str(tiny_clip_dir), "--corpus", str(synth_tiny_dir / "corpus.jsonl"),
                     "--out", str(tmp_path / "idx"), "--reasoner", str(tiny_reasoner_dir), "--tcot-modalities",
                     "text", "--reasoner-backend", "vllm", "--tcot-cache", str(tmp_path / "cache.sqlite"),
                     "--engine", "ray", "--workers", "1", "--gpus-per-worker", "1"]) == 0
    finally:
        ray.shutdown()
    r = Retriever.from_dir(tmp_path / "idx", load_model=False)
    assert len(r) == len((synth_tiny_dir / "corpus.jsonl").read_text().splitlines())
