"""Embedding formats: how a VLM embedder family turns an item (and its T-CoT) into model input.

A published embedder only gives its leaderboard numbers when it is fed exactly the input its
authors' code builds: the prompt layout, which token is pooled, the special token, the image
and frame resizing. Each family is one declarative `EmbeddingFormat` entry in `FORMATS`; the
VLM backend (`embedrl.models.vlm_embedder`) reads the entry and never branches on names.
`tests/test_formats.py` checks every entry against a reference written from the authors'
published code, on tiny random models of the family's class.

How an entry becomes input (see `build_parts`): the item's instruction and text are joined
("{instruction} {text}", or the instruction goes to the system turn), media are placed before
or after the text, video frames go in as separate images, as one video or as their middle
frame, the T-CoT's thinking / evidence crops or key frames / rest follow (formats that read
T-CoTs), then a fixed closing prompt. The parts are rendered with the model's own chat
template (`template=None`) or a literal string template, and the model's last hidden state
is pooled at the last `special_token` or at the last token, then L2-normalised.

Images go through qwen-vl-utils (`fetch_image` / `fetch_video`, the library the authors call)
where the authors pre-resize with it, then through the model's processor.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from embedrl.core.errors import entry
from embedrl.core.items import Item, load_image, sample_frames
from embedrl.core.tcot import TCoT, materialize, render_tcot

# the placeholder of each medium in a literal (non-chat-template) layout
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@dataclass(frozen=True)
class Resize:
    """A qwen-vl-utils pre-resize: sides rounded to `patch * 2` and the area brought into
    [min_pixels, max_pixels] (PIL bicubic), before the processor sees the image."""

    patch: int
    min_pixels: int | None = None  # None: qwen-vl-utils' own default
    max_pixels: int | None = None

    def element(self) -> dict[str, Any]:
        return {k: v for k, v in (("min_pixels", self.min_pixels), ("max_pixels", self.max_pixels)) if v is not None}


@dataclass(frozen=True)
class EmbeddingFormat:
    """One family's input layout and pooling. Every field is a fact from `source`."""

    name: str
    backbone: str                      # the model class the family's checkpoints use
    source: str                        # where the facts come from
    pooling: str                       # "last_special" (the last `special_token`) | "last_token"
    template: str | None = None        # None: the model's chat template; else "{system}" / "{user}" literal
    system: str | None = None          # a system turn; "{instruction}" stands for the item's instruction
    default_instruction: str = ""      # the instruction where an item has none (system formats)
    punctuate_instruction: bool = False  # append "." to an instruction not ending in punctuation
    # order of the user turn's parts per item kind ("text", "image", "video"):
    # "media", "text", "tcot", "closing"
    order: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    text_template: Mapping[str, str] = field(default_factory=dict)  # per item kind; "{joined}" | "{text}"
    strip_text: bool = False           # strip whitespace around the user text
    closing: str = ""                  # a fixed last text part
    empty_text: str | None = None      # the user text when an item has nothing at all
    assistant: str | None = None       # an assistant turn's text (chat formats)
    generation_prompt: bool = False    # end the chat with the assistant's opening
    image_placeholder: str = QWEN_IMAGE  # literal layouts only
    video_placeholder: str = ""
    special_token: str | None = None   # pooled token, added with `add_tokens` when missing
    frames_as: str = "images"          # "images" | "video" | "middle_frame"
    num_frames: int | None = None      # at most this many frames, np.linspace(0, n-1, k).astype(int)
    image_resize: Resize | None = None
    frame_resize: Resize | None = None  # frames as images
    video_patch: int | None = None     # frames as a video through qwen-vl-utils' fetch_video (None: raw frames)
    video_element: Mapping[str, Any] = field(default_factory=dict)  # fetch_video's element keys
    processor_size: tuple[int, int] | None = None  # the processor's (min, max) pixels, images and videos
    processor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    use_instruction: bool = True       # False: the item's instruction is left out (the default applies)
    colon_to_period: bool = False      # an instruction's trailing ":" becomes "."
    reads_tcot: bool = False
    # MMEB-V2 evaluation: overrides per (registry modality or "*", side) -> field values
    eval_rules: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)

    def for_eval(self, modality: str, side: str) -> EmbeddingFormat:
        """This format as its family's MMEB-V2 harness uses it for `side` of a `modality` dataset."""
        changes: dict[str, Any] = {}
        for key in (("*", "*"), ("*", side), (modality, "*"), (modality, side)):
            changes.update(self.eval_rules.get(key, {}))
        return dataclasses.replace(self, **changes) if changes else self

    def instruction(self, item: Item) -> str:
        inst = item.instruction.strip() if self.use_instruction else ""
        if inst and self.colon_to_period and inst.endswith(":"):
            inst = inst[:-1] + "."
        if inst and self.punctuate_instruction and not unicodedata.category(inst[-1]).startswith("P"):
            inst += "."
        return inst


