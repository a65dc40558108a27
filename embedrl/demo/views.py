"""What the demo draws: thumbnails, text cards, boxes on images, key-frame strips, T-CoT cards.

Pure functions from items / T-CoTs to PIL images and HTML strings, so they are tested
without a browser. All text that reaches HTML (item texts, reasoner output, user queries)
is escaped here: a reasoner can write anything, and a demo gets shared.
"""

from __future__ import annotations

import functools
import html
import textwrap
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from embedrl.core.tcot import TCoT, box_to_pixels

THUMB_SIDE = 320       # gallery cells
CARD_SIDE = 240        # text items as cards: drawn small so their letters stay legible when shown small
DETAIL_SIDE = 560      # the selected result / the query image with its boxes
FRAME_SIDE = 160       # key-frame strips
BOX_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")
KEY_FRAME_COLOUR = "#f58231"


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def fit(image: Image.Image, side: int) -> Image.Image:
    """A copy no larger than side x side (aspect kept), RGB; small images are scaled up to side/2."""
    img = image.convert("RGB")
    scale = side / max(img.width, img.height)
    if scale < 1 or max(img.width, img.height) < side // 2:
        scale = min(scale, 4.0)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
    return img


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], side: int = DETAIL_SIDE) -> Image.Image:
    """The image (fitted to `side`) with each 0-1000 box outlined and numbered."""
    img = fit(image, side).copy()
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 160))
    font = _font(max(12, round(max(img.size) / 28)))
    for i, box in enumerate(boxes):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        x1, y1, x2, y2 = box_to_pixels(list(box), img.width, img.height)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        label = str(i + 1)
        tx, ty = x1 + width, max(0, y1 - font.size - 6) if y1 > font.size + 6 else y1 + width
        left, top, right, bottom = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=colour)
        draw.text((tx, ty), label, fill="white", font=font)
    return img


