"""T-CoT (Traceability Chain-of-Thought): parse, render, check and materialise evidence.

What a Reasoner writes and what SFT data holds:

    <thinking>{"text_keywords": [...], "bbox_2d": [x1,y1,x2,y2] or [[...], ...], "key_frames": [1,4]}</thinking>
    <rethink>one or two sentences</rethink><answer>short canonical answer</answer>

Boxes are on a 0-1000 relative scale, key frames are 1-based. The thinking may also hold prose
around its JSON object, as the paper's reasoner writes it ("The image shows ... {"bbox_2d":
[...]}"): the first flat JSON object in it is the evidence. `parse_tcot` never raises on
model output: it keeps whatever it could read and reports `valid=False` with the reason, so
a broken generation costs its format reward, not the training run; `TCoT.raw` keeps the text
as written.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from embedrl.core.items import ImageLike, Item, load_image

logger = logging.getLogger(__name__)

TAGS = ("thinking", "rethink", "answer")
SPECIAL_TOKENS = tuple(f"<{t}>" for t in TAGS) + tuple(f"</{t}>" for t in TAGS)
BOX_SCALE = 1000
MAX_KEYWORDS = 32
MAX_BOXES = 16
MAX_KEY_FRAMES = 64
MAX_TEXT_CHARS = 2000
MIN_CROP_SIDE = 10
MAX_CROP_ASPECT = 50.0

_BLOCK = {t: re.compile(rf"<{t}>(.*?)</{t}>", re.DOTALL) for t in TAGS}
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_FLAT_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_TAG_TEXT = re.compile(r"</?(?:thinking|rethink|answer)>")


@dataclass
class TCoT:
    """A parsed T-CoT. `valid` is False (with `reason`) when the output was broken anywhere."""

    keywords: list[str] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    key_frames: list[int] = field(default_factory=list)
    rethink: str = ""
    answer: str = ""
    valid: bool = True
    reason: str = ""
    raw: str = field(default="", compare=False, repr=False)  # the text it was parsed from, if any

    @property
    def has_evidence(self) -> bool:
        return bool(self.keywords or self.boxes or self.key_frames)

    def evidence_text(self) -> str:
        """The textual evidence (keywords, then the answer) as one line, for text encoders."""
        parts = []
        if self.keywords:
            parts.append(", ".join(self.keywords))
        if self.answer:
            parts.append(self.answer)
        return ". ".join(parts)

    def same_content(self, other: TCoT) -> bool:
        """Equal evidence and text, ignoring validity bookkeeping."""
        return (self.keywords, self.boxes, self.key_frames, self.rethink, self.answer) == (
            other.keywords, other.boxes, other.key_frames, other.rethink, other.answer)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_boxes(value: Any, problems: list[str]) -> list[list[float]]:
    if isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value):
        value = [value]  # one box written flat
    if not isinstance(value, list):
        problems.append("bbox_2d is not a list")
        return []
    boxes = []
    for box in value:
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            problems.append("bbox_2d entry is not 4 numbers")
            continue
        x1, y1, x2, y2 = box
        if not all(0 <= v <= BOX_SCALE for v in box):
            problems.append(f"box {box} outside 0-{BOX_SCALE}")
            continue
        if x1 >= x2 or y1 >= y2:
            problems.append(f"box {box} is inverted or empty")
            continue
        boxes.append(list(box))
    if len(boxes) > MAX_BOXES:
        problems.append(f"more than {MAX_BOXES} boxes")
        boxes = boxes[:MAX_BOXES]
    return boxes


def _read_key_frames(value: Any, problems: list[str]) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        problems.append("key_frames is not a list")
        return []
    frames: list[int] = []
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            problems.append(f"key frame {v!r} is not a 1-based index")
        elif v not in frames:
            frames.append(v)
    if len(frames) > MAX_KEY_FRAMES:
        problems.append(f"more than {MAX_KEY_FRAMES} key frames")
        frames = frames[:MAX_KEY_FRAMES]
    return frames


def _read_keywords(value: Any, problems: list[str]) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        problems.append("text_keywords is not a list")
        return []
    words = []
    for v in value:
        if not isinstance(v, str):
            problems.append(f"keyword {v!r} is not a string")
        elif _clean(v):
            words.append(_clean(v))
    if len(words) > MAX_KEYWORDS:
        problems.append(f"more than {MAX_KEYWORDS} keywords")
        words = words[:MAX_KEYWORDS]
    return words


def _clean(text: str) -> str:
    return _TAG_TEXT.sub("", text).strip()[:MAX_TEXT_CHARS]


def _read_evidence(thinking: str) -> Any:
    """The thinking's evidence: all of it as JSON, else its first flat JSON object (prose around
    it, as ZoengHN/Embed-RL's processor reads it); None when neither parses."""
    for candidate in (thinking, *(m.group(0) for m in [_FLAT_OBJECT.search(thinking)] if m)):
        try:
            return json.loads(candidate) if candidate else {}
        except (json.JSONDecodeError, RecursionError, ValueError):
            continue
    return None


