"""Perception warm-up of a from-scratch reasoner: `embedrl train reasoner-warmup --config FILE`.

A real reasoner (Qwen2-VL-2B, ...) starts T-CoT SFT from a VLM that already sees; the tiny
preset starts from random weights, and T-CoT SFT alone does not teach it to read its image
tokens (after the SFT recipe it writes the same objects for every picture). This stage is the
tiny preset's stand-in for VLM pretraining: SFT (TRL's SFTTrainer) on captions of freshly
sampled synthetic scenes -- every object's size, colour, shape and position, most salient
first. The scenes come from their own random stream (`scene_seed`), not from a benchmark's
splits. Real checkpoints skip this stage.

The rendered scenes are kept in `scene_dir` (default `output_dir/scenes`) with an index
written last, so a rerun (or `--resume`) reuses them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from trl import SFTConfig

from embedrl.config import build_config as _build_config
from embedrl.errors import EmbedrlError
from embedrl.io import ensure_dir, read_json, write_json

logger = logging.getLogger(__name__)

CAPTION_PROMPT = "Describe every object in the picture: size, colour, shape and position, most prominent first."


@dataclass
class ReasonerWarmupConfig(SFTConfig):
    """Everything `trl.SFTConfig` has, plus the fields below."""

    model: str = field(default="", metadata={"help": "Reasoner to warm up: a model directory (e.g. the tiny preset)."})
    scenes: int = field(default=20000, metadata={"help": "Distinct synthetic scenes to render and caption."})
    scene_seed: int = field(default=0, metadata={"help": "Seed of the scene stream (independent of `seed`)."})
    scene_dir: str | None = field(default=None, metadata={
        "help": "Where the rendered scenes are kept (default: output_dir/scenes); reused when it matches."})

    def __post_init__(self):
        from embedrl.train.reasoner_sft import set_bf16_default

        set_bf16_default(self)
        if self.scenes < 1:
            raise ValueError(f"scenes must be at least 1, not {self.scenes}")
        super().__post_init__()


def build_config(config: str | Path | None = None, overrides: list[str] | None = None) -> ReasonerWarmupConfig:
    cfg = _build_config(ReasonerWarmupConfig, config, overrides)
    if not cfg.model:
        raise EmbedrlError("set `model` (a reasoner directory, e.g. the tiny-reasoner preset) in the config or as "
                           "model=...")
    return cfg


def caption(scene) -> str:
    """Every object of a scene in canonical words, most salient first."""
    from embedrl.data.synth_scenes import salience_order
    from embedrl.data.synth_text import POSITION_WORDS

    return "; ".join(f"{scene.objects[i].describe()} {POSITION_WORDS[scene.objects[i].position][0]}"
                     for i in salience_order(scene))


def render_scenes(out: str | Path, n: int, seed: int) -> list[dict[str, str]]:
    """Render `n` scenes of stream `seed` into `out` (reused if its index matches); returns (image, caption) rows."""
    from tqdm.auto import tqdm

    from embedrl.data.synth_scenes import render, sample_scene, save_png

    out = ensure_dir(out)
    index = Path(out) / "index.json"
    if index.is_file():
        meta = read_json(index)
        if meta.get("n") == n and meta.get("seed") == seed:
            return meta["rows"]
    rng = random.Random(f"reasoner-warmup-{seed}")
    rows = []
    for i in tqdm(range(n), desc="rendering scenes", unit="scene", disable=None):
        scene = sample_scene(rng)
        path = Path(out) / f"scene_{i:06d}.png"
        save_png(render(scene), path)
        rows.append({"image": str(path), "caption": caption(scene)})
    write_json(index, {"n": n, "seed": seed, "rows": rows})  # last: marks the set complete
    return rows


def warmup_examples(rows: list[dict[str, str]]) -> list[dict]:
    """Prompt-completion examples (image + caption prompt -> caption) in the format SFT uses."""
    return [{"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_PROMPT}]}],
             "completion": [{"role": "assistant", "content": [{"type": "text", "text": r["caption"]}]}],
             "images": [r["image"]]} for r in rows]


def train_reasoner_warmup(config: ReasonerWarmupConfig, resume: bool = False) -> Path:
    """Render the scenes, run caption SFT and save the reasoner to `config.output_dir`."""
    from embedrl.train.reasoner_sft import run_sft

    rows = render_scenes(config.scene_dir or Path(config.output_dir) / "scenes", config.scenes, config.scene_seed)
    logger.info("perception warm-up on %d scene captions", len(rows))
    return run_sft(config, warmup_examples(rows), resume)
