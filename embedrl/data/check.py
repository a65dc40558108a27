"""What of a benchmark or training set is on disk: `embedrl data check mmeb-v2|mmeb-train|uvrb --root ROOT`.

Per dataset: *present* (every row readable, every file there), *partial* (readable, but frames
missing for N videos / images missing for N files / N rows malformed: those queries would count as
missed) or *missing* (the annotations, or all of the media, are absent), with the commands that
fetch and extract what is missing -- the official download's steps, one dataset at a time.
`embedrl eval mmeb` prints the same summary before it starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from embedrl.core.errors import EmbedrlError
from embedrl.data.evalset import MissingData
from embedrl.data.hf import HF_DIR, download_command
from embedrl.data.readers import missing_paths, read_task
from embedrl.data.registry import DatasetSpec

logger = logging.getLogger(__name__)

STATES = ("present", "partial", "missing")
UVRB_REPO = "Alibaba-NLP/UVRB"  # the GVE model card's dataset id; the release's file list is unverified


@dataclass
class Status:
    """One dataset's state, what is wrong, and the commands that would fix it."""

    name: str
    state: str
    detail: str = ""
    commands: list[str] = field(default_factory=list)


def _repo_of(spec: DatasetSpec) -> str | None:
    if spec.extra.get("repo"):
        return str(spec.extra["repo"])
    parts = Path(spec.path).parts
    return "/".join(parts[1:3]) if len(parts) >= 3 and parts[0] == HF_DIR else None


def annotation_commands(spec: DatasetSpec, root: Path) -> list[str]:
    repo = _repo_of(spec)
    if repo is not None:
        return [download_command(root, repo)]
    if spec.reader == "uvrb":
        return [f"hf download {UVRB_REPO} --repo-type dataset --local-dir {root}  # then extract "
                f"{spec.path}'s archive so that {spec.path}/jsonl/ exists (see eval/README.md)"]
    return []


def media_commands(spec: DatasetSpec, root: Path) -> list[str]:
    """Download (unless the archive is already there) and extract the archive holding the entry's media."""
    archive, extract = spec.extra.get("media_archive"), spec.extra.get("media_extract")
    if not archive:
        return []
    out = []
    if not (root / str(archive)).exists():
        include = str(archive)[:-2] + "*" if str(archive).endswith("-00") else str(archive)
        out.append(f"hf download {spec.extra.get('media_repo', 'TIGER-Lab/MMEB-V2')} --repo-type dataset "
                   f'--include "{include}" --local-dir {root}')
    if extract:
        out.append(str(extract).replace("{root}", str(root)))
    return out


def check_dataset(spec: DatasetSpec, root: str | os.PathLike) -> Status:
    root = Path(root)
    missing = missing_paths(spec, root)
    if missing:
        return Status(spec.name, "missing", f"not found: {missing[0]}", annotation_commands(spec, root))
    try:
        task = read_task(spec, root)
    except MissingData as e:
        return Status(spec.name, "missing", f"media absent ({len(e.paths)} files or folders, e.g. {e.paths[0]})",
                      media_commands(spec, root))
    except EmbedrlError as e:
        return Status(spec.name, "missing", f"unreadable: {e}", annotation_commands(spec, root))
    parts = []
    if task.absent.get("videos"):
        parts.append(f"frames missing for {task.absent['videos']} videos")
    if task.absent.get("images"):
        parts.append(f"images missing for {task.absent['images']} files")
    malformed = sum(1 for m in task.missed if "malformed" in m)
    if malformed:
        parts.append(f"{malformed} malformed rows")
    if not parts and not task.missed:
        return Status(spec.name, "present", f"{len(task.queries)} queries, {len(task.candidates)} candidates")
    parts.append(f"{len(task.missed)} of {len(task.queries) + len(task.missed)} queries would count as missed")
    if task.missed:
        parts.append(f"first: {task.missed[0]}")
    return Status(spec.name, "partial", "; ".join(parts),
                  media_commands(spec, root) if task.absent else [])


def check_datasets(specs: Sequence[DatasetSpec], root: str | os.PathLike) -> list[Status]:
    return [check_dataset(spec, root) for spec in specs]


def format_summary(statuses: Sequence[Status], what: str = "") -> str:
    """A table of the states, then what to run for everything not present."""
    counts = {s: sum(1 for x in statuses if x.state == s) for s in STATES}
    width = max((len(s.name) for s in statuses), default=4)
    lines = [f"{what + ': ' if what else ''}{counts['present']} present, {counts['partial']} partial, "
             f"{counts['missing']} missing (of {len(statuses)})"]
    for s in statuses:
        lines.append(f"  {s.name:<{width}}  {s.state:<8} {s.detail}")
    todo = [s for s in statuses if s.state != "present" and s.commands]
    if todo:
        lines.append("to fetch what is missing:")
        seen: set[str] = set()
        for s in todo:
            for command in s.commands:
                if command not in seen:
                    seen.add(command)
                    lines.append(f"  {command}")
    return "\n".join(lines)