def parse_tcot(text: Any) -> TCoT:
    """Read a T-CoT from model output; never raises. See the module docstring for the format."""
    out = TCoT()
    problems: list[str] = []
    if not isinstance(text, str) or not text.strip():
        return TCoT(valid=False, reason="empty output")
    blocks = {}
    for tag in TAGS:
        m = _BLOCK[tag].search(text)
        if m is None:
            truncated = f"<{tag}>" in text
            problems.append(f"<{tag}> block {'not closed' if truncated else 'missing'}")
        else:
            blocks[tag] = m.group(1)
    if "thinking" in blocks:
        evidence = _read_evidence(_FENCE.sub("", blocks["thinking"].strip()))
        if evidence is None:
            problems.append("thinking is not valid JSON")
        if evidence is not None and not isinstance(evidence, dict):
            problems.append("thinking JSON is not an object")
        elif isinstance(evidence, dict):
            if "text_keywords" in evidence:
                out.keywords = _read_keywords(evidence["text_keywords"], problems)
            if "bbox_2d" in evidence:
                out.boxes = _read_boxes(evidence["bbox_2d"], problems)
            if "key_frames" in evidence:
                out.key_frames = _read_key_frames(evidence["key_frames"], problems)
    out.rethink = _clean(blocks.get("rethink", ""))
    out.answer = _clean(blocks.get("answer", ""))
    out.raw = text
    if problems:
        out.valid, out.reason = False, "; ".join(dict.fromkeys(problems))
    return out


def render_tcot(tcot: TCoT) -> str:
    """The canonical text of a T-CoT; `parse_tcot(render_tcot(t))` gives `t` back."""
    evidence: dict[str, Any] = {}
    if tcot.keywords:
        evidence["text_keywords"] = [_clean(k) for k in tcot.keywords]
    if tcot.boxes:
        evidence["bbox_2d"] = list(tcot.boxes[0]) if len(tcot.boxes) == 1 else [list(b) for b in tcot.boxes]
    if tcot.key_frames:
        evidence["key_frames"] = list(tcot.key_frames)
    return (f"<thinking>{json.dumps(evidence, ensure_ascii=False)}</thinking>"
            f"<rethink>{_clean(tcot.rethink)}</rethink><answer>{_clean(tcot.answer)}</answer>")


def check_evidence(tcot: TCoT, item: Item) -> str | None:
    """Why the T-CoT's evidence does not fit this item (boxes without an image, frames out of range)."""
    if tcot.boxes and item.image is None:
        return "boxes given for an item without an image"
    n_frames = len(item.frames or [])
    if tcot.key_frames and not n_frames:
        return "key frames given for an item without frames"
    bad = [f for f in tcot.key_frames if f > n_frames]
    if bad:
        return f"key frame(s) {bad} beyond the item's {n_frames} frames"
    return None


