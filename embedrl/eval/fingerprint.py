"""What made a dataset's scores: the fingerprint each score file of `embedrl eval mmeb` records.

A run's part: the model (weights hash, id, backend, embedding format), the reasoner (id, weights hash,
prompt version, modalities; when the dataset's T-CoT mode uses one), that mode, and the reranker (its
model, settings and k) when there is one. The data's part: a
hash of the dataset's registry entry and of the files its reader reads. The runner resumes a dataset
only when both match; scores of another run in the same folder are refused (or removed on request),
so `results.json` never mixes runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_json
from embedrl.data.readers import needed_paths
from embedrl.data.registry import DatasetSpec

if TYPE_CHECKING:
    from embedrl.models.base import Embedder

logger = logging.getLogger(__name__)


def run_fingerprint(embedder: Embedder, reasoner: Any, tcot_mode: str) -> dict[str, Any]:
    """What made a dataset's scores, besides its data: the model, and the reasoner when `tcot_mode` uses one."""
    model = {"id": str(getattr(embedder, "name_or_path", "") or type(embedder).__name__),
             "hash": embedder.fingerprint(), "backend": getattr(embedder, "backend", ""),
             "format": embedder.embedrl_config().get("format")}
    used = None
    if reasoner is not None and tcot_mode != "none":
        key = getattr(reasoner, "cache_key", None)
        rid, rhash, version = key if isinstance(key, tuple) and len(key) == 3 else (type(reasoner).__name__, None, None)
        modalities = getattr(reasoner, "modalities", None)
        used = {"id": rid, "hash": rhash, "prompt_version": version,
                "modalities": list(modalities) if modalities is not None else None}
    return {"model": model, "reasoner": used, "tcot_mode": tcot_mode}


# Files up to this size are hashed by content; larger ones (parquet shards holding page images, a
# visdoc corpus is gigabytes) by size and modification time, so deciding a resume reads no gigabytes.
CONTENT_HASH_LIMIT = 16 << 20


def data_fingerprint(spec: DatasetSpec, root: Path) -> str:
    """A hash of a dataset's registry entry and of the files its reader reads (not its media): their
    content, or their size and modification time above `CONTENT_HASH_LIMIT` (a copy that does not keep
    times then recomputes, which costs time but never mixes data)."""
    h = hashlib.sha1(json.dumps(spec.to_dict(), sort_keys=True, default=str).encode())
    for path in needed_paths(spec, root):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(root) if f.is_relative_to(root) else f).encode())
            stat = f.stat()
            if stat.st_size > CONTENT_HASH_LIMIT:
                h.update(f"size {stat.st_size} mtime {stat.st_mtime_ns}".encode())
                continue
            with open(f, "rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def earlier_fingerprint(path: Path) -> dict[str, Any] | None:
    score = read_json(path)
    fingerprint = score.get("fingerprint") if isinstance(score, dict) else None
    return fingerprint if isinstance(fingerprint, dict) else None


def _differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Which parts of a run fingerprint differ (model ids alone do not: the same weights give the same scores)."""
    if old is None:
        return ["fingerprint (none recorded: written by an earlier embedrl, or not by it)"]
    diff = []
    old_model, new_model = old.get("model") or {}, new["model"]
    for key in ("hash", "backend", "format"):
        if old_model.get(key) != new_model.get(key):
            diff.append(f"model {key} ({old_model.get('id')}: {old_model.get(key)}, now {new_model.get(key)})")
    old_r, new_r = old.get("reasoner"), new["reasoner"]
    if (old_r is None) != (new_r is None) or (new_r is not None and {k: v for k, v in old_r.items() if k != "id"}
                                               != {k: v for k, v in new_r.items() if k != "id"}):
        diff.append(f"reasoner ({(old_r or {}).get('id')}, now {(new_r or {}).get('id')})")
    if old.get("tcot_mode") != new["tcot_mode"]:
        diff.append(f"T-CoT mode ({old.get('tcot_mode')}, now {new['tcot_mode']})")
    if old.get("rerank") != new.get("rerank"):
        diff.append(f"reranking ({old.get('rerank')}, now {new.get('rerank')})")
    return diff


def check_earlier_scores(out: Path, files: dict[str, tuple[Path, Path]], wanted: dict[str, dict[str, Any]],
                         overwrite: bool) -> None:
    """Refuse (or, with `overwrite`, remove) score files in `out` made by another model, reasoner or T-CoT mode,
    so `results.json` never mixes runs. `files`: each dataset's (score file, predictions file); `wanted`: each
    dataset's run fingerprint."""
    stale = {}
    for name, (score, _) in files.items():
        if score.is_file():
            diff = _differences(earlier_fingerprint(score), wanted[name])
            if diff:
                stale[name] = diff
    if not stale:
        return
    first, why = next(iter(stale.items()))
    more = f" (and {len(stale) - 1} more dataset(s))" if len(stale) > 1 else ""
    if not overwrite:
        raise EmbedrlError(f"{out} holds scores of another run: {first} differs in {'; '.join(why)}{more}. Choose "
                           "another --out, or pass --overwrite to recompute them")
    for name, why in stale.items():
        logger.warning("%s: scores of another run (%s), removed (--overwrite)", name, "; ".join(why))
        for path in files[name]:
            path.unlink(missing_ok=True)
