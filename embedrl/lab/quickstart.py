"""`embedrl quickstart`: the whole pipeline, offline, on the tiny presets and the synthetic benchmark.

Stages (each through the same code and recipes a user runs by hand; each skipped once done,
so a killed run resumes where it stopped):
  1. synthetic benchmark          embedrl data synth
  2. tiny presets                 embedrl presets make
  3. embedder                     embedrl train embedder --config train/embedder_tiny_clip.yaml
  4. reasoner SFT                 embedrl train reasoner-sft --config train/reasoner_sft_tiny.yaml
  5. EG-RL                        embedrl train eg-rl --config train/eg_rl_tiny.yaml
  6. index (cached target T-CoTs) embedrl index build --model ... --reasoner ...
  7. evaluation: raw vs SFT T-CoT vs EG-RL T-CoT (the ablation runner, one seed)
  8. report.md (table, curves, timings) and report.json
Step counts are scaled by size (`SIZES`): `small` runs the recipes unchanged and scores them
as `embedrl eval ablation --config eval/ablation_tiny.yaml` does, so its table is one seed of
that ablation (README.md gives the measured time). Its reasoner starts from random weights
and does not see; `eval/ablation_tiny_warm.yaml` warms it up first.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from embedrl.core.io import write_json
from embedrl.lab.ablation.config import VARIANTS, AblationConfig
from embedrl.lab.ablation.run import run_ablation
from embedrl.lab.pipeline import Pipeline

logger = logging.getLogger(__name__)

# size -> overrides of the embedder / SFT / EG-RL recipes, eval queries per set, T-CoT length
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"embedder": ["max_steps=10", "per_device_train_batch_size=8"], "sft": ["max_steps=10"],
             "eg_rl": ["max_steps=2", "max_completion_length=24"], "eval_queries": 4, "max_new_tokens": 24},
    # the recipes as they are, scored like `embedrl eval ablation`: small is that ablation's seed
    "small": {"embedder": [], "sft": [], "eg_rl": [], "eval_queries": 40, "max_new_tokens": 128},
    "medium": {"embedder": [], "sft": [], "eg_rl": [], "eval_queries": 100, "max_new_tokens": 128},
}
# The recipes a user edits live in the repository's train/ folder, beside the package.
RECIPES = Path(__file__).resolve().parents[2] / "train"


def _recipe(name: str) -> str:
    path = RECIPES / name
    if not path.is_file():
        from embedrl.core.errors import EmbedrlError

        raise EmbedrlError(f"recipe {path} not found: the quickstart runs from a checkout of the repository "
                           "(pip install -e .)")
    return str(path)


def run_quickstart(out: str | Path = "runs/quickstart", size: str = "small", seed: int = 0) -> dict[str, Any]:
    out = Path(out)
    plan = SIZES[size]
    ablation = AblationConfig(
        out=str(out), data=str(out / "synth"), data_size=size, seeds=[seed], variants=["raw", "sft", "eg_rl"],
        embedder_recipe=_recipe("embedder_tiny_clip.yaml"), sft_recipe=_recipe("reasoner_sft_tiny.yaml"),
        eg_rl_recipe=_recipe("eg_rl_tiny.yaml"), embedder_overrides=plan["embedder"], sft_overrides=plan["sft"],
        eg_rl_overrides=plan["eg_rl"], eval_queries=plan["eval_queries"], tcot_mode="both",
        max_new_tokens=plan["max_new_tokens"])
    result = run_ablation(ablation, name="quickstart", rerun_hint=f"embedrl quickstart --out {out} --size {size}")
    pipe = Pipeline("quickstart", f"embedrl quickstart --out {out} --size {size}", out / "timings.json")
    eg_rl = out / f"seed{seed}" / "eg_rl"
    index = out / "index"
    pipe.stage("index", index / "manifest.json", _build_index, out, eg_rl, index, plan["max_new_tokens"])
    timings = pipe.timings  # every stage, this run or an earlier one (shared timings.json)
    report = {"ablation": {v: {k: round(x["mean"], 2) for k, x in result["summary"][v].items()}
                           for v in ("raw", "sft", "eg_rl")},
              "timings_s": timings, "size": size, "seed": seed, "eval_queries": plan["eval_queries"],
              "index": str(index), "demo": f"embedrl demo --index {index}"}
    write_json(out / "report.json", report)
    (out / "report.md").write_text(_markdown(report, out, seed), encoding="utf-8")
    return report


def _build_index(out: Path, reasoner_dir: Path, index: Path, max_new_tokens: int) -> None:
    from embedrl.index.build import build_index
    from embedrl.models.base import load_embedder
    from embedrl.models.reasoner import load_reasoner

    cache = out / "tcot_cache.sqlite"
    build_index(load_embedder(str(out / "embedder")), out / "synth" / "corpus.jsonl", index,
                reasoner=load_reasoner(str(reasoner_dir), cache=cache, max_new_tokens=max_new_tokens), cache=cache)


def _verdict(rows: dict[str, dict[str, float]]) -> str:
    """One line read off the table: which input scored best overall, and what EG-RL added to SFT."""
    best = max(("raw", "sft", "eg_rl"), key=lambda v: rows[v]["overall"])
    gain = rows["eg_rl"]["overall"] - rows["sft"]["overall"]
    return (f"Best overall: {VARIANTS[best][0]} ({rows[best]['overall']:.1f}). EG-RL vs SFT T-CoTs: {gain:+.1f} "
            f"points; T-CoTs (EG-RL) vs raw input: {rows['eg_rl']['overall'] - rows['raw']['overall']:+.1f} points "
            "(one seed; `embedrl eval ablation` gives mean ± std over seeds).")


def _markdown(report: dict[str, Any], out: Path, seed: int) -> str:
    rows = report["ablation"]
    sets = [k for k in rows["raw"] if k != "overall"]
    lines = ["# embedrl quickstart report", "",
             f"Size `{report['size']}`, seed {seed}, Hit@1 (%) on the first {report['eval_queries']} held-out "
             "queries of each synthetic set, T-CoTs on both sides.", "",
             "| variant | " + " | ".join([*sets, "overall"]) + " |", "|---" * (len(sets) + 2) + "|"]
    for v in ("raw", "sft", "eg_rl"):
        lines.append(f"| {VARIANTS[v][0]} | " + " | ".join(f"{rows[v][k]:.1f}" for k in [*sets, "overall"]) + " |")
    lines += ["", _verdict(rows), "", "## Curves", ""]
    curves = out / f"seed{seed}" / "eg_rl" / "reward_curves.png"
    if curves.is_file():
        shutil.copyfile(curves, out / curves.name)
        lines.append(f"![EG-RL rewards]({curves.name})")
    lines += ["", "## Timings", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["timings_s"].items()]
    lines += ["", "## Look at it", "", f"    {report['demo']}", ""]
    return "\n".join(lines)