SUMMARIZE = "Summarize the above content in one word:"

# Embed-RL (ZoengHN/Embed-RL @87b52f7): eval/mmeb_eval/vlm2vec/src/model/processor.py
# (Qwen3_VL_process_fn, process_cot_with_visual_content), model.py / train.py (pooling),
# train/contrastive_learning/dataset/qwen2_vision_process.py (resize constants).
EMBED_RL = EmbeddingFormat(
    name="embed-rl",
    backbone="Qwen3VLForConditionalGeneration (Qwen3-VL-2B / 4B)",
    source="ZoengHN/Embed-RL: eval/mmeb_eval/vlm2vec/src/model/processor.py, model.py; train/contrastive_learning",
    pooling="last_special",
    order={"image": ("media", "text", "tcot", "closing"), "video": ("text", "media", "tcot", "closing"),
           "text": ("text", "tcot", "closing")},
    text_template={"text": "{joined}", "image": "{joined}", "video": "{joined}"},
    strip_text=True,
    closing=SUMMARIZE,
    assistant="<emb>",
    special_token="<emb>",
    frames_as="images",
    num_frames=8,
    image_resize=Resize(16, 128 * 32 * 32, 768 * 32 * 32),
    frame_resize=Resize(16, 128 * 32 * 32, 300 * 32 * 32),
    reads_tcot=True,
    # VLM2Vec's image-task parsers (which Embed-RL's eval reuses) give text candidates as raw labels
    eval_rules={("image", "target"): {"text_template": {"text": "{text}", "image": "{joined}", "video": "{joined}"}}},
)

# VLM2Vec-V2.0 (TIGER-AI-Lab/VLM2Vec @6e1e1d4): src/model/processor.py (process_input_text,
# Qwen2_VL_process_fn), src/model/model.py (_pooling "eos"), src/arguments.py (resize bounds),
# src/data/eval_dataset/*.py (MMEB text layouts), experiments/public/eval/*.yaml (8 frames).
VLM2VEC = EmbeddingFormat(
    name="vlm2vec",
    backbone="Qwen2VLForConditionalGeneration (VLM2Vec-V2.0, Qwen2-VL-2B)",
    source="TIGER-AI-Lab/VLM2Vec: src/model/processor.py, src/model/model.py, src/data/eval_dataset",
    pooling="last_token",
    template="{user}",
    order={"image": ("media", "text"), "video": ("media", "text"), "text": ("text",)},
    text_template={"text": "{joined}", "image": "{joined}", "video": "{joined}"},
    image_placeholder="<|image_pad|> ",
    video_placeholder="<|video_pad|> ",
    frames_as="video",
    num_frames=8,
    processor_size=(28 * 28 * 4, 28 * 28 * 1280),
    # the image-task parsers: "<|image_pad|>\n{inst} {text}\n" queries, raw label candidates
    eval_rules={("image", "*"): {"image_placeholder": "<|image_pad|>\n",
                                 "text_template": {"text": "{joined}\n", "image": "{joined}\n", "video": "{joined}"}},
                ("image", "target"): {"text_template": {"text": "{text}", "image": "{joined}\n", "video": "{joined}"}}},
)

