"""Shared by the demo tests: a small index of the synthetic benchmark and a served demo."""

from __future__ import annotations

import json
import socket
from pathlib import Path


def small_corpus(synth_dir: Path, out: Path, n_image: int = 24, n_text: int = 24, n_video: int = 8) -> Path:
    """A JSONL of the first images, texts and videos of the synthetic corpus (absolute paths)."""
    want = {"image": n_image, "text": n_text, "video": n_video}
    rows = []
    for line in (synth_dir / "corpus.jsonl").read_text().splitlines():
        row = json.loads(line)
        kind = "video" if row.get("frames") else "image" if row.get("image") else "text"
        if want[kind] > 0:
            want[kind] -= 1
            if row.get("image"):
                row["image"] = str(synth_dir / row["image"])
            if row.get("frames"):
                row["frames"] = [str(synth_dir / f) for f in row["frames"]]
            rows.append(row)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def build_small_index(synth_dir: Path, clip_dir: Path, out: Path) -> Path:
    from embedrl.index.build import build_index
    from embedrl.models.base import load_embedder

    corpus = small_corpus(synth_dir, out.parent / "demo_corpus.jsonl")
    build_index(load_embedder(str(clip_dir)), corpus, out, distributed=False)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
