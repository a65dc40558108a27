"""Resuming: find the last *complete* checkpoint of a Trainer run.

The Trainer writes a checkpoint folder file by file and `trainer_state.json` last, and its
`get_last_checkpoint` takes the highest-numbered folder even when a kill left it half
written. Here a checkpoint counts only once its trainer state exists; newer incomplete
folders are removed (the run redoes those steps), so they cannot be picked up later.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

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
