"""`embedrl bench video-frames`: what fewer frames per video in embedder training cost and buy.

For each `train_frames` setting and seed, the embedder recipe is trained on the synthetic
benchmark and scored on Synth-VideoRet with every frame evaluation takes (the official 8), so
one table holds both figures the choice rests on:
  - the video share of step time: the trainer's wall time per dataset (`step_times.json`), and a
    video step's seconds over the other datasets' mean step (ratios within each run);
  - VideoRet Hit@1, mean ± std over the seeds (the seeds' spread is the noise to beat).
`video_only` trains on Synth-VideoRet alone (as many video steps as the whole recipe takes in a
fraction of its time): the quality side of the choice, cheaply; the time side needs the mix.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

from embedrl.core.io import read_json

logger = logging.getLogger(__name__)

VIDEO_SET = "Synth-VideoRet"


def run_video_bench(recipe: str, model: str, data: Path, out: Path, frames: list[int], seeds: list[int],
                    overrides: list[str], video_only: bool = False) -> list[dict[str, Any]]:
    """One row per frames setting: video share of step time and VideoRet Hit@1 over `seeds`."""
    from embedrl.eval.mmeb import quick_eval
    from embedrl.models.base import load_embedder
    from embedrl.train.embedder import STEP_TIMES, build_config, train_embedder

    rows = []
    for k in frames:
        runs = []
        for seed in seeds:
            run_dir = out / f"frames{k}_seed{seed}"
            if not (run_dir / "embedrl.json").is_file():  # finished runs are kept: a rerun resumes
                extra = [f"dataset_weights={{{VIDEO_SET}: 1}}"] if video_only else []
                config = build_config(recipe, [f"model={model}", f"train_data={data / 'train' / 'pairs.jsonl'}",
                                               f"data_root={data}", f"output_dir={run_dir}", f"seed={seed}",
                                               f"train_frames={k}", "save_strategy=no", *extra, *overrides])
                train_embedder(config, resume=True)
            times = read_json(run_dir / STEP_TIMES)
            hit = quick_eval(load_embedder(str(run_dir)), data, [VIDEO_SET])[VIDEO_SET]
            runs.append({"seed": seed, "hit@1": hit, **_video_cost(times)})
            logger.info("train_frames=%d seed %d: VideoRet Hit@1 %.1f, %s", k, seed, hit, runs[-1])
        hits = [r["hit@1"] for r in runs]
        rows.append({"train_frames": k, "runs": runs, "hit@1_mean": statistics.mean(hits),
                     "hit@1_std": statistics.stdev(hits) if len(hits) > 1 else 0.0,
                     **{key: _mean(runs, key) for key in ("video_share", "video_step_s", "other_step_s",
                                                          "video_over_other", "train_s")}})
    return rows


def _video_cost(times: dict[str, dict[str, float]]) -> dict[str, float | None]:
    video = times.get(VIDEO_SET)
    others = [v for k, v in times.items() if k != VIDEO_SET]
    total = sum(v["seconds"] for v in times.values())
    video_step = video["seconds"] / video["steps"] if video and video["steps"] else None
    other_steps = sum(v["steps"] for v in others)
    other_step = sum(v["seconds"] for v in others) / other_steps if other_steps else None
    return {"video_share": video["share"] if video else None, "video_step_s": video_step,
            "other_step_s": other_step, "train_s": total,
            "video_over_other": video_step / other_step if video_step and other_step else None}


def _mean(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.mean(values) if values else None


def format_video_rows(rows: list[dict[str, Any]]) -> str:
    def f(x, spec):
        return "-" if x is None else format(x, spec)

    lines = ["| train frames | video share of step time | video step / other step | s per video step | "
             "VideoRet Hit@1 (8 frames at eval) | seeds |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['train_frames'] or 'all'} | {f(r['video_share'], '.1%')} | "
                     f"{f(r['video_over_other'], '.2f')}x | {f(r['video_step_s'], '.2f')} | "
                     f"{r['hit@1_mean']:.1f} ± {r['hit@1_std']:.1f} | {len(r['runs'])} |")
    base = rows[0]
    for r in rows[1:]:
        if base["video_step_s"] and r["video_step_s"]:
            lines.append(f"\ntrain_frames={r['train_frames']}: a video step costs "
                         f"{r['video_step_s'] / base['video_step_s']:.2f}x one with {base['train_frames'] or 'all'} "
                         f"frames; Hit@1 {r['hit@1_mean'] - base['hit@1_mean']:+.1f} points "
                         f"(seeds' std {max(r['hit@1_std'], base['hit@1_std']):.1f})")
    return "\n".join(lines)
