"""Resuming: find the last *complete* checkpoint of a Trainer run.

The Trainer writes a checkpoint folder file by file and `trainer_state.json` last, and its
`get_last_checkpoint` takes the highest-numbered folder even when a kill left it half
written. Here a checkpoint counts only once its trainer state exists; newer incomplete
folders are removed (the run redoes those steps), so they cannot be picked up later.
`ResumesFullWeights` makes the Trainer's resume load a VLM's weights at all (see there).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARKER = "trainer_state.json"


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    out = Path(output_dir)
    if not out.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
                   reverse=True)
    for _, path in found:
        if (path / COMPLETE_MARKER).is_file():
            return str(path)
        logger.warning("removing incomplete checkpoint %s (interrupted while it was written)", path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def resume_checkpoint(output_dir: str | Path, resume: bool) -> str | None:
    """The checkpoint to pass to `Trainer.train(resume_from_checkpoint=...)`, logging the choice."""
    if not resume:
        return None
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    else:
        logger.info("no complete checkpoint in %s; starting from scratch", output_dir)
    return checkpoint


class ResumesFullWeights:
    """Trainer mixin: resume a full-weight checkpoint through `from_pretrained`, which renames its keys.

    VLMs such as Qwen2-VL save their weights under the original checkpoint names (`model.layers.*`,
    `visual.*`) and rename them when `from_pretrained` loads them. The Trainer's own resume loads
    the file with `load_state_dict(strict=False)` and no renaming, so no key matches and nothing
    is loaded: the run takes the checkpoint's step, optimiser and schedule but goes on from its
    *starting* weights, with only a log line to say so (transformers issue #43701; a T-CoT SFT
    resumed at step 1200 went from loss 0.55 back to 7.1). The saved copy sits in CPU memory until
    it is copied in. PEFT adapters keep the Trainer's path.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from transformers import PreTrainedModel

        model = model if model is not None else self.model
        folder = Path(resume_from_checkpoint)
        full = any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))
        if not (full and isinstance(model, PreTrainedModel)):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        saved = type(model).from_pretrained(folder, dtype=model.dtype)
        model.load_state_dict(saved.state_dict(), strict=True)  # every weight, or a clear error
        logger.info("loaded the weights of %s", folder)
