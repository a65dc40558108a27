"""The Reasoner's prompts, per modality and role, and the chat layout built from them.

One module, so generation (`Reasoner.generate`), SFT (`embedrl.train.reasoner_sft`) and
EG-RL rollouts all show the model exactly the same input for an item:

    user: [image | Frame 1: <img> Frame 2: <img> ...] instruction + text, then the task prompt
    assistant: <thinking>{evidence JSON}</thinking><rethink>...</rethink><answer>...</answer>

Roles: a *query*'s T-CoT extracts what a matching candidate must show; a *target*'s T-CoT
extracts what the item offers to the queries it should answer. Modalities: text, image
(alone or with text), video (frames, numbered from 1 so key frames can be named), and
document page (an image whose instruction or text speaks of a document, page, slide or
chart; such pages are read for their text and layout, not objects).

`PROMPT_VERSION` changes whenever any prompt text changes (it carries a digest of them),
so T-CoT caches keyed by it never serve a T-CoT written for another prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from embedrl.core.items import Item

ROLES = ("query", "target")
MODALITIES = ("text", "image", "video", "document")

_FORMAT = ("Reply exactly as <thinking>{evidence JSON}</thinking><rethink>one sentence</rethink>"
           "<answer>a short canonical answer</answer>.")

_EVIDENCE = {
    "text": 'Evidence: {"text_keywords": [the key words]}.',
    "image": 'Evidence: {"text_keywords": [...], "bbox_2d": [[x1,y1,x2,y2], ...]} with boxes on a 0-1000 scale.',
    "video": 'Evidence: {"text_keywords": [...], "key_frames": [frame numbers, from 1]}.',
    "document": 'Evidence: {"text_keywords": [words read on the page], "bbox_2d": [[x1,y1,x2,y2]]} on a 0-1000 scale.',
}

_TASK = {
    ("query", "text"): "This is a search query. Find what a matching item must contain.",
    ("query", "image"): "This is a search query with an image. Find what a matching item must show.",
    ("query", "video"): "This is a search query with a video. Find what a matching item must show.",
    ("query", "document"): "This is a search query about a document page. Find what the answer must contain.",
    ("target", "text"): "This is a candidate text. Find what it says that a query could ask for.",
    ("target", "image"): "This is a candidate image. Find the salient objects a query could ask for.",
    ("target", "video"): "This is a candidate video. Find the salient objects and actions a query could ask for.",
    ("target", "document"): "This is a candidate document page. Find the content a query could ask for.",
}

PROMPTS: dict[tuple[str, str], str] = {
    (role, modality): f"{_TASK[role, modality]} {_EVIDENCE[modality]} {_FORMAT}"
    for role in ROLES for modality in MODALITIES
}

PROMPT_REVISION = 1  # bump by hand for layout changes that the prompt texts do not show
PROMPT_VERSION = f"v{PROMPT_REVISION}-" + hashlib.sha1(
    json.dumps(sorted((f"{r}/{m}", p) for (r, m), p in PROMPTS.items())).encode()).hexdigest()[:8]

_DOCUMENT_WORDS = re.compile(r"\b(document|page|slide|pdf|chart|infographic|screenshot)s?\b", re.I)


def modality_of(item: Item) -> str:
    """'video', 'document', 'image' or 'text': which prompt the item gets."""
    if item.frames:
        return "video"
    if item.image is not None:
        return "document" if _DOCUMENT_WORDS.search(f"{item.instruction} {item.text}") else "image"
    return "text"


def prompt_for(role: str, modality: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    return PROMPTS[role, modality]


def build_messages(item: Item, role: str, load: bool = True) -> tuple[list[dict[str, Any]], list]:
    """The user turn for `item` in `role` (chat messages with image placeholders) and its images.

    Images come back in placeholder order (the item's image, or its frames): loaded as RGB
    PIL images, or with `load=False` as the item holds them (paths). Generation and SFT both
    build their input here, so they see the same prompt.
    """
    prompt = prompt_for(role, modality_of(item))
    content: list[dict[str, Any]] = []
    images: list = []
    if item.frames:
        for i, frame in enumerate(item.load_frames() if load else item.frames, start=1):
            content.append({"type": "text", "text": f"Frame {i}:"})
            content.append({"type": "image"})
            images.append(frame)
    elif item.image is not None:
        content.append({"type": "image"})
        images.append(item.load_image() if load else item.image)
    text = "\n".join(p for p in (item.instruction, item.text) if p)
    content.append({"type": "text", "text": f"{text}\n\n{prompt}" if text else prompt})
    return [{"role": "user", "content": content}], images
