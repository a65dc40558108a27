"""The Embed-RL ablation on the synthetic benchmark: raw input vs SFT T-CoT vs EG-RL T-CoT.

`embedrl eval ablation --config eval/ablation_tiny.yaml` runs, per seed: T-CoT SFT of the
tiny reasoner, then EG-RL from it three ways (all rewards, without the process reward,
without the outcome reward; a variant whose switched-off reward was 0 throughout the full run
is that run, and is not rerun), then scores each variant with one frozen embedder (trained
once) on the held-out sets, T-CoTs on both sides. The recipes in `train/` give the
hyperparameters; this module only sets paths and seeds. Every stage resumes: finished stages
are skipped, and a training stage that was killed continues from its last complete checkpoint.

Output: `ablation.json` (Hit@1 per set and overall per variant and seed, and mean/std),
`ablation.md` (the table, mean +/- std over seeds; whether each step clears the seeds' spread;
each step's paired interval; the share of T-CoTs the embedder could use) and `reward_curves.png`.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedrl.errors import EmbedrlError
from embedrl.eval import TCOT_MODES, unknown_modes
from embedrl.io import atomic_write, read_json, write_json
from embedrl.pipeline import Pipeline

logger = logging.getLogger(__name__)

VARIANTS = {  # name -> (label in the table, EG-RL overrides; None: no EG-RL)
    "raw": ("(a) raw input", None),
    "sft": ("(b) T-CoT, SFT reasoner", None),
    "eg_rl": ("(c) T-CoT, EG-RL", []),
    "no_process": ("(d) EG-RL without process reward", ["process_weight=0"]),
    "no_outcome": ("(e) EG-RL without outcome reward", ["outcome_weight=0"]),
    # a rollout meets its own dataset's candidates only, as a held-out query does
    "eg_rl_own": ("EG-RL, negatives from the rollout's own dataset", ["outcome_negatives=dataset"]),
    # the retrieval view of the outcome reward: the positive's rank (no Acc_k gate), targets ranked by their query
    "eg_rl_rank": ("EG-RL, rank outcome from the query's side",
                   ["outcome_form=rank", "target_view=query", "outcome_k=1000000"]),
    # the reward-weight question (the paper's text vs its code); not in the default table
    "paper_text": ("EG-RL, paper-text weights (process 0.8, outcome 0.2)", ["process_weight=0.8", "outcome_weight=0.2"]),
    "paper_code": ("EG-RL, paper-code weights (process 0.2, outcome 0.8)", ["process_weight=0.2", "outcome_weight=0.8"]),
}
DEFAULT_VARIANTS = ["raw", "sft", "eg_rl", "no_process", "no_outcome"]


@dataclass
class AblationConfig:
    out: str = field(default="runs/ablation", metadata={"help": "Output folder (everything resumes from it)."})
    data: str = field(default="runs/synth", metadata={"help": "Synthetic benchmark folder (made if missing)."})
    data_size: str = field(default="small", metadata={"help": "Benchmark size when it has to be made."})
    embedder_recipe: str = field(default="train/embedder_tiny_clip.yaml", metadata={
        "help": "Recipe of the one frozen embedder that scores every variant (trained once)."})
    reasoner_preset: str = field(default="tiny-reasoner", metadata={
        "help": "Preset the reasoner starts from: tiny-reasoner, tiny-reasoner-digits (numbers written digit by "
                "digit, as Qwen2's tokenizer does) or tiny-reasoner-wide (text model twice as wide)."})
    warmup_recipe: str | None = field(default=None, metadata={
        "help": "Perception warm-up recipe for a from-scratch reasoner, run once before the seeds' SFT "
                "(e.g. train/reasoner_warmup_tiny.yaml); none: SFT starts from the preset."})
    discriminator_recipe: str | None = field(default=None, metadata={
        "help": "Recipe teaching the process reward's discriminator (e.g. train/discriminator_tiny.yaml), run "
                "once; none: EG-RL's own default (the SFT reasoner)."})
    sft_recipe: str = field(default="train/reasoner_sft_tiny.yaml", metadata={"help": "T-CoT SFT recipe, run per seed."})
    eg_rl_recipe: str = field(default="train/eg_rl_tiny.yaml", metadata={
        "help": "EG-RL recipe, run per seed and variant from that seed's SFT reasoner."})
    embedder_overrides: list[str] = field(default_factory=list, metadata={
        "help": "key=value overrides of embedder_recipe (e.g. [use_tcot=true]); likewise the four below."})
    warmup_overrides: list[str] = field(default_factory=list)
    discriminator_overrides: list[str] = field(default_factory=list)
    sft_overrides: list[str] = field(default_factory=list)
    eg_rl_overrides: list[str] = field(default_factory=list, metadata={
        "help": "Applied to every EG-RL variant, before the variant's own (e.g. no_outcome's outcome_weight=0)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "Training seeds (SFT and EG-RL); the table reports mean +/- std over them."})
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS), metadata={
        "help": f"Rows of the table: {', '.join(DEFAULT_VARIANTS)} (the default), or also the EG-RL variants "
                f"{', '.join(v for v in VARIANTS if v not in DEFAULT_VARIANTS)}."})
    datasets: list[str] | None = field(default=None, metadata={"help": "Score only these held-out sets (None: all)."})
    eval_data: str | None = field(default=None, metadata={
        "help": "Benchmark whose held-out sets score the variants (made if missing, from eval_data_seed and "
                "eval_data_size): a larger, independently drawn one resolves smaller differences. None: `data`'s."})
    eval_data_size: str = field(default="medium", metadata={"help": "Size of eval_data when it has to be made."})
    eval_data_seed: int = field(default=1, metadata={"help": "Seed of eval_data when it has to be made."})
    eval_queries: int | None = field(default=40, metadata={
        "help": "Queries scored per held-out set (None: all of them); the same ones for every variant."})
    tcot_mode: str = field(default="both", metadata={
        "help": "Which side gets T-CoTs in (b)-(e): query, target, both or none."})
    tcot_mode_by_set: dict[str, str] | None = field(default=None, metadata={
        "help": "Held-out sets scored with a T-CoT mode of their own in (b)-(e), e.g. {Synth-Grounding: target}: "
                "its queries embedded raw, its candidates with T-CoTs. Training is unchanged. None: tcot_mode for all."})
    tcot_modalities: list[str] | None = field(default=None, metadata={
        "help": "Item modalities the reasoner writes T-CoTs for in EG-RL and evaluation (e.g. [image, video]); "
                "items of others are embedded raw. SFT still learns from every annotation. None: all."})
    max_new_tokens: int = field(default=128, metadata={  # tiny-reasoner-digits writes longer T-CoTs: its config sets 160
        "help": "Longest T-CoT the reasoner writes in evaluation (tokens)."})
    workers: int = field(default=1, metadata={
        "help": "Seeds run at once, each in its own process with cores/workers threads (at least 1), after the "
                "stages they share. Tiny models leave cores idle between small matrix products: on 2 cores, "
                "3 workers ran eval/ablation_tiny.yaml's seeds 1.55x as fast as one process (eval/README.md)."})

    def __post_init__(self):
        from embedrl.models.presets import REASONER_PRESETS
        from embedrl.models.reasoner import check_modalities

        if self.reasoner_preset not in REASONER_PRESETS:
            raise ValueError(f"reasoner_preset must be one of {list(REASONER_PRESETS)}, not {self.reasoner_preset!r}")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
        check_modalities(self.tcot_modalities)
        bad = unknown_modes(self.tcot_mode_by_set)
        if self.tcot_mode not in TCOT_MODES or bad:
            raise ValueError(f"T-CoT modes must be one of {TCOT_MODES}: tcot_mode {self.tcot_mode!r}, by set {bad}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")

    def modalities_override(self) -> list[str]:
        """The `modalities=...` override EG-RL gets (none when T-CoTs cover every modality)."""
        return [f"modalities=[{','.join(self.tcot_modalities)}]"] if self.tcot_modalities else []


def _train_embedder(config: AblationConfig, presets: Path, out: Path) -> None:
    from embedrl.train.embedder import build_config, train_embedder

    data = Path(config.data)
    train_embedder(build_config(config.embedder_recipe, [
        f"model={presets / 'tiny-clip'}", f"train_data={data / 'train' / 'pairs.jsonl'}", f"data_root={data}",
        f"output_dir={out}", *config.embedder_overrides]), resume=True)


def _train_warmup(config: AblationConfig, presets: Path, out: Path) -> None:
    from embedrl.train.reasoner_warmup import build_config, train_reasoner_warmup

    train_reasoner_warmup(build_config(config.warmup_recipe, [
        f"model={presets / config.reasoner_preset}", f"output_dir={out}", *config.warmup_overrides]), resume=True)


def _train_discriminator(config: AblationConfig, presets: Path, out: Path) -> None:
    from embedrl.train.discriminator import build_config, train_discriminator

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
    from embedrl.train.egrl import build_egrl_config, train_eg_rl

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


def _evaluate(config: AblationConfig, embedder: Path, reasoner: Path | None, out: Path) -> None:
    from embedrl.eval.mmeb import quick_eval_hits
    from embedrl.models.base import load_embedder

    loaded = None
    if reasoner is not None:
        from embedrl.models.reasoner import load_reasoner

        loaded = load_reasoner(str(reasoner), cache=Path(config.out) / "tcot_cache.sqlite",
                               max_new_tokens=config.max_new_tokens, modalities=config.tcot_modalities)
    scores, hits, usage = quick_eval_hits(load_embedder(str(embedder)), config.eval_data or config.data,
                                          config.datasets, loaded, config.tcot_mode if loaded else "none",
                                          max_queries=config.eval_queries,
                                          tcot_mode_by_set=config.tcot_mode_by_set if loaded else None)
    write_json(hits_path(out), hits)
    if usage and any(usage.values()):
        write_json(usage_path(out), usage)
    write_json(out, scores)  # last: marks the stage done


@contextlib.contextmanager
def sigterm_requests_stop():
    """Within the block, SIGTERM (`kill`, a job scheduler's stop) sets the yielded event instead of
    ending the process, so the loop that polls it stops the seed workers with their parent rather than
    leaving orphans that a rerun would start a second time over the same files. A flag, not an exception
    raised from the handler: one raised while `Popen` forks would lose the new worker's handle."""
    import signal
    import threading

    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_seeds_in_workers(config: AblationConfig, seeds: list[int]) -> None:
    """Each seed's stages in a process of its own, `config.workers` at a time, logging to
    OUT/seedN/ablation.log; the stages they share must be done already. The parent then finds
    every stage done and only reads the results."""
    import dataclasses
    import os
    import subprocess
    import sys

    from tqdm.auto import tqdm

    out = Path(config.out)
    config_file = out / "ablation_config.json"
    write_json(config_file, {**dataclasses.asdict(config), "workers": 1})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = str(max(1, cores // config.workers))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    logger.info("seeds %s in %d processes at %s thread(s) each; logs: %s", seeds, config.workers, threads,
                out / "seed*/ablation.log")
    waiting, running, failed = list(seeds), {}, []
    try:
        with sigterm_requests_stop() as stop, tqdm(total=len(seeds), desc="seeds", unit="seed") as bar:
            while waiting or running:
                if stop.is_set():
                    raise KeyboardInterrupt("SIGTERM")
                while waiting and len(running) < config.workers:
                    seed = waiting.pop(0)
                    log = out / f"seed{seed}" / "ablation.log"
                    log.parent.mkdir(parents=True, exist_ok=True)
                    with open(log, "a", encoding="utf-8") as handle:
                        running[seed] = (subprocess.Popen(
                            [sys.executable, "-m", "embedrl.eval.ablation", str(config_file), str(seed)],
                            stdout=handle, stderr=subprocess.STDOUT, env=env), log)
                for seed, (process, log) in list(running.items()):
                    if process.poll() is not None:
                        del running[seed]
                        bar.update()
                        if process.returncode:
                            failed.append(f"seed {seed} (exit {process.returncode}; see {log})")
                time.sleep(1)
    finally:  # interrupted: stop the workers too; their finished stages are kept and resume
        for process, _ in running.values():
            process.terminate()
            process.wait()
    if failed:
        raise EmbedrlError(f"ablation failed for {', '.join(failed)}; fix the cause and rerun: finished stages "
                           f"are kept and skipped")


def _check_benchmark_version(data: Path) -> None:
    """A benchmark written by an older generator lacks fields the stages rely on (e.g. `neg_tcot`)."""
    from embedrl.data.synth import VERSION, read_meta

    meta = read_meta(data)
    if meta is not None and meta.get("version") != VERSION:
        raise EmbedrlError(f"{data} holds synthetic benchmark version {meta.get('version')}, this embedrl writes "
                           f"version {VERSION}; regenerate it (`embedrl data synth --out {data} --size "
                           f"{meta.get('size')} --overwrite`) or point `data` at a new folder")


def run_ablation(config: AblationConfig, name: str = "ablation",
                 rerun_hint: str = "embedrl eval ablation --config ...", write_report: bool = True) -> dict[str, Any]:
    """Every stage not yet done, then the table over `config.seeds` (written to OUT unless
    `write_report` is false, as for one seed of a parallel run)."""
    from embedrl.data.synth import generate_benchmark
    from embedrl.models.presets import make_preset

    out = Path(config.out)
    presets = out / "presets"
    for data in filter(None, (config.data, config.eval_data)):
        _check_benchmark_version(Path(data))
    pipe = Pipeline(name, rerun_hint, out / "timings.json")
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
    if "raw" in config.variants:  # the one evaluation every seed shares
        pipe.stage("evaluate raw", out / "raw.json", _evaluate, config, embedder, None, out / "raw.json")
    if config.workers > 1 and len(config.seeds) > 1:
        _run_seeds_in_workers(config, config.seeds)
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
    summary = summarize(scores)
    steps = step_intervals(hits, config.seeds)
    usable = summarize_usage(usage)
    ordering = paper_ordering(summary, scores)
    report = {"scores": {v: {str(s): d for s, d in by_seed.items()} for v, by_seed in scores.items()},
              "summary": summary, "seeds": config.seeds, "eval_data": config.eval_data or config.data,
              "eval_queries": config.eval_queries,
              "tcot_mode": config.tcot_mode, "tcot_mode_by_set": config.tcot_mode_by_set,
              "tcot_modalities": config.tcot_modalities, "steps": steps,
              "paper_ordering": ordering, "usable_tcots": usable, "same_run_as_eg_rl": reused,
              "timings_s": pipe.timings}
    if write_report:
        write_json(out / "ablation.json", report)
        with atomic_write(out / "ablation.md") as f:
            f.write(format_table(summary) + format_ordering(ordering) + format_reused(reused)
                    + format_steps(steps) + format_usage(usable))
        plot_reward_curves(out, config.seeds[0], [v for v in config.variants if VARIANTS[v][1] is not None])
    return report


STEPS = [("sft", "raw"), ("eg_rl", "sft"), ("eg_rl", "no_process"), ("eg_rl", "no_outcome")]


def paired_interval(before: list[dict[str, list[int]]], after: list[dict[str, list[int]]], resamples: int = 2000,
                    seed: int = 0) -> dict[str, float]:
    """Overall Hit@1 of `after` minus `before` (points, mean over seeds) and its 95% bootstrap interval.

    Each list holds one run per seed, each run its per-query hits per set; every run scored the same
    queries. Queries are redrawn within each set, the same draw for every seed, so the interval
    says how much of a step the choice of held-out queries alone could make.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    observed, draws = 0.0, np.zeros(resamples)
    sets = list(before[0])
    for name in sets:
        diff = np.mean([np.asarray(a[name], float) - np.asarray(b[name], float) for a, b in zip(after, before)], 0)
        observed += diff.mean()
        draws += diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(1)
    scale = 100 / len(sets)
    low, high = np.percentile(draws * scale, [2.5, 97.5])
    return {"diff": float(observed * scale), "low": float(low), "high": float(high)}


def step_intervals(hits: dict[str, dict[int, dict[str, list[int]]]], seeds: list[int]) -> dict[str, dict[str, float]]:
    """`paired_interval` for each step of the table whose runs all kept their per-query hits."""
    out = {}
    for after, before in STEPS:
        if after in hits and before in hits:
            runs_before, runs_after = ([hits[v].get(s) for s in seeds] for v in (before, after))
            if all(r is not None for r in runs_before + runs_after):
                out[f"{after} - {before}"] = paired_interval(runs_before, runs_after)
    return out


def paper_ordering(summary: dict[str, dict[str, dict[str, float]]],
                   scores: dict[str, dict[int, dict[str, float]]] | None = None) -> dict[str, dict[str, float | bool]]:
    """The paper's claim, checked on this table: each of (b) − (a) and (c) − (b) on the overall mean,
    against the larger of the two rows' spreads over seeds (a step inside it could be the seeds).

    With the per-seed `scores`, also on how many seeds the later row is above the earlier one: the
    spread is mostly how good each seed's SFT reasoner came out, which (b) and (c) share, so a step
    inside it can still hold seed by seed."""
    out = {}
    for after, before in (("sft", "raw"), ("eg_rl", "sft")):
        if after in summary and before in summary:
            a, b = summary[after]["overall"], summary[before]["overall"]
            diff, spread = a["mean"] - b["mean"], max(a["std"], b["std"])
            step = {"diff": diff, "spread": spread, "above_spread": diff > spread}
            if scores:
                paired = [s for s in scores[after] if s in scores[before]]
                step["seeds"] = len(paired)
                step["seeds_above"] = sum(scores[after][s]["overall"] > scores[before][s]["overall"] for s in paired)
            out[f"{after} - {before}"] = step
    return out


def format_ordering(ordering: dict[str, dict[str, float | bool]]) -> str:
    if not ordering:
        return ""
    parts = []
    for name, step in ordering.items():
        after, before = name.split(" - ")
        verdict = "above" if step["above_spread"] else "not above"
        seeds = f", above on {step['seeds_above']} of {step['seeds']} seeds" if "seeds" in step else ""
        parts.append(f"{VARIANTS[after][0][:3]} − {VARIANTS[before][0][:3]} {step['diff']:+.2f}, {verdict} the "
                     f"seeds' spread ({step['spread']:.2f}){seeds}")
    met = len(ordering) == 2 and all(s["above_spread"] for s in ordering.values())
    return f"\nThe paper's ordering (c) > (b) > (a), each step above the seeds' spread: " \
        f"{'met' if met else 'not met'} ({'; '.join(parts)}).\n"


def format_reused(reused: dict[str, list[int]]) -> str:
    lines = [f"\n{VARIANTS[v][0][:3]} is (c)'s run on seed(s) {', '.join(map(str, seeds))}: the reward it switches off "
             f"was 0 for every rollout of (c), so (c)'s advantages were already its own; it was not rerun.\n"
             for v, seeds in reused.items()]
    return "".join(lines)


def format_steps(steps: dict[str, dict[str, float]]) -> str:
    if not steps:
        return ""
    lines = ["", "| step | overall Hit@1 difference | 95% interval over queries |", "|---|---|---|"]
    for name, step in steps.items():
        after, before = name.split(" - ")
        lines.append(f"| {VARIANTS[after][0][:3]} − {VARIANTS[before][0][:3]} | {step['diff']:+.1f} | "
                     f"{step['low']:+.1f} to {step['high']:+.1f} |")
    return "\n".join(lines) + "\n\nSame queries for every run: a step whose interval spans 0 is within what the " \
        "draw of held-out queries alone could make.\n"


def summarize_usage(usage: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and role: the share (%) of written T-CoTs the embedder could use, over every set,
    mean and (population) std over the seeds that recorded it."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, by_seed in usage.items():
        for role in ("query", "target"):
            shares = []
            for sets in by_seed.values():
                written = sum(u[role]["written"] for u in sets.values() if role in u)
                if written:
                    shares.append(100 * sum(u[role]["usable"] for u in sets.values() if role in u) / written)
            if shares:
                out.setdefault(variant, {})[role] = {"mean": statistics.fmean(shares),
                                                     "std": statistics.pstdev(shares)}
    return out


def format_usage(usable: dict[str, dict[str, dict[str, float]]]) -> str:
    if not usable:
        return ""
    lines = ["", "| variant | usable query T-CoTs | usable target T-CoTs |", "|---|---|---|"]
    for variant, roles in usable.items():
        cells = [f"{roles[r]['mean']:.1f} ± {roles[r]['std']:.1f}" if r in roles else "–" for r in ("query", "target")]
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nShare (%) of the T-CoTs written that the embedder used, over every set, mean ± std " \
        "over seeds; an item whose T-CoT is broken (tags, JSON, boxes, key frames) is embedded raw.\n"


def summarize(scores: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and set: mean and (population) std over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, by_seed in scores.items():
        if not by_seed:
            continue
        names = list(next(iter(by_seed.values())))
        out[variant] = {n: {"mean": statistics.fmean(s[n] for s in by_seed.values()),
                            "std": statistics.pstdev([s[n] for s in by_seed.values()])} for n in names}
    return out


def format_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    if not summary:
        raise EmbedrlError("no results to tabulate")
    names = list(next(iter(summary.values())))
    sets = [n for n in names if n != "overall"]
    lines = ["| variant | " + " | ".join([*sets, "overall"]) + " |", "|---" * (len(sets) + 2) + "|"]
    for variant, cells in summary.items():
        row = [f"{cells[n]['mean']:.1f} ± {cells[n]['std']:.1f}" for n in [*sets, "overall"]]
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\nHit@1 (%), mean ± std over seeds.\n"


def plot_reward_curves(out: Path, seed: int, variants: list[str]) -> Path | None:
    """Each EG-RL variant's reward components over steps (seed `seed`), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histories = {v: read_json(out / f"seed{seed}" / v / "log_history.json") for v in variants
                 if (out / f"seed{seed}" / v / "log_history.json").is_file()}
    if not histories:
        return None
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.6), squeeze=False)
    for ax, (v, history) in zip(axes[0], histories.items()):
        rows = [r for r in history if "reward" in r]
        keys = ["reward", *sorted({k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")})]
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), label="total" if key == "reward" else key.split("/")[1])
        ax.set_title(VARIANTS[v][0], fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("mean reward")
    fig.tight_layout()
    path = out / "reward_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":  # one seed of a parallel run (`workers`): python -m embedrl.eval.ablation CONFIG SEED
    import sys

    from embedrl.config import build_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    config_file, seed = sys.argv[1:3]
    run_ablation(build_config(AblationConfig, config_file, [f"seeds=[{seed}]"]), write_report=False)
