"""`embedrl bench data`: read throughput of each published-layout reader against PIL alone.

On a synthetic benchmark written in the published MMEB-V2 layout (plus an MMEB-train repository with its
images zipped and a BEIR visual-document repository with the pages inside, both made from the same
pictures), each reader reads its dataset and every image / frame of it is decoded to RGB; the baseline
decodes the same pictures, from plain files, with PIL alone. Ratio = reader images/s / PIL images/s
(1.0: reading rows, pools and archives costs nothing beyond decoding). Each dataset is read once before
timing, so `datasets`' one-time Arrow conversion of a download is not in the figures (it is reported).
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

from PIL import Image

from embedrl.core.items import Item, load_image
from embedrl.data.readers import read_task
from embedrl.data.registry import DatasetSpec, load_registry


def _media(items: list[Item]) -> list:
    out: dict[str, Any] = {}
    for item in items:
        for m in ([item.image] if item.image is not None else []) + list(item.frames or []):
            out.setdefault(str(m), m)
    return list(out.values())


def _pil(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            im.convert("RGB")
    return time.perf_counter() - start


def _row(name: str, rows: int, media: list, seconds: float, files: list[Path], first_s: float) -> dict[str, Any]:
    pil_s = _pil(files)
    return {"reader": name, "rows": rows, "images": len(media), "rows_per_s": rows / seconds,
            "images_per_s": len(media) / seconds, "pil_images_per_s": len(files) / pil_s,
            "ratio": (len(media) / seconds) / (len(files) / pil_s), "first_read_s": first_s}


def _time_task(spec: DatasetSpec, root: Path) -> tuple[int, list, float, float]:
    start = time.perf_counter()
    read_task(spec, root)  # the first read converts the parquet to datasets' Arrow cache
    first = time.perf_counter() - start
    start = time.perf_counter()
    task = read_task(spec, root)
    media = _media(task.queries + task.candidates)
    for m in media:
        load_image(m)
    return len(task.queries) + len(task.missed), media, time.perf_counter() - start, first


def _mmeb_train(root: Path, out: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedrl.data.mmeb_train import read_mmeb_train

    pictures = sorted((root / "images").glob("*.png"))
    (out / "Synth").mkdir(parents=True, exist_ok=True)
    rows = [{"qry": "<|image_1|> Represent the given image.", "qry_image_path": f"images/Synth/Train/{p.name}",
             "pos_text": p.stem, "pos_image_path": ""} for p in pictures]
    pq.write_table(pa.Table.from_pylist(rows), out / "Synth" / "original-00000-of-00001.parquet")
    (out / "images_zip").mkdir(exist_ok=True)
    with zipfile.ZipFile(out / "images_zip" / "Synth.zip", "w") as z:
        for p in pictures:
            z.write(p, f"Synth/Train/{p.name}")
    data = {"mmeb_train": str(out), "subsets": ["Synth"], "split": "original"}
    start = time.perf_counter()
    read_mmeb_train(data)
    first = time.perf_counter() - start
    start = time.perf_counter()
    pairs, _ = read_mmeb_train(data)
    media = _media([p.query for p in pairs])
    for m in media:
        load_image(m)
    return _row("MMEB-train (images in images_zip/*.zip)", len(pairs), media, time.perf_counter() - start,
                pictures, first)


def _visdoc(root: Path, out: Path) -> dict[str, Any]:
    import datasets

    pictures = sorted((root / "images").glob("*.png"))
    folder = out / "hf" / "vidore" / "synth_beir"
    configs = {
        "corpus": datasets.Dataset.from_dict({"corpus-id": list(range(len(pictures))), "image": [str(p) for p in pictures]},
                                             features=datasets.Features({"corpus-id": datasets.Value("int64"),
                                                                         "image": datasets.Image()})),
        "queries": datasets.Dataset.from_dict({"query-id": list(range(len(pictures))),
                                               "query": [p.stem for p in pictures]}),
        "qrels": datasets.Dataset.from_dict({"query-id": list(range(len(pictures))),
                                             "corpus-id": list(range(len(pictures))), "score": [1.0] * len(pictures)}),
    }
    for name, ds in configs.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(folder / name / "test-00000-of-00001.parquet"))
    spec = DatasetSpec("Synth-Doc", "visdoc", "ViDoRe-V1", "vidore", "global", "ndcg_linear@5", "hf/vidore/synth_beir",
                       extra={"split": "test"})
    rows, media, seconds, first = _time_task(spec, out)
    return _row("vidore (pages inside the corpus parquet)", rows, media, seconds, pictures, first)


def bench_readers(work: str | Path, size: str = "small") -> list[dict[str, Any]]:
    """Rows of the table: one per reader (published layouts) on data made under `work`."""
    from embedrl.lab.synth.benchmark import generate_benchmark

    work = Path(work)
    data = work / "synth"
    generate_benchmark(data, seed=0, size=size)
    rows = []
    for spec in load_registry(data / "registry.yaml"):
        n, media, seconds, first = _time_task(spec, data)
        rows.append(_row(f"{spec.reader} ({spec.name})", n, media, seconds, [Path(str(m)) for m in media], first))
    rows.append(_mmeb_train(data, work / "MMEB-train"))
    rows.append(_visdoc(data, work / "visdoc"))
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = "| reader | rows | images | rows/s | images/s | PIL alone images/s | ratio | first read (s) |"
    lines = [head, "|---" * 8 + "|"]
    for r in rows:
        lines.append(f"| {r['reader']} | {r['rows']} | {r['images']} | {r['rows_per_s']:.0f} | "
                     f"{r['images_per_s']:.0f} | {r['pil_images_per_s']:.0f} | {r['ratio']:.2f} | {r['first_read_s']:.2f} |")
    return "\n".join(lines)
