"""Multi-stage runs (the quickstart, the ablation): each stage is skipped once its output exists.

A stage's output is marked complete by a file that its own code writes last (an Embedder's
`embedrl.json`, a Reasoner's `embedrl_reasoner.json`, an eval JSON written atomically), so a
run killed anywhere resumes from the first unfinished stage. Timings are kept per stage. A run
records the settings it was started with (`settings.json` beside the timings) and resumes only
with the same ones: otherwise its finished stages would be reused for other settings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_json, write_json

logger = logging.getLogger(__name__)


class Pipeline:
    """Stages with resume; `timings_file` keeps each stage's time across reruns."""

    def __init__(self, name: str, rerun_hint: str, timings_file: Path | None = None,
                 settings: dict[str, Any] | None = None):
        if settings is not None and timings_file is not None:
            check_settings(timings_file.with_name("settings.json"), settings, name)
        self.name = name
        self.rerun_hint = rerun_hint
        self.timings_file = timings_file
        self.timings: dict[str, float] = (read_json(timings_file) if timings_file and timings_file.is_file()
                                          else {})
        self.skipped: list[str] = []

    def reload_timings(self) -> None:
        """Merge the timings file into ours: parallel seeds of one run each add their stages to it."""
        if self.timings_file and self.timings_file.is_file():
            self.timings = {**read_json(self.timings_file), **self.timings}

    def stage(self, name: str, done: Path, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` unless `done` exists; a failure names the stage and how to resume."""
        if done.exists():
            logger.info("[%s] %s: already done (%s)", self.name, name, done)
            self.skipped.append(name)
            return
        logger.info("[%s] %s ...", self.name, name)
        start = time.perf_counter()
        try:
            fn(*args)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            raise EmbedrlError(f"{self.name} stage '{name}' failed: {e}. Fix the cause and rerun "
                               f"`{self.rerun_hint}`; finished stages are kept and skipped.") from e
        if not done.exists():
            raise EmbedrlError(f"{self.name} stage '{name}' finished without writing {done}")
        self.timings[name] = round(time.perf_counter() - start, 2)
        if self.timings_file:
            self.reload_timings()  # keep what other processes of the same run wrote meanwhile
            write_json(self.timings_file, self.timings)
        logger.info("[%s] %s: done in %.1fs", self.name, name, self.timings[name])


def check_settings(path: Path, settings: dict[str, Any], name: str) -> None:
    """Record `settings` at `path` for a new run; refuse to resume a run recorded with other settings."""
    settings = json.loads(json.dumps(settings, default=str))  # as they read back from the file
    if not path.is_file():
        write_json(path, settings)
        return
    recorded = read_json(path)
    changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
    if changed:
        raise EmbedrlError(f"{path.parent} holds a {name} run made with other settings (differs in: "
                           f"{', '.join(changed)}); rerun it with those settings, or choose another output folder")