# GME-Qwen2-VL (Alibaba-NLP/gme-Qwen2-VL-2B/7B-Instruct gme_inference.py, as copied in
# TIGER-AI-Lab/VLM2Vec src/model/baseline_backbone/gme/ and used by mteb's gme_v_models.py).
GME = EmbeddingFormat(
    name="gme",
    backbone="Qwen2VLForConditionalGeneration (gme-Qwen2-VL-2B / 7B-Instruct)",
    source="gme_inference.py (Alibaba-NLP/gme-Qwen2-VL-*; copy in TIGER-AI-Lab/VLM2Vec), mteb gme_v_models.py",
    pooling="last_token",
    template="<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
             "<|im_start|>assistant\n<|endoftext|>",
    system="{instruction}",
    default_instruction="You are a helpful assistant.",
    order={"image": ("media", "text"), "video": ("media", "text"), "text": ("text",)},
    text_template={"text": "{text}", "image": "{text}", "video": "{text}"},
    frames_as="middle_frame",
    image_resize=Resize(14),  # fetch_image: factor 28 into [4, 16384] x 28 x 28
    processor_size=(256 * 28 * 28, 1280 * 28 * 28),
    eval_rules={("*", "target"): {"use_instruction": False}},  # candidates: the default instruction
)

# Qwen3-VL-Embedding (QwenLM/Qwen3-VL-Embedding @8ce3aab): src/models/qwen3_vl_embedding.py
# (format_model_input, _preprocess_inputs, _pooling_last), src/evaluation/mmeb_v2/.
QWEN3_VL_EMBEDDING = EmbeddingFormat(
    name="qwen3-vl-embedding",
    backbone="Qwen3VLForConditionalGeneration (Qwen3-VL-Embedding-2B / 8B)",
    source="QwenLM/Qwen3-VL-Embedding: src/models/qwen3_vl_embedding.py, src/evaluation/mmeb_v2",
    pooling="last_token",
    system="{instruction}",
    default_instruction="Represent the user's input.",
    punctuate_instruction=True,
    order={"image": ("media", "text"), "video": ("media", "text"), "text": ("text",)},
    text_template={"text": "{text}", "image": "{text}", "video": "{text}"},
    empty_text="NULL",
    generation_prompt=True,
    frames_as="video",
    num_frames=64,
    video_patch=16,
    image_resize=Resize(16, 4 * 32 * 32, 1800 * 32 * 32),
    video_element=MappingProxyType({"total_pixels": 10 * 768 * 32 * 32}),
    processor_kwargs=MappingProxyType({"do_resize": False}),
    # MMEB-V2: dataset instructions on the query side only (its video / visual-document copies end
    # in "." where VLM2Vec's end in ":"); candidates get the default
    eval_rules={("*", "target"): {"use_instruction": False}, ("video", "query"): {"colon_to_period": True},
                ("visdoc", "query"): {"colon_to_period": True}},
)

FORMATS: dict[str, EmbeddingFormat] = {f.name: f for f in (EMBED_RL, VLM2VEC, GME, QWEN3_VL_EMBEDDING)}
DEFAULT_VLM_FORMAT = EMBED_RL.name


def get_format(name: str | EmbeddingFormat) -> EmbeddingFormat:
    return name if isinstance(name, EmbeddingFormat) else entry(FORMATS, name, "embedding format")


# -- an item as the parts of a user turn ------------------------------------------------------

_THINKING = re.compile(r"<thinking>(.*?)</thinking>", re.DOTALL)


def item_kind(item: Item) -> str:
    return "video" if item.frames else "image" if item.image is not None else "text"


