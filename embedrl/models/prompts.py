"""The Reasoner's prompt sets, per modality and role, and the chat layout built from them.

One module, so generation (`Reasoner.generate`), SFT (`embedrl.train.reasoner_sft`) and
EG-RL rollouts all show the model exactly the same input for an item. Two sets:

`default` (the tiny presets' short prompts):
    user: [image | Frame 1: <img> Frame 2: <img> ...] instruction + text, then the task prompt
    assistant: <thinking>{evidence JSON}</thinking><rethink>...</rethink><answer>...</answer>

`embed-rl` (the paper's T-CoT prompts, `embedrl.models.paper_prompts`, as its RL dataset fills
them: ZoengHN/Embed-RL vlm2vec_dataset.py): one user turn, the media first (the image, or every
frame as an image), then the filled template; the question is "instruction text", a target's
text is "instruction text" (an image or video target without one: "Retrieve the corresponding
image."), a video is "{n} frames sampled at 2.0 FPS" for queries and "{n} video frames" for
targets. A text query whose instruction or text asks for a video gets the paper's
video-retrieval prompt.

Roles: a *query*'s T-CoT extracts what a matching candidate must show; a *target*'s T-CoT
extracts what the item offers to the queries it should answer. Modalities: text, image
(alone or with text), video (frames, numbered from 1 so key frames can be named), and
document page (an image whose instruction or text speaks of a document, page, slide or
chart; such pages are read for their text and layout, not objects).

A set's `version` changes whenever any of its prompt texts changes (it carries a digest of
them and the set's name), so T-CoT caches keyed by it never serve a T-CoT written for another
prompt. `PROMPT_VERSION` is the default set's.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from embedrl.core.errors import entry
from embedrl.core.items import Item
from embedrl.models import paper_prompts as paper

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


def _default_text(item: Item, role: str, template: str) -> str:
    text = "\n".join(p for p in (item.instruction, item.text) if p)
    return f"{text}\n\n{template}" if text else template


_VIDEO_WORDS = re.compile(r"\b(video|clip)s?\b", re.I)


def _paper_text(item: Item, role: str, template: str) -> str:
    joined = " ".join(p for p in (item.instruction, item.text) if p).strip()
    n = len(item.frames or [])
    if role == "query":
        if not item.frames and item.image is None and _VIDEO_WORDS.search(joined):
            template = paper.PROMPT_VIDEO_RETRIEVAL_WITHOUT_ANSWER
        return template.format(question=joined, video=f"{n} frames sampled at 2.0 FPS")
    if not joined and (item.image is not None or item.frames):
        joined = "Retrieve the corresponding image."
    return template.format(pos_text=joined, pos_image_description="image provided",
                           pos_video_output=f"{n} video frames")


@dataclass(frozen=True)
class PromptSet:
    """A reasoner's prompts: a template per (role, modality), how an item fills one, and whether
    frames are labelled "Frame i:" (the default set) or given bare (the paper's)."""

    name: str
    prompts: Mapping[tuple[str, str], str]
    fill: Callable[[Item, str, str], str]
    frame_labels: bool

    @property
    def version(self) -> str:
        if self.name == "default":
            return PROMPT_VERSION
        digest = hashlib.sha1(json.dumps(sorted((f"{r}/{m}", p) for (r, m), p in self.prompts.items())).encode())
        return f"{self.name}-v{PROMPT_REVISION}-{digest.hexdigest()[:8]}"


PROMPT_SETS: dict[str, PromptSet] = {
    "default": PromptSet("default", PROMPTS, _default_text, frame_labels=True),
    "embed-rl": PromptSet("embed-rl", {
        ("query", "text"): paper.PROMPT_TEXT_WITHOUT_ANSWER,
        ("query", "image"): paper.PROMPT_IMAGE_WITHOUT_ANSWER,
        ("query", "video"): paper.PROMPT_VIDEO_WITHOUT_ANSWER,
        ("query", "document"): paper.PROMPT_IMAGE_WITHOUT_ANSWER,
        ("target", "text"): paper.PROMPT_POS_TEXT,
        ("target", "image"): paper.PROMPT_POS_IMAGE,
        ("target", "video"): paper.PROMPT_POS_VIDEO_RETRIEVAL,
        ("target", "document"): paper.PROMPT_POS_IMAGE,
    }, _paper_text, frame_labels=False),
}
DEFAULT_PROMPT_SET = "default"


def get_prompt_set(name: str | PromptSet) -> PromptSet:
    return name if isinstance(name, PromptSet) else entry(PROMPT_SETS, name, "prompt set")


def prompt_for(role: str, modality: str, prompt_set: str | PromptSet = DEFAULT_PROMPT_SET) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    return get_prompt_set(prompt_set).prompts[role, modality]


def build_messages(item: Item, role: str, load: bool = True,
                   prompt_set: str | PromptSet = DEFAULT_PROMPT_SET) -> tuple[list[dict[str, Any]], list]:
    """The user turn for `item` in `role` (chat messages with image placeholders) and its images.

    Images come back in placeholder order (the item's image, or its frames): loaded as RGB
    PIL images, or with `load=False` as the item holds them (paths). Generation and SFT both
    build their input here, so they see the same prompt.
    """
    pset = get_prompt_set(prompt_set)
    template = prompt_for(role, modality_of(item), pset)
    content: list[dict[str, Any]] = []
    images: list = []
    if item.frames:
        for i, frame in enumerate(item.load_frames() if load else item.frames, start=1):
            if pset.frame_labels:
                content.append({"type": "text", "text": f"Frame {i}:"})
            content.append({"type": "image"})
            images.append(frame)
    elif item.image is not None:
        content.append({"type": "image"})
        images.append(item.load_image() if load else item.image)
    content.append({"type": "text", "text": pset.fill(item, role, template)})
    return [{"role": "user", "content": content}], images
