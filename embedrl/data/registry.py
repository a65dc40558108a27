"""Dataset registry: which evaluation sets exist, how to read them and how to score them.

One YAML schema serves the 78 MMEB-V2 datasets, UVRB, the synthetic benchmark and one's own data:

    datasets:
      - name: MSCOCO_t2i          # official name, used in result files
        modality: image           # image | video | visdoc
        category: I-RET           # e.g. I-CLS I-QA I-RET I-VG V-CLS V-QA V-RET V-MRET ViDoRe-V1 ...
        reader: image_t2i         # a layout reader (embedrl/data/readers.py lists them)
        scope: local              # local: each query vs its own candidates; global: vs the pool
        metric: hit@1             # main metric (hit@1, ndcg_linear@5, recall@1, precision@1, ...)
        path: hf/ziyjiang/MMEB_Test_Instruct   # relative to the data root (a file or a folder)
        subset: MSCOCO_t2i        # reader-specific keys (subset, split, instructions, ...) go in `extra`
        # optional: media_root (a folder, or a list of alternatives), num_frames, notes

The published readers (MMEB-V2 image / video / visdoc) take the Hub repository folder as `path`
and `subset` / `split` as keys; embedrl's JSONL layouts (`image_rows`, `video_rows`, `beir`) take a
file or folder. See embedrl/data/readers.py for every layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from embedrl.core.config import yaml_error
from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_text

MODALITIES = ("image", "video", "visdoc")
SCOPES = ("local", "global")


@dataclass
class DatasetSpec:
    name: str
    modality: str
    category: str
    reader: str
    scope: str
    metric: str
    path: str
    media_root: str | list[str] | None = None
    num_frames: int | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise EmbedrlError(f"dataset {self.name}: modality {self.modality!r} not in {MODALITIES}")
        if self.scope not in SCOPES:
            raise EmbedrlError(f"dataset {self.name}: scope {self.scope!r} not in {SCOPES}")

    def to_dict(self) -> dict[str, Any]:
        """The YAML row: known fields, then the extra keys at top level (so load/dump round-trip)."""
        d = asdict(self)
        extra = d.pop("extra")
        return {**{k: v for k, v in d.items() if v not in (None, "", {})}, **extra}


def load_registry(path: str | Path) -> list[DatasetSpec]:
    path = Path(path)
    try:
        data = yaml.safe_load(read_text(path, "registry")) or {}
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from e
    rows = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise EmbedrlError(f"{path}: expected a non-empty 'datasets:' list")
    specs, known = [], set(DatasetSpec.__dataclass_fields__)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise EmbedrlError(f"{path}: datasets[{i}] is not a mapping")
        extra = {k: v for k, v in row.items() if k not in known}
        try:
            specs.append(DatasetSpec(**{k: v for k, v in row.items() if k in known}, extra=extra))
        except TypeError as e:
            raise EmbedrlError(f"{path}: datasets[{i}] ({row.get('name', '?')}): {e}") from e
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EmbedrlError(f"{path}: duplicate dataset names: {', '.join(dupes)}")
    return specs


def dump_registry(specs: list[DatasetSpec]) -> str:
    return yaml.safe_dump({"datasets": [s.to_dict() for s in specs]}, sort_keys=False, allow_unicode=True)
