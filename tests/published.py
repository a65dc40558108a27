"""Writers of small fixtures in the published layouts (MMEB-V2 image / video / visdoc, MMEB-train),
made with `datasets` and PIL from the published schemas, as a download would leave them."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from embedrl.data.registry import DatasetSpec

COLORS = {"red": (200, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 200), "gray": (100, 100, 100),
          "yellow": (200, 200, 0)}


def png(path: Path, color, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(color))
    arr = np.array(color, dtype=np.uint8)[None, None] + rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def hub_repo(folder: Path, configs: dict[str, dict[str, list[dict]]], features: dict | None = None,
             readme: bool = True) -> Path:
    """A Hub dataset repository as downloaded: `<config>/<split>-00000-of-00001.parquet` (+ README configs)."""
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            path = folder / config / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            feats = (features or {}).get(config)
            columns = {k: [r.get(k) for r in rows] for k in rows[0]}
            datasets.Dataset.from_dict(columns, features=feats).to_parquet(str(path))
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    if readme:
        (folder / "README.md").write_text("\n".join(lines + ["---", ""]))
    return folder


def image_rows(subset_rows: dict[str, list[dict]], root: Path) -> Path:
    """ziyjiang/MMEB_Test_Instruct with the given subsets (split test)."""
    return hub_repo(root / "hf" / "ziyjiang" / "MMEB_Test_Instruct", {k: {"test": v} for k, v in subset_rows.items()})


def image_spec(name: str, reader: str, scope: str = "local") -> DatasetSpec:
    return DatasetSpec(name, "image", "I-RET", reader, scope, "hit@1", "hf/ziyjiang/MMEB_Test_Instruct",
                       extra={"subset": name, "split": "test"})


def frames(folder: Path, color, n: int) -> list[Path]:
    return [png(folder / f"frame_{i:04d}.jpg", tuple(min(255, c + 3 * i) for c in color)) for i in range(1, n + 1)]


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    """Zip `folder`'s files under `prefix` (no directory entries, as many zip tools write them)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f"{prefix}{f.relative_to(folder).as_posix()}")
    return archive


def page_features() -> dict:
    return {"corpus": datasets.Features({"corpus-id": datasets.Value("int64"), "image": datasets.Image()})}


def json_reply(handler, obj) -> None:
    """Answer an http.server request with `obj` as JSON."""
    body = json.dumps(obj).encode()
    handler.send_response(200)
    for key, value in (("Content-Type", "application/json"), ("Content-Length", str(len(body)))):
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)