@dataclass
class Evidence:
    """What a T-CoT points at in its item: image crops and key frames (as the item stores them)."""

    crops: list[Image.Image] = field(default_factory=list)
    frames: list[ImageLike] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def box_to_pixels(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """A 0-1000 box to pixel coordinates (truncated, as the paper's crop code does), clamped to the image."""
    x1, y1, x2, y2 = (int(v * s / BOX_SCALE) for v, s in zip(box, (width, height, width, height)))
    return (min(max(x1, 0), width), min(max(y1, 0), height), min(max(x2, 0), width), min(max(y2, 0), height))


def materialize(item: Item, tcot: TCoT | None, image: Image.Image | None = None) -> Evidence:
    """Turn a T-CoT's boxes into crops and key frames into frame subsets.

    Crops with a side under MIN_CROP_SIDE px or an aspect ratio over MAX_CROP_ASPECT are
    skipped (they carry no usable pixels); out-of-range frames are skipped. `image` may pass
    the item's already-loaded image to avoid reading it twice.
    """
    ev = Evidence()
    if tcot is None:
        return ev
    if tcot.boxes and item.image is not None:
        img = image if image is not None else load_image(item.image)
        for box in tcot.boxes:
            x1, y1, x2, y2 = box_to_pixels(box, img.width, img.height)
            w, h = x2 - x1, y2 - y1
            if min(w, h) < MIN_CROP_SIDE:
                ev.skipped.append(f"box {box}: side under {MIN_CROP_SIDE}px")
            elif max(w, h) / min(w, h) > MAX_CROP_ASPECT:
                ev.skipped.append(f"box {box}: aspect ratio over {MAX_CROP_ASPECT:g}")
            else:
                ev.crops.append(img.crop((x1, y1, x2, y2)))
    frames = item.frames or []
    for idx in tcot.key_frames:
        if 1 <= idx <= len(frames):
            ev.frames.append(frames[idx - 1])
        else:
            ev.skipped.append(f"key frame {idx}: beyond {len(frames)} frames")
    return ev


def usable_tcot(tcot: TCoT | None, item: Item) -> TCoT | None:
    """The T-CoT if an embedder should condition on it, else None (fall back to the raw item).

    Broken generations (invalid structure, evidence that does not fit the item) are not
    half-used: the embedder sees the raw item, and the format reward does the teaching.
    """
    if tcot is None or not tcot.valid or check_evidence(tcot, item) is not None:
        return None
    return tcot


def tcot_usage(items: Sequence[Item], tcots: Sequence[TCoT | None]) -> dict[str, Any]:
    """How many of the T-CoTs written for `items` an embedder can use, and why the others cannot
    (first fault of each, commonest first). Those items are embedded raw, so a reasoner that often
    breaks its format scores near raw input whatever its reasoning. None: no T-CoT was written."""
    problems: Counter[str] = Counter()
    written = 0
    for item, tcot in zip(items, tcots, strict=True):
        if tcot is None:
            continue
        written += 1
        problem = tcot.reason if not tcot.valid else check_evidence(tcot, item)
        if problem:
            problems[problem.split("; ")[0]] += 1
    return {"written": written, "usable": written - sum(problems.values()), "problems": dict(problems.most_common())}


def merge_usage(usages: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """`tcot_usage` counts summed (e.g. over an index's shards)."""
    problems: Counter[str] = Counter()
    written = usable = 0
    for u in usages:
        written, usable = written + u["written"], usable + u["usable"]
        problems.update(u["problems"])
    return {"written": written, "usable": usable, "problems": dict(problems.most_common())}


def warn_broken(usage: dict[str, Any], what: str, threshold: float = 0.8) -> None:
    """Log a warning when under `threshold` of the T-CoTs written were usable."""
    if usage["written"] and usage["usable"] < threshold * usage["written"]:
        top = next(iter(usage["problems"]))
        logger.warning("%s: %d of %d are broken and their items were embedded raw (most often: %s)", what,
                       usage["written"] - usage["usable"], usage["written"], top)


# -- T-CoT modes: which side(s) of a retrieval task get T-CoTs ---------------------------------

TCOT_MODES = ("none", "query", "target", "both")


def mode_covers(mode: str, side: str) -> bool:
    """Whether T-CoT mode `mode` gives the items on `side` ("query" or "target") T-CoTs."""
    return mode in ("both", side)


def unknown_modes(mode_by_set: dict[str, str] | None) -> dict[str, str]:
    """The entries of a per-set T-CoT mode mapping whose mode is not one of TCOT_MODES."""
    return {name: mode for name, mode in (mode_by_set or {}).items() if mode not in TCOT_MODES}