def text_card(text: str, side: int = THUMB_SIDE, title: str = "text") -> Image.Image:
    """A square card showing (the start of) a text item, for the results gallery."""
    img = Image.new("RGB", (side, side), "#f7f7fb")
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, side - 1, side - 1), outline="#d5d7e0", width=2)
    title_font, body_font = _font(max(11, side // 20)), _font(max(12, side // 12))
    left, top, right, bottom = draw.textbbox((18, 14), title.upper(), font=title_font)
    draw.rounded_rectangle((left - 8, top - 4, right + 8, bottom + 4), radius=8, fill="#4f46e5")
    draw.text((18, 14), title.upper(), fill="white", font=title_font)
    chars = max(10, int((side - 24) / (body_font.size * 0.52)))
    lines = textwrap.wrap(" ".join(text.split()), chars) or ["(empty)"]
    line_h = body_font.size + 6
    max_lines = max(1, (side - 50) // line_h)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, chars - 1)].rstrip() + "…"
    y = 24 + title_font.size + 12
    for line in lines:
        draw.text((12, y), line, fill="#1f2330", font=body_font)
        y += line_h
    return img


def badge(image: Image.Image, label: str) -> Image.Image:
    """The image with a small dark label in its top-left corner (e.g. "▶ 8 frames")."""
    img = image.copy()
    draw = ImageDraw.Draw(img)
    font = _font(max(11, img.width // 22))
    left, top, right, bottom = draw.textbbox((10, 8), label, font=font)
    draw.rounded_rectangle((left - 6, top - 4, right + 6, bottom + 4), radius=6, fill=(20, 20, 30))
    draw.text((10, 8), label, fill="white", font=font)
    return img


def frame_strip(frames: Sequence[Image.Image], key_frames: Sequence[int],
                side: int = FRAME_SIDE) -> list[tuple[Image.Image, str]]:
    """(thumbnail, caption) per frame; the T-CoT's key frames (1-based) are framed and labelled."""
    keys = set(key_frames)
    out = []
    for i, frame in enumerate(frames, start=1):
        thumb = fit(frame, side)
        if i in keys:
            thumb = ImageOps.expand(thumb, border=max(3, side // 32), fill=KEY_FRAME_COLOUR)
        out.append((thumb, f"frame {i}" + (" · key" if i in keys else "")))
    return out


# ---------------------------------------------------------------- HTML

def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def chips(words: Sequence[str], kind: str = "kw") -> str:
    return "".join(f'<span class="erl-chip erl-{kind}">{esc(w)}</span>' for w in words)


def tcot_html(tcot: TCoT | None, raw: str | None = None, title: str = "T-CoT",
              missing: str = "No T-CoT.") -> str:
    """A card with the T-CoT's evidence (keyword chips, boxes, key frames), re-think and answer."""
    if tcot is None:
        return f'<div class="erl-card erl-muted"><div class="erl-card-title">{esc(title)}</div>{esc(missing)}</div>'
    rows = []
    if tcot.keywords:
        rows.append(("keywords", chips(tcot.keywords)))
    if tcot.boxes:
        boxes = "".join(
            f'<span class="erl-chip erl-box" style="border-color:{BOX_COLOURS[i % len(BOX_COLOURS)]}">'
            f'{i + 1}: [{", ".join(f"{v:g}" for v in box)}]</span>' for i, box in enumerate(tcot.boxes))
        rows.append(("boxes", boxes))
    if tcot.key_frames:
        rows.append(("key frames", chips([str(f) for f in tcot.key_frames], "frame")))
    if tcot.rethink:
        rows.append(("re-think", f'<span class="erl-text">{esc(tcot.rethink)}</span>'))
    rows.append(("answer", f'<span class="erl-answer">{esc(tcot.answer) or "—"}</span>'))
    body = "".join(f'<div class="erl-row"><span class="erl-key">{esc(k)}</span><span>{v}</span></div>'
                   for k, v in rows)
    status = ('<span class="erl-ok">well-formed</span>' if tcot.valid
              else f'<span class="erl-bad" title="{esc(tcot.reason)}">malformed: {esc(tcot.reason)}</span>')
    raw_block = ""
    if raw:
        raw_block = (f'<details class="erl-raw"><summary>as the reasoner wrote it</summary>'
                     f"<pre>{esc(raw)}</pre></details>")
    return (f'<div class="erl-card"><div class="erl-card-title">{esc(title)} {status}</div>'
            f"{body}{raw_block}</div>")


def latency_html(timings: dict[str, float], note: str = "", seq: int | None = None) -> str:
    """Stage latencies in milliseconds, one small line (`seq` numbers the search, for UI tests)."""
    parts = [f"{esc(stage)} <b>{ms:.0f} ms</b>" for stage, ms in timings.items()]
    extra = f" · {esc(note)}" if note else ""
    attr = f' data-seq="{int(seq)}"' if seq is not None else ""
    if not parts and not note:
        return f'<div class="erl-latency"{attr}></div>'
    return f'<div class="erl-latency"{attr}>latency: {" · ".join(parts)}{extra}</div>'


def movement_label(before: int | None, after: int) -> str:
    """How a hit's rank moved from the plain query (`before`, 0-based or None) to the T-CoT query."""
    if before is None:
        return "new"
    delta = before - after
    if delta > 0:
        return f"▲{delta}"
    if delta < 0:
        return f"▼{-delta}"
    return "="


def rank_movements(plain_ids: Sequence[str], tcot_ids: Sequence[str]) -> list[str]:
    """For each id of the T-CoT ranking, its movement against the plain ranking (▲n / ▼n / = / new)."""
    where = {}
    for i, item_id in enumerate(plain_ids):
        where.setdefault(item_id, i)
    return [movement_label(where.get(item_id), rank) for rank, item_id in enumerate(tcot_ids)]


def compare_table_html(plain: Sequence[dict], tcot: Sequence[dict], moves: Sequence[str]) -> str:
    """Side-by-side ranks: plain query | with T-CoT (movement highlighted)."""
    head = ('<table class="erl-compare"><thead><tr><th>#</th><th>without T-CoT</th><th>score</th>'
            '<th>with T-CoT</th><th>score</th><th>move</th></tr></thead><tbody>')
    rows = []
    for i in range(max(len(plain), len(tcot))):
        a = plain[i] if i < len(plain) else None
        b = tcot[i] if i < len(tcot) else None
        move = moves[i] if b is not None else ""
        cls = "up" if move.startswith("▲") else "down" if move.startswith("▼") else "new" if move == "new" else "same"
        cells = []
        for hit in (a, b):
            cells += [esc(hit["label"]) if hit else "", f"{hit['score']:.3f}" if hit else ""]
        cells.append(f'<span class="erl-move erl-{cls}">{esc(move)}</span>')
        rows.append(f"<tr><td>{i + 1}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return head + "".join(rows) + "</tbody></table>"


CSS = """
.erl-header h1 { margin-bottom: 0.1em; }
.erl-sub { color: var(--body-text-color-subdued); font-size: 0.92em; }
.erl-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px 12px;
            background: var(--background-fill-secondary); font-size: 0.93em; }
.erl-card-title { font-weight: 600; margin-bottom: 6px; display: flex; gap: 8px; align-items: center;
                  flex-wrap: wrap; }
.erl-muted { color: var(--body-text-color-subdued); }
.erl-row { display: flex; gap: 8px; margin: 4px 0; align-items: baseline; }
.erl-key { min-width: 78px; color: var(--body-text-color-subdued); font-size: 0.85em; text-transform: uppercase;
           letter-spacing: 0.03em; }
.erl-chip { display: inline-block; padding: 1px 9px; margin: 2px 4px 2px 0; border-radius: 999px;
            font-size: 0.9em; line-height: 1.6; }
.erl-kw { background: #e0e7ff; color: #3730a3; }
.erl-frame { background: #ffedd5; color: #9a3412; }
.erl-box { border: 2px solid; background: transparent; font-family: var(--font-mono); font-size: 0.8em; }
.erl-answer { font-weight: 600; }
.erl-ok { font-size: 0.75em; font-weight: 500; color: #166534; background: #dcfce7; padding: 1px 8px;
          border-radius: 999px; }
.erl-bad { font-size: 0.75em; font-weight: 500; color: #991b1b; background: #fee2e2; padding: 1px 8px;
           border-radius: 999px; max-width: 100%; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.erl-raw pre { white-space: pre-wrap; word-break: break-word; font-size: 0.8em; max-height: 10em; overflow: auto; }
.erl-latency { font-size: 0.8em; color: var(--body-text-color-subdued); margin-top: 2px; }
.erl-compare { width: 100%; font-size: 0.88em; }
.erl-compare td, .erl-compare th { padding: 3px 6px; }
.erl-move { font-weight: 700; padding: 0 6px; border-radius: 6px; }
.erl-up { color: #166534; background: #dcfce7; }
.erl-down { color: #991b1b; background: #fee2e2; }
.erl-new { color: #1e40af; background: #dbeafe; }
.erl-same { color: var(--body-text-color-subdued); }
"""
