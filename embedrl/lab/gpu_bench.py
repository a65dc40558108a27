"""`embedrl bench gpu`: the GPU figures in one run of a few minutes on one GPU.

  1. encode items/s against the bare forward (bf16 autocast, `embedrl bench encode`'s four ways)
     for the real-size architectures (`embedrl.lab.archs`), per modality;
  2. FAISS on the GPU against FAISS on the CPU on the same vectors: build seconds, search
     queries/s, and how many of the CPU's top-k the GPU finds (exact Flat and an IVF-PQ);
  3. an EG-RL step (generation / rewards / update, `embedrl bench rl` on annotated rollouts)
     with transformers generation, and with vLLM (colocated) when vllm is installed.

`dry_run` runs every part on the CPU at toy sizes (architectures cut to one layer, a few
thousand vectors, one RL step): it checks the script end to end on a machine without a GPU,
and its figures mean nothing. Every ratio is measured within the run.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from embedrl.lab.archs import ARCHS

logger = logging.getLogger(__name__)


def run_gpu_bench(dry_run: bool = False, archs: list[str] | None = None, n: int = 256, batch_size: int = 64,
                  faiss_n: int = 500_000, dim: int = 768, nq: int = 1000, k: int = 10, rl_steps: int = 3,
                  reasoner: str | None = None, embedder: str | None = None) -> dict[str, Any]:
    import torch

    from embedrl.core.errors import EmbedrlError

    if not dry_run and not torch.cuda.is_available():
        raise EmbedrlError("bench gpu: no CUDA device here; `--dry-run` checks the CPU paths at toy sizes")
    if dry_run:
        n, batch_size, faiss_n, dim, nq, rl_steps = 4, 4, 2000, 32, 20, 1
    device = "cpu" if dry_run else "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        from embedrl.lab.synth.benchmark import generate_benchmark

        data = Path(tmp) / "synth"
        generate_benchmark(data, seed=0, size="tiny")
        out: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if not dry_run else "cpu (dry run)",
                               "dry_run": dry_run}
        out["encode"] = _encode(archs or list(ARCHS), data, Path(tmp), n, batch_size, device, dry_run)
        out["faiss"] = _faiss(faiss_n, dim, nq, k)
        out["rl"] = _rl(data, Path(tmp), rl_steps, dry_run, reasoner, embedder)
    return out


def _encode(archs, data: Path, tmp: Path, n: int, batch_size: int, device: str, dry_run: bool) -> list[dict]:
    import torch

    from embedrl.lab.archs import build_arch
    from embedrl.lab.encode_bench import modality_sets, run_encode_bench

    sets = modality_sets(data, n, ["image", "text", "video", "image+tcot"], 224, tmp / "px224")
    rows = []
    for arch in archs:  # one at a time, freed before the next
        start = time.perf_counter()
        embedder = build_arch(arch, depth=1 if dry_run else None, device=device)
        logger.info("bench gpu: %s built in %.1fs", arch, time.perf_counter() - start)
        rows += run_encode_bench([embedder], sets, batch_size, repeats=1 if dry_run else 2)
        del embedder
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def _faiss(n: int, dim: int, nq: int, k: int) -> list[dict[str, Any]]:
    """Build and search on CPU, then on GPU (when faiss-gpu sees one), on the same vectors."""
    from embedrl.index import faiss_index as fx
    from embedrl.index.bench import _ivf_factory, random_unit_vectors

    xb, xq = random_unit_vectors(n, dim, seed=0), random_unit_vectors(nq, dim, seed=1)
    train = xb[: max(50_000, n // 10)]
    gpu = fx.gpu_available()
    rows = []
    for factory in ("Flat", _ivf_factory(n, dim)[0]):
        row: dict[str, Any] = {"factory": factory, "n": n, "dim": dim, "nq": nq, "k": k}
        found = {}
        for where in ("cpu", "gpu") if gpu else ("cpu",):
            start = time.perf_counter()
            index = fx.build(factory, dim, train, [xb], gpu=where == "gpu")
            row[f"{where}_build_s"] = time.perf_counter() - start
            fx.set_search_params(index, {"nprobe": 32} if factory != "Flat" else None)  # a GPU copy keeps it
            if where == "gpu":
                index = fx.to_gpu(index)
            index.search(xq[:10], k)  # warm-up
            start = time.perf_counter()
            found[where] = index.search(xq, k)[1]
            row[f"{where}_qps"] = nq / (time.perf_counter() - start)
        if gpu:
            row["gpu_build_speedup"] = row["cpu_build_s"] / row["gpu_build_s"]
            row["gpu_search_speedup"] = row["gpu_qps"] / row["cpu_qps"]
            row["gpu_finds_cpu_topk"] = fx.recall_at_k(found["gpu"], found["cpu"], k)
        else:
            row["note"] = "faiss-gpu or a GPU missing: CPU only"
        rows.append(row)
    return rows


def _rl(data: Path, tmp: Path, steps: int, dry_run: bool, reasoner: str | None, embedder: str | None) -> list[dict]:
    from embedrl.lab.presets import make_preset
    from embedrl.train.egrl.bench import bench_rl
    from embedrl.train.egrl.config import build_egrl_config

    reasoner = reasoner or str(make_preset("tiny-reasoner", tmp / "reasoner"))
    embedder = embedder or str(make_preset("tiny-clip", tmp / "clip"))
    rows = []
    engines = [False] + ([True] if not dry_run and importlib.util.find_spec("vllm") else [])
    for use_vllm in engines:
        config = build_egrl_config(None, [
            f"reasoner={reasoner}", f"embedder={embedder}", f"train_data={data / 'train' / 'pairs.jsonl'}",
            f"data_root={data}", "per_device_train_batch_size=8", "num_generations=4", "max_completion_length=112",
            f"use_cpu={str(dry_run).lower()}", f"bf16={str(not dry_run).lower()}", f"use_vllm={str(use_vllm).lower()}",
            f"max_steps={steps}", f"output_dir={tmp / 'rl'}", "save_strategy=no", "logging_steps=1000"])
        rows.append({"engine": "vllm" if use_vllm else "transformers", **bench_rl(config, "annotation")})
    if len(engines) == 1 and not dry_run:
        rows.append({"engine": "vllm", "note": "vllm not installed (pip install 'embedrl[vllm]')"})
    return rows


def format_gpu_report(report: dict[str, Any]) -> str:
    from embedrl.models.bench import format_rows

    lines = [f"# bench gpu on {report['device']}" + (" -- a dry run: toy sizes, figures mean nothing"
                                                       if report["dry_run"] else ""), "", "## encode (bf16 on CUDA)",
             "", format_rows(report["encode"]), "", "## FAISS: GPU against CPU, same vectors", "",
             "| index | n x dim | CPU build s | GPU build s | CPU q/s | GPU q/s | GPU finds CPU top-k |",
             "|---|---|---|---|---|---|---|"]
    for r in report["faiss"]:
        def f(key, spec=".2f", r=r):
            return format(r[key], spec) if key in r else "-"

        lines.append(f"| {r['factory']} | {r['n']} x {r['dim']} | {f('cpu_build_s')} | {f('gpu_build_s')} | "
                     f"{f('cpu_qps', '.0f')} | {f('gpu_qps', '.0f')} | {f('gpu_finds_cpu_topk', '.3f')} |"
                     + (f" {r['note']}" if "note" in r else ""))
    lines += ["", "## EG-RL step (annotated rollouts)", "",
              "| engine | generation s/step | rewards s/step | update s/step | outcome share | usable rollouts |",
              "|---|---|---|---|---|---|"]
    for r in report["rl"]:
        if "note" in r:
            lines.append(f"| {r['engine']} | {r['note']} | | | | |")
            continue
        s = max(r["steps"], 1)
        lines.append(f"| {r['engine']} | {r['generation_s'] / s:.3f} | {r['reward_s'] / s:.3f} | "
                     f"{r['update_s'] / s:.3f} | {r['outcome_share']:.1%} | {r['usable_share']:.0%} |")
    return "\n".join(lines)


