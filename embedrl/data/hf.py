"""Hugging Face dataset repositories as downloaded, read with `datasets`.

The official MMEB-V2 harness loads its annotations by Hub id (`load_dataset(repo, subset, split=...)`);
here the same repositories are read from a local download, one folder per repository:

    ROOT/hf/<owner>/<name>/      e.g. ROOT/hf/ziyjiang/MMEB_Test_Instruct, ROOT/hf/VLM2Vec/MSR-VTT

made by `hf download <owner>/<name> --repo-type dataset --local-dir ROOT/hf/<owner>/<name>` (or a
`git clone` of the dataset repository). `load_split` opens a subset / split: the files its README.md's
`configs` declare, else the Hub's file naming (`<subset>/<split>-*.parquet`, `data/<split>-*`; json /
jsonl / arrow / csv alike), read with `load_dataset`; `save_to_disk` folders with `load_from_disk`. Nothing is downloaded: a missing folder is `MissingData`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.data.evalset import MissingData

logger = logging.getLogger(__name__)

HF_DIR = "hf"
_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow", ".csv": "csv"}


def repo_folder(root: str | Path, repo: str) -> Path:
    """Where the download of Hub dataset `repo` sits under a data root."""
    return Path(root) / HF_DIR / repo


def download_command(root: str | Path, repo: str, include: str | None = None) -> str:
    inc = f' --include "{include}"' if include else ""
    return f"hf download {repo} --repo-type dataset --local-dir {repo_folder(root, repo)}{inc}"


def _declared(folder: Path, subset: str | None, split: str) -> list[Path] | None:
    """The files the README's `configs:` front matter gives a subset / split (None: not declared)."""
    import yaml

    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return None
    for config in meta.get("configs") or []:
        if config.get("config_name", "default") != (subset or "default"):
            continue
        files = config.get("data_files") or []
        if isinstance(files, (str, dict)):
            files = [files]
        for entry in files:
            if isinstance(entry, str):
                entry = {"split": "train", "path": entry}
            if entry.get("split") == split:
                paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
                return sorted(p for pattern in paths for p in folder.glob(pattern) if p.suffix in _BUILDERS)
    return None


def _files_for(folder: Path, subset: str | None, split: str) -> list[Path]:
    """A subset / split's data files: as the README declares them, else by the Hub's file naming."""
    declared = _declared(folder, subset, split)
    if declared:
        return declared
    bases = [folder / subset] if subset else []
    bases += [folder / "data", folder]
    for base in bases:
        for pattern in (f"{split}-*", f"{split}.*", f"{split}/*"):
            files = sorted(p for p in base.glob(pattern) if p.suffix in _BUILDERS)
            if files:
                return files
    return []


def load_split(folder: str | Path, subset: str | None, split: str) -> Any:
    """`datasets.Dataset` of one subset / split of a downloaded repository folder.

    The files are resolved here (README configs, then the Hub's naming) and given to `load_dataset`
    with the format's builder: `datasets` then caches by the files themselves, so a re-downloaded
    file is read anew (its cache of a local folder keyed by the configs alone served stale rows).
    """
    import datasets

    folder = Path(folder)
    if not folder.is_dir():
        raise MissingData(str(folder), [str(folder)])
    if (folder / (subset or "") / "dataset_info.json").is_file() or (folder / "state.json").is_file():
        on_disk = datasets.load_from_disk(str(folder / (subset or "")))
        return on_disk[split] if isinstance(on_disk, datasets.DatasetDict) else on_disk
    files = _files_for(folder, subset, split)
    if not files:
        raise EmbedrlError(f"{folder}: no files for subset {subset!r}, split {split!r} (README configs, "
                           f"{subset or '.'}/{split}-*.parquet); is the download complete?")
    try:
        return datasets.load_dataset(_BUILDERS[files[0].suffix], data_files=[str(f) for f in files], split="train")
    except Exception as e:  # noqa: BLE001 - pyarrow / json errors come in many types: name the files
        raise EmbedrlError(f"cannot read {files[0]} ({folder.name}, subset {subset!r}, split {split!r}): {e}") from e


def has_split(folder: str | Path, subset: str | None, split: str) -> bool:
    """Whether the folder plausibly holds the subset / split (without reading it)."""
    folder = Path(folder)
    return folder.is_dir() and bool(_files_for(folder, subset, split))
