"""The Embed-RL ablation on the synthetic benchmark: raw input vs SFT T-CoT vs EG-RL T-CoT.

`embedrl eval ablation --config eval/ablation_tiny.yaml` runs, per seed: T-CoT SFT of the
tiny reasoner, then EG-RL from it three ways (all rewards, without the process reward,
without the outcome reward; a variant whose switched-off reward was 0 throughout the full run
is that run, and is not rerun), then scores each variant with one frozen embedder (trained
once) on the held-out sets, T-CoTs on both sides. The recipes in `train/` give the
hyperparameters; this module only sets paths and seeds. Every stage resumes: finished stages
are skipped, and a training stage that was killed continues from its last complete checkpoint.
A rerun into the same `out` must keep the settings (adding seeds or variants is fine).

With `rerankers` set, each first stage of `rerank_variants` is also scored with a second stage on
its top `rerank_k`, on the first `rerank_queries` held-out queries of each set (`rerank.py`).

Output: `ablation.json` (Hit@1 per set and overall per variant and seed, and mean/std),
`ablation.md` (the table, mean +/- std over seeds; whether each step clears the seeds' spread;
each step's paired interval; the share of T-CoTs the embedder could use; each reranker's change
of Hit@1 and NDCG@5 per first stage, with its paired interval and cost) and `reward_curves.png`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import atomic_write, read_json, write_json
from embedrl.lab.ablation.config import VARIANTS, AblationConfig
from embedrl.lab.ablation.report import (
    format_ordering,
    format_rerank,
    format_reused,
    format_steps,
    format_table,
    format_usage,
    plot_variant_curves,
)
from embedrl.lab.ablation.rerank import evaluate_rerank, rerank_model_path, summarize_rerank
from embedrl.lab.ablation.stats import paper_ordering, step_intervals, summarize, summarize_usage
from embedrl.lab.ablation.workers import run_seeds_in_workers
from embedrl.lab.pipeline import Pipeline

logger = logging.getLogger(__name__)


def _train_embedder(config: AblationConfig, presets: Path, out: Path) -> None:
    from embedrl.train.embedder import build_config, train_embedder

    data = Path(config.data)
    train_embedder(build_config(config.embedder_recipe, [
        f"model={presets / 'tiny-clip'}", f"train_data={data / 'train' / 'pairs.jsonl'}", f"data_root={data}",
        f"output_dir={out}", *config.embedder_overrides]), resume=True)


def _train_warmup(config: AblationConfig, presets: Path, out: Path) -> None:
    from embedrl.lab.warmup import build_config, train_reasoner_warmup

    train_reasoner_warmup(build_config(config.warmup_recipe, [
        f"model={presets / config.reasoner_preset}", f"output_dir={out}", *config.warmup_overrides]), resume=True)


def _train_discriminator(config: AblationConfig, presets: Path, out: Path) -> None:
    from embedrl.lab.discriminator import build_config, train_discriminator

    data = Path(config.data)
    train_discriminator(build_config(config.discriminator_recipe, [
        f"model={presets / config.reasoner_preset}", f"train_data={data / 'train' / 'pairs.jsonl'}",
        f"data_root={data}", f"output_dir={out}", *config.discriminator_overrides]), resume=True)


def _train_sft(config: AblationConfig, start: Path, seed: int, out: Path) -> None:
    from embedrl.train.reasoner_sft import build_config, train_reasoner_sft

    data = Path(config.data)
    train_reasoner_sft(build_config(config.sft_recipe, [
        f"model={start}", f"train_data={data / 'train' / 'pairs.jsonl'}", f"data_root={data}",
        f"output_dir={out}", f"seed={seed}", *config.sft_overrides]), resume=True)


def _train_eg_rl(config: AblationConfig, sft: Path, embedder: Path, seed: int, extra: list[str], out: Path) -> None:
    from embedrl.train.egrl.config import build_egrl_config
    from embedrl.train.egrl.trainer import train_eg_rl

    data = Path(config.data)
    train_eg_rl(build_egrl_config(config.eg_rl_recipe, [
        f"reasoner={sft}", f"embedder={embedder}", f"train_data={data / 'train' / 'pairs.jsonl'}",
        f"data_root={data}", f"output_dir={out}", f"seed={seed}", *config.modalities_override(),
        f"tcot_cache={Path(config.out) / 'tcot_cache.sqlite'}", *config.eg_rl_overrides, *extra]), resume=True)


def reward_never_varied(eg_rl_run: Path, extra: list[str]) -> str | None:
    """The reward a variant switches off (its only override is `NAME_weight=0`), when the full
    EG-RL run of the same seed logged it as 0 for every rollout: then the variant's totals, its
    advantages and so its run are that run's, and training and scoring it again would only
    repeat it. (Offline the process reward is such a reward: the default discriminator never
    answers, and three runs of (d) scored exactly as (c).)"""
    if len(extra) != 1 or not extra[0].endswith("_weight=0"):
        return None
    name = extra[0].removesuffix("_weight=0")
    log = eg_rl_run / "log_history.json"
    if not (eg_rl_run / "embedrl_reasoner.json").is_file() or not log.is_file():
        return None
    rows = [row for row in read_json(log) if f"rewards/{name}/mean" in row]
    if rows and all(row[f"rewards/{name}/mean"] == 0 and row.get(f"rewards/{name}/std", 0) == 0 for row in rows):
        return name
    return None


def hits_path(result: Path) -> Path:
    """Where an evaluation's per-query hits sit, beside its scores."""
    return result.with_name(result.stem + ".hits.json")


