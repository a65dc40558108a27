"""T-CoT annotation by a teacher: `embedrl data annotate` turns pairs without T-CoTs (MMEB-train has none)
into SFT-ready pairs with `qry_tcot`, `pos_tcot` and `neg_tcot`, as the paper's data pipeline starts.

The teacher is any reasoner (`generate(items, role) -> [TCoT]` with a `cache_key`): a local model
(`embedrl.models.reasoner.Reasoner`) or an OpenAI-compatible chat endpoint (`ChatEndpointTeacher`,
e.g. vLLM serving a large Qwen3-VL), both prompted with a prompt set of embedrl.models.prompts
(`embed-rl`: the paper's T-CoT prompts). Queries are annotated in the query role, positives and
hard negatives in the target role.

Only T-CoTs whose evidence fits their item are kept (`evidence_fits`): a valid structure with some
evidence; boxes only on an image and inside it (0-1000 scale, x1 < x2, y1 < y2); key frames only on a
video and within its frames (the parser refuses boxes off the 0-1000 scale); a text-only item's
keywords present in its text. A pair is kept when its
query's and its positive's T-CoTs fit; a negative whose T-CoT does not fit keeps `neg_tcot: null`.

Work goes in chunks of pairs through the T-CoT cache (embedrl.core.tcot_cache), so a run that is
killed and started again generates nothing it had generated; the pairs file and the report (what was
kept, and per role why the rest was not) are written atomically at the end.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import atomic_write, ensure_dir, write_json
from embedrl.core.items import Item, MediaRef, Pair, load_image
from embedrl.core.tcot import TCoT, check_evidence, parse_tcot
from embedrl.core.tcot_cache import TCoTCache
from embedrl.models.prompts import build_messages, get_prompt_set

logger = logging.getLogger(__name__)


def evidence_fits(tcot: TCoT | None, item: Item) -> str | None:
    """Why `tcot` does not fit `item` (None: it fits). The first word names the kind of problem."""
    if tcot is None:
        return "none: no T-CoT written"
    if not tcot.valid:  # parse_tcot also refuses boxes outside 0-1000 or inverted, and frames below 1
        return f"structure: {tcot.reason}"
    if not tcot.has_evidence:
        return "structure: no evidence"
    problem = check_evidence(tcot, item)  # boxes need an image, key frames a video with that many frames
    if problem:
        return f"evidence: {problem}"
    if item.image is None and not item.frames:
        text = f"{item.instruction} {item.text}".lower()
        absent = [k for k in tcot.keywords if k.lower() not in text]
        if absent:
            return f"keywords: {absent[:3]} not in the text"
    return None


# ---------------------------------------------------------------- an OpenAI-compatible teacher

def _data_url(image) -> str:
    buf = io.BytesIO()
    load_image(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class ChatEndpointTeacher:
    """A reasoner behind an OpenAI-compatible `/v1/chat/completions` (vLLM, TGI, ...): one request per
    item, `workers` in flight at once (the server batches them), the prompt set's user turn with images
    as data URLs, greedy decoding."""

    def __init__(self, base_url: str, model: str, prompt_set: str = "embed-rl", api_key: str | None = None,
                 max_tokens: int = 512, timeout: float = 300.0, workers: int = 8):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.prompt_set = get_prompt_set(prompt_set)
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.workers = max(1, workers)
        self.generated_items = 0

    @property
    def cache_key(self) -> tuple[str, str, str]:
        return (f"chat:{self.base_url}", self.model, self.prompt_set.version)

    def messages(self, item: Item, role: str) -> list[dict[str, Any]]:
        turns, images = build_messages(item, role, load=False, prompt_set=self.prompt_set)
        content, pending = [], iter(images)
        for part in turns[0]["content"]:
            if part["type"] == "image":
                content.append({"type": "image_url", "image_url": {"url": _data_url(next(pending))}})
            else:
                content.append(part)
        return [{"role": "user", "content": content}]

    def _complete(self, messages: list[dict[str, Any]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                           "temperature": 0.0}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
            return str(reply["choices"][0]["message"]["content"] or "")
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as e:
            raise EmbedrlError(f"teacher endpoint {self.base_url} ({self.model}) failed: {e}") from e

    def generate(self, items: Sequence[Item], role: str = "query", **_: Any) -> list[TCoT]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:
            texts = list(pool.map(lambda item: self._complete(self.messages(item, role)), items))
        self.generated_items += len(texts)
        out = []
        for text in texts:
            tcot = parse_tcot(text)
            tcot.raw = text
            out.append(tcot)
        return out


# ---------------------------------------------------------------- annotation

def _media_path(image, media_dir: Path) -> str:
    """A path SFT can open: the file itself, or an archive member copied out once (by content)."""
    if not isinstance(image, MediaRef):
        return str(image)
    data = image.read_bytes()
    suffix = os.path.splitext(str(image))[1] or ".png"
    path = media_dir / f"{hashlib.sha1(data).hexdigest()[:20]}{suffix}"
    if not path.is_file():
        with atomic_write(path, "wb") as f:
            f.write(data)
    return os.path.relpath(path, media_dir.parent)


def _side(item: Item, prefix: str, media_dir: Path) -> dict[str, Any]:
    text_key = "qry" if prefix == "qry" else f"{prefix}_text"
    row: dict[str, Any] = {text_key: "\n".join(p for p in (item.instruction, item.text) if p)}
    if item.image is not None:
        row[f"{prefix}_image_path"] = _media_path(item.image, media_dir)
    if item.frames:
        row[f"{prefix}_frames"] = [_media_path(f, media_dir) for f in item.frames]
    return row


def pair_row(pair: Pair, qry: TCoT, pos: TCoT, negs: Sequence[TCoT | None], media_dir: Path) -> dict[str, Any]:
    """The SFT-ready row (read by `embedrl.data.pairs.read_pairs`)."""
    row: dict[str, Any] = {"dataset": pair.dataset, **_side(pair.query, "qry", media_dir),
                           **_side(pair.pos, "pos", media_dir)}
    if pair.negs:
        sides = [_side(n, "neg", media_dir) for n in pair.negs]
        row["neg_text"] = [s.get("neg_text", "") for s in sides]
        if any("neg_image_path" in s for s in sides):
            row["neg_image_path"] = [s.get("neg_image_path", "") for s in sides]
        if any("neg_frames" in s for s in sides):
            row["neg_frames"] = [s.get("neg_frames", []) for s in sides]
        row["neg_tcot"] = [None if t is None else t.raw for t in negs]
    row["qry_tcot"], row["pos_tcot"] = qry.raw, pos.raw
    return row


def annotate_pairs(pairs: Sequence[Pair], teacher: Any, out: str | os.PathLike, cache: TCoTCache,
                   batch_size: int = 64, report_path: str | os.PathLike | None = None,
                   crash_after: int | None = None) -> dict[str, Any]:
    """Annotate `pairs` with `teacher` into the pairs JSONL `out`; returns (and writes) the report.

    `crash_after=n` raises after n chunks were annotated (tests prove a rerun generates nothing again).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    media_dir = ensure_dir(out.parent / f"{out.stem}_media")
    rows: list[dict[str, Any]] = []
    reasons: dict[str, Counter] = {"query": Counter(), "positive": Counter(), "negative": Counter()}
    examples: list[str] = []
    negatives = kept_negatives = 0
    chunks = [pairs[s:s + batch_size] for s in range(0, len(pairs), batch_size)]
    for n, chunk in enumerate(tqdm(chunks, desc="annotate", unit="chunk", disable=len(chunks) < 2)):
        queries = cache.get_or_generate([p.query for p in chunk], "query", teacher, use_tcot_cache=False)
        targets = cache.get_or_generate([i for p in chunk for i in (p.pos, *p.negs)], "target", teacher,
                                        use_tcot_cache=False)
        at = 0
        for pair, qry in zip(chunk, queries):
            pos, negs = targets[at], targets[at + 1:at + 1 + len(pair.negs)]
            at += 1 + len(pair.negs)
            problems = {"query": evidence_fits(qry, pair.query), "positive": evidence_fits(pos, pair.pos)}
            fitting = []
            for neg_item, neg in zip(pair.negs, negs):
                why = evidence_fits(neg, neg_item)
                negatives += 1
                kept_negatives += why is None
                if why:
                    reasons["negative"][why.split(":")[0]] += 1
                fitting.append(None if why else neg)
            for role, why in problems.items():
                if why:
                    reasons[role][why.split(":")[0]] += 1
                    if len(examples) < 20:
                        examples.append(f"{pair.dataset} {role}: {why}")
            if not any(problems.values()):
                rows.append(pair_row(pair, qry, pos, fitting, media_dir))
        if crash_after is not None and n + 1 >= crash_after:
            raise RuntimeError(f"crash_after={crash_after}: stopping after chunk {n + 1}")
    with atomic_write(out) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    report = {"pairs": len(pairs), "kept": len(rows), "dropped": len(pairs) - len(rows),
              "negatives": negatives, "negatives_with_tcot": kept_negatives,
              "not_fitting": {role: dict(c.most_common()) for role, c in reasons.items()},
              "examples": examples, "out": str(out),
              "teacher": list(teacher.cache_key), "generated": getattr(teacher, "generated_items", None)}
    write_json(report_path or out.with_suffix(".report.json"), report)
    return report
