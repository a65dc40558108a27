"""Perception warm-up of a from-scratch reasoner: `embedrl train reasoner-warmup --config FILE`.

A real reasoner (Qwen2-VL-2B, ...) starts T-CoT SFT from a VLM that already sees; the tiny
preset starts from random weights, and T-CoT SFT alone does not teach it to read its image
tokens (after the SFT recipe it writes the same objects for every picture). This stage is the
tiny preset's stand-in for VLM pretraining: SFT (TRL's SFTTrainer) on captions of freshly
sampled synthetic scenes -- every object's size, colour, shape and position, most salient
first -- and, with `tasks: [caption, refer]`, on referring expressions: the picture and a phrase
naming one of its objects in the benchmark's synonyms ("the lemon hexagon at the centre") ->
that object in canonical words, the stand-in for the grounding data (RefCOCO-style) a real VLM
is pretrained on, so the reasoner learns to read its text as well as its image; with `edit`, the
picture and a requested change ("paint the lemon hexagon blue") -> the changed object as the change
leaves it, the stand-in for the image-editing instruction data a real VLM has seen, which composed
queries ask of the reasoner (their T-CoT says what the edit makes). The scenes come
from their own random stream (`scene_seed`), not from a benchmark's splits. Real checkpoints
skip this stage.

The rendered scenes are kept in `scene_dir` (default `output_dir/scenes`) with an index
written last, so a rerun (or `--resume`) reuses them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from trl import SFTConfig

from embedrl.core.config import build_config as _build_config
from embedrl.core.errors import EmbedrlError
from embedrl.core.io import ensure_dir, read_json, write_json

logger = logging.getLogger(__name__)

CAPTION_PROMPT = "Describe every object in the picture: size, colour, shape and position, most prominent first."
REFER_PROMPT = "Which object is {expr}? Describe it: size, colour, shape and position."
EDIT_PROMPT = "The request: {edit}. Describe the changed object after the change: size, colour, shape and position."
WARMUP_TASKS = ("caption", "refer", "edit")


@dataclass
class ReasonerWarmupConfig(SFTConfig):
    """Everything `trl.SFTConfig` has, plus the fields below."""

    model: str = field(default="", metadata={"help": "Reasoner to warm up: a model directory (e.g. the tiny preset)."})
    scenes: int = field(default=20000, metadata={"help": "Distinct synthetic scenes to render and caption."})
    scene_seed: int = field(default=0, metadata={"help": "Seed of the scene stream (independent of `seed`)."})
    scene_dir: str | None = field(default=None, metadata={
        "help": "Where the rendered scenes are kept (default: output_dir/scenes); reused when it matches."})
    tasks: list[str] = field(default_factory=lambda: ["caption"], metadata={
        "help": "Examples made of each scene: `caption` (every object), `refer` (the object a phrase names), "
                "`edit` (the object a requested change makes)."})

    def __post_init__(self):
        from embedrl.train.reasoner_sft import set_bf16_default

        set_bf16_default(self)
        if self.scenes < 1:
            raise ValueError(f"scenes must be at least 1, not {self.scenes}")
        unknown = [t for t in self.tasks if t not in WARMUP_TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty list of {', '.join(WARMUP_TASKS)}, not {self.tasks}")
        super().__post_init__()


def build_config(config: str | Path | None = None, overrides: list[str] | None = None) -> ReasonerWarmupConfig:
    cfg = _build_config(ReasonerWarmupConfig, config, overrides)
    if not cfg.model:
        raise EmbedrlError("set `model` (a reasoner directory, e.g. the tiny-reasoner preset) in the config or as "
                           "model=...")
    return cfg


def object_words(scene, i: int) -> str:
    """'large red circle on the left': one object in canonical words."""
    from embedrl.lab.synth.text import POSITION_WORDS

    return f"{scene.objects[i].describe()} {POSITION_WORDS[scene.objects[i].position][0]}"


def caption(scene) -> str:
    """Every object of a scene in canonical words, most salient first."""
    from embedrl.lab.synth.scenes import salience_order

    return "; ".join(object_words(scene, i) for i in salience_order(scene))


def sample_scenes(n: int, seed: int) -> list:
    """The scene stream `seed`: the same scenes every time, whether or not they are rendered."""
    from embedrl.lab.synth.scenes import sample_scene

    rng = random.Random(f"reasoner-warmup-{seed}")
    return [sample_scene(rng) for _ in range(n)]


def render_scenes(out: str | Path, n: int, seed: int) -> list[dict[str, str]]:
    """Render `n` scenes of stream `seed` into `out` (reused if its index matches); returns (image, caption) rows."""
    from tqdm.auto import tqdm

    from embedrl.lab.synth.scenes import render, save_png

    out = ensure_dir(out)
    index = Path(out) / "index.json"
    if index.is_file():
        meta = read_json(index)
        if meta.get("n") == n and meta.get("seed") == seed:
            return meta["rows"]
    rows = []
    for i, scene in enumerate(tqdm(sample_scenes(n, seed), desc="rendering scenes", unit="scene", disable=None)):
        path = Path(out) / f"scene_{i:06d}.png"
        save_png(render(scene), path)
        rows.append({"image": str(path), "caption": caption(scene)})
    write_json(index, {"n": n, "seed": seed, "rows": rows})  # last: marks the set complete
    return rows


def _task_rows(rows: list[dict[str, str]], seed: int, task: str, ask) -> list[dict[str, str]]:
    """One (image, prompt, answer) row a scene: `ask(scene, rng)` -> (prompt, answer), with the task's own
    random stream so adding a task leaves the others' examples as they were."""
    rng = random.Random(f"reasoner-warmup-{task}-{seed}")
    return [{"image": row["image"], **dict(zip(("prompt", "answer"), ask(scene, rng), strict=True))}
            for row, scene in zip(rows, sample_scenes(len(rows), seed), strict=True)]