def usage_path(result: Path) -> Path:
    """Where an evaluation's T-CoT usage (written / usable per set and role) sits, beside its scores."""
    return result.with_name(result.stem + ".tcots.json")


def load_eval_reasoner(config: AblationConfig, reasoner: Path):
    """A reasoner as the evaluations use it: the run's T-CoT cache, generation limit and modalities."""
    from embedrl.models.reasoner import load_reasoner

    return load_reasoner(str(reasoner), cache=Path(config.out) / "tcot_cache.sqlite",
                         max_new_tokens=config.max_new_tokens, modalities=config.tcot_modalities)


def _evaluate(config: AblationConfig, embedder: Path, reasoner: Path | None, out: Path) -> None:
    from embedrl.eval.mmeb import quick_eval_hits
    from embedrl.models.base import load_embedder

    loaded = load_eval_reasoner(config, reasoner) if reasoner is not None else None
    scores, hits, usage = quick_eval_hits(load_embedder(str(embedder)), config.eval_data or config.data,
                                          config.datasets, loaded, config.tcot_mode if loaded else "none",
                                          max_queries=config.eval_queries,
                                          tcot_mode_by_set=config.tcot_mode_by_set if loaded else None)
    write_json(hits_path(out), hits)
    if usage and any(usage.values()):
        write_json(usage_path(out), usage)
    write_json(out, scores)  # last: marks the stage done


def _check_benchmark_version(data: Path) -> None:
    """A benchmark written by an older generator lacks fields the stages rely on (e.g. `neg_tcot`)."""
    from embedrl.lab.synth.benchmark import VERSION, read_meta

    meta = read_meta(data)
    if meta is not None and meta.get("version") != VERSION:
        raise EmbedrlError(f"{data} holds synthetic benchmark version {meta.get('version')}, this embedrl writes "
                           f"version {VERSION}; regenerate it (`embedrl data synth --out {data} --size "
                           f"{meta.get('size')} --overwrite`) or point `data` at a new folder")