def build_parts(fmt: EmbeddingFormat, item: Item, tcot: TCoT | None = None) -> tuple[str | None, list[dict]]:
    """(system text or None, the user turn's parts) for `item` and its usable T-CoT.

    Parts are chat-message content entries: {"type": "text", "text"}, {"type": "image",
    "image": PIL, "resize": Resize | None} and {"type": "video", "video": [PIL, ...]}.
    """
    kind = item_kind(item)
    frames = sample_frames(item.frames or [], fmt.num_frames)
    item = dataclasses.replace(item, frames=frames or None)  # key frames index the frames embedded
    inst = fmt.instruction(item)
    system = None
    if fmt.system is not None:
        system = fmt.system.replace("{instruction}", inst or fmt.default_instruction)
        joined = item.text
    else:
        joined = " ".join(p for p in (inst, item.text) if p)
    text = fmt.text_template[kind].replace("{joined}", joined).replace("{text}", item.text)
    if fmt.strip_text:
        text = text.strip()
    image = item.load_image()
    media: list[dict] = []
    if kind == "image":
        media.append({"type": "image", "image": image, "resize": fmt.image_resize})
    elif kind == "video":
        loaded = [load_image(f) for f in frames]
        if fmt.frames_as == "video":
            media.append({"type": "video", "video": loaded})
        elif fmt.frames_as == "middle_frame":
            media.append({"type": "image", "image": loaded[len(loaded) // 2], "resize": fmt.image_resize})
        else:
            media.extend({"type": "image", "image": f, "resize": fmt.frame_resize} for f in loaded)
    parts: list[dict] = []
    for slot in fmt.order[kind]:
        if slot == "media":
            parts.extend(media)
        elif slot == "text" and text:
            parts.append({"type": "text", "text": text})
        elif slot == "tcot" and tcot is not None:
            parts.extend(_tcot_parts(fmt, item, tcot, image, kind))
        elif slot == "closing" and fmt.closing:
            parts.append({"type": "text", "text": fmt.closing})
    if not parts and fmt.empty_text is not None:
        parts.append({"type": "text", "text": fmt.empty_text})
    return system, parts


def _tcot_parts(fmt: EmbeddingFormat, item: Item, tcot: TCoT, image, kind: str) -> list[dict]:
    """"<thinking>...</thinking>\n", then the evidence crops (boxes) or key frames, then the rest."""
    raw = tcot.raw or render_tcot(tcot)
    m = _THINKING.search(raw)
    if m is None:
        return [{"type": "text", "text": raw}]
    evidence = materialize(item, tcot, image=image)
    resize = fmt.frame_resize if kind == "video" else fmt.image_resize
    views = evidence.crops if tcot.boxes else [load_image(f) for f in evidence.frames]
    parts = [{"type": "text", "text": f"<thinking>{m.group(1)}</thinking>\n"}]
    parts += [{"type": "image", "image": v, "resize": resize} for v in views]
    rest = raw[m.end():].strip()
    if rest:
        parts.append({"type": "text", "text": rest})
    return parts


# -- which format a checkpoint needs ------------------------------------------------------------

# A checkpoint whose files identify its family: (file, test on its text, format)
_SIGNATURES: tuple[tuple[str, str, str], ...] = (
    ("config.json", '"emb_token_ids"', "embed-rl"),   # Embed-RL's train.py stores the <emb> id in the config
    ("gme_inference.py", "", "gme"),                 # GME's model repositories ship their inference script
)


def detect_format(spec: str) -> str | None:
    """The format a model directory (or a Hub id already in the local cache) identifies itself by."""
    from pathlib import Path

    for filename, needle, name in _SIGNATURES:
        path = Path(spec) / filename
        if not path.is_file():
            path = _cached_hub_file(spec, filename)
        if path is not None and path.is_file() and needle in path.read_text(errors="replace"):
            return name
    return None


def _cached_hub_file(repo_id: str, filename: str):
    from pathlib import Path

    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - not a repo id, or no hub client: nothing cached
        return None
    return Path(found) if isinstance(found, str) else None