def refer_rows(rows: list[dict[str, str]], seed: int) -> list[dict[str, str]]:
    """A phrase naming one object of the scene uniquely -> that object."""
    from embedrl.lab.synth.text import refer

    def ask(scene, rng):
        index = rng.randrange(len(scene.objects))
        expr, _ = refer(scene, index, rng)
        return REFER_PROMPT.format(expr=expr), object_words(scene, index)

    return _task_rows(rows, seed, "refer", ask)


def edit_rows(rows: list[dict[str, str]], seed: int) -> list[dict[str, str]]:
    """A change asked of one object -> that object after it."""
    from embedrl.lab.synth.scenes import variant
    from embedrl.lab.synth.tasks import STATIC_ATTRIBUTES
    from embedrl.lab.synth.text import edit_text

    def ask(scene, rng):
        edited, change = variant(scene, rng, STATIC_ATTRIBUTES)
        text, _ = edit_text(scene, change["object"], change["attribute"], change["neg"], rng)
        return EDIT_PROMPT.format(edit=text), object_words(edited, change["object"])

    return _task_rows(rows, seed, "edit", ask)


def warmup_messages(prompt: str) -> list[dict]:
    """The user turn the warm-up trains on (one picture, then the prompt); ask it the same way to measure it."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def warmup_examples(rows: list[dict[str, str]], tasks=("caption",), seed: int = 0) -> list[dict]:
    """Prompt-completion examples (image + prompt -> answer) in the format SFT uses, `tasks` per scene."""
    tagged = []
    if "caption" in tasks:
        tagged += [{"image": r["image"], "prompt": CAPTION_PROMPT, "answer": r["caption"]} for r in rows]
    if "refer" in tasks:
        tagged += refer_rows(rows, seed)
    if "edit" in tasks:
        tagged += edit_rows(rows, seed)
    return [{"prompt": warmup_messages(r["prompt"]),
             "completion": [{"role": "assistant", "content": [{"type": "text", "text": r["answer"]}]}],
             "images": [r["image"]]} for r in tagged]


def train_reasoner_warmup(config: ReasonerWarmupConfig, resume: bool = False) -> Path:
    """Render the scenes, run caption SFT and save the reasoner to `config.output_dir`."""
    from embedrl.train.reasoner_sft import run_sft

    rows = render_scenes(config.scene_dir or Path(config.output_dir) / "scenes", config.scenes, config.scene_seed)
    logger.info("perception warm-up on %d scenes (%s)", len(rows), ", ".join(config.tasks))
    return run_sft(config, warmup_examples(rows, config.tasks, config.scene_seed), resume)