def _settings(config: AblationConfig) -> dict[str, Any]:
    """What the finished stages of a run depend on: every field but where the run is and how many seeds, variants
    and workers it has (adding those to a run is resuming it), with recipes by content and data folders absolute."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("out", "seeds", "variants", "workers")}
    for key in ("embedder_recipe", "warmup_recipe", "discriminator_recipe", "sft_recipe", "eg_rl_recipe"):
        recipe = Path(settings[key] or "")
        if recipe.is_file():
            settings[key] = hashlib.sha1(recipe.read_bytes()).hexdigest()
    for key in ("data", "eval_data"):
        settings[key] = settings[key] and os.path.abspath(settings[key])
    return settings


def run_ablation(config: AblationConfig, name: str = "ablation",
                 rerun_hint: str = "embedrl eval ablation --config ...", write_report: bool = True) -> dict[str, Any]:
    """Every stage not yet done, then the table over `config.seeds` (written to OUT unless
    `write_report` is false, as for one seed of a parallel run)."""
    from embedrl.lab.presets import make_preset
    from embedrl.lab.synth.benchmark import generate_benchmark

    out = Path(config.out)
    presets = out / "presets"
    for data in filter(None, (config.data, config.eval_data)):
        _check_benchmark_version(Path(data))
    pipe = Pipeline(name, rerun_hint, out / "timings.json", settings=_settings(config))
    pipe.stage("synthetic benchmark", Path(config.data) / "meta.json", generate_benchmark, config.data, 0,
               config.data_size)
    if config.eval_data:
        pipe.stage("evaluation benchmark", Path(config.eval_data) / "meta.json", generate_benchmark,
                   config.eval_data, config.eval_data_seed, config.eval_data_size)
    for name in ("tiny-clip", config.reasoner_preset):
        pipe.stage(f"preset {name}", presets / name / ".embedrl-preset.json", make_preset, name, presets / name)
    embedder = out / "embedder"
    pipe.stage("embedder", embedder / "embedrl.json", _train_embedder, config, presets, embedder)
    needs_sft = any(v != "raw" for v in config.variants)
    start = presets / config.reasoner_preset
    if config.warmup_recipe and needs_sft:
        start = out / "warmup"
        pipe.stage("reasoner warm-up", start / "embedrl_reasoner.json", _train_warmup, config, presets, start)
    needs_rl = any(VARIANTS[v][1] is not None for v in config.variants)
    rl_extra = []
    if config.discriminator_recipe and needs_rl:
        discriminator = out / "discriminator"
        pipe.stage("discriminator", discriminator / "embedrl_reasoner.json", _train_discriminator, config, presets,
                   discriminator)
        rl_extra = [f"discriminator={discriminator}"]
    scores: dict[str, dict[int, dict[str, float]]] = {v: {} for v in config.variants}
    hits: dict[str, dict[int, dict[str, list[int]]]] = {v: {} for v in config.variants}
    usage: dict[str, dict[int, dict]] = {v: {} for v in config.variants}
    reused: dict[str, list[int]] = {}  # variant -> seeds whose run is EG-RL's (`reward_never_varied`)
    reranked: dict[str, dict[str, dict[int, dict]]] = {}  # reranker -> first stage -> seed -> per-set results
    if "raw" in config.variants:  # the one evaluation every seed shares
        pipe.stage("evaluate raw", out / "raw.json", _evaluate, config, embedder, None, out / "raw.json")
    if config.workers > 1 and len(config.seeds) > 1:
        run_seeds_in_workers(config, config.seeds)
        pipe.reload_timings()
    for seed in config.seeds:
        run = out / f"seed{seed}"
        sft = run / "sft"
        if needs_sft:
            pipe.stage(f"seed {seed}: reasoner SFT", sft / "embedrl_reasoner.json", _train_sft, config, start,
                       seed, sft)
        for variant in config.variants:
            _, extra = VARIANTS[variant]
            reasoner = None if variant == "raw" else sft
            done = (run / f"eval_{variant}.json").is_file()  # a variant already scored is read as measured
            zeroed = None if done or not extra or seed not in scores.get("eg_rl", {}) else \
                reward_never_varied(run / "eg_rl", extra)
            if zeroed:
                logger.info("seed %d: %s is the eg_rl run (its %s reward was 0 for every rollout): not rerun",
                            seed, variant, zeroed)
                scores[variant][seed] = scores["eg_rl"][seed]
                if seed in usage["eg_rl"]:
                    usage[variant][seed] = usage["eg_rl"][seed]
                reused.setdefault(variant, []).append(seed)
                continue
            if extra is not None:
                reasoner = run / variant
                pipe.stage(f"seed {seed}: {variant}", reasoner / "embedrl_reasoner.json", _train_eg_rl, config, sft,
                           embedder, seed, [*rl_extra, *extra], reasoner)
            result = (out / "raw.json") if variant == "raw" else run / f"eval_{variant}.json"
            if variant != "raw":
                pipe.stage(f"seed {seed}: evaluate {variant}", result, _evaluate, config, embedder, reasoner, result)
            scores[variant][seed] = read_json(result)
            if hits_path(result).is_file():
                hits[variant][seed] = read_json(hits_path(result))
            if usage_path(result).is_file():
                usage[variant][seed] = read_json(usage_path(result))
        for variant in [v for v in config.rerank_variants if v in config.variants and seed not in reused.get(v, [])]:
            reasoner = None if variant == "raw" else sft if variant == "sft" else run / variant
            for name in config.rerankers:
                result = run / f"rerank_{name}_{variant}.json"
                pipe.stage(f"seed {seed}: {variant} reranked by {name}", result, evaluate_rerank, config, embedder,
                           reasoner, name, rerank_model_path(config, seed), result)
                reranked.setdefault(name, {}).setdefault(variant, {})[seed] = read_json(result)
    summary = summarize(scores)
    steps = step_intervals(hits, config.seeds)
    usable = summarize_usage(usage)
    ordering = paper_ordering(summary, scores)
    rerank = summarize_rerank(reranked, config.seeds)
    report = {"scores": {v: {str(s): d for s, d in by_seed.items()} for v, by_seed in scores.items()},
              "summary": summary, "seeds": config.seeds, "eval_data": config.eval_data or config.data,
              "eval_queries": config.eval_queries,
              "tcot_mode": config.tcot_mode, "tcot_mode_by_set": config.tcot_mode_by_set,
              "tcot_modalities": config.tcot_modalities, "steps": steps,
              "paper_ordering": ordering, "usable_tcots": usable, "same_run_as_eg_rl": reused,
              "rerank": rerank, "rerank_queries": config.rerank_queries, "rerank_model": config.rerank_model,
              "timings_s": pipe.timings}
    if write_report:
        write_json(out / "ablation.json", report)
        with atomic_write(out / "ablation.md") as f:
            f.write(format_table(summary) + format_ordering(ordering) + format_reused(reused)
                    + format_steps(steps) + format_usage(usable) + format_rerank(rerank, config.rerank_queries))
        plot_variant_curves(out, config.seeds[0], [v for v in config.variants if VARIANTS[v][1] is not None])
    return report


if __name__ == "__main__":  # one seed of a parallel run (`workers`): python -m embedrl.lab.ablation.run CONFIG SEED
    import sys

    from embedrl.core.config import build_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    config_file, seed = sys.argv[1:3]
    run_ablation(build_config(AblationConfig, config_file, [f"seeds=[{seed}]"]), write_report=False)
