"""VLM backend: a Hugging Face image-text-to-text model that embeds in one of the embedding formats.

The format (`embedrl.models.formats`) says how an item and its T-CoT become the model's input
and which position is pooled; the default for the embedders embedrl trains is `embed-rl`, the
paper's layout:

    user:      [image] instruction + text <thinking>...</thinking>\\n [crops | key frames] <rethink>..</rethink>
               <answer>..</answer> Summarize the above content in one word:
    assistant: <emb>

(video: the text first, then the frames as images). The embedding is the backbone's last
hidden state (after its final norm) at the last `<emb>` -- or, for formats without a special
token, at the last token -- L2-normalised. A broken T-CoT (see `usable_tcot`) leaves the item
raw. The format is saved in `embedrl.json`, chosen with `format=` when loading, or detected
from the checkpoint's files (`detect_format`).

LoRA: `apply_lora()` wraps the language model's projections with PEFT adapters;
`save_pretrained` writes the adapters in PEFT layout (plus processor and `embedrl.json`), or
the merged model in HF layout with `merge_lora=True`. Loading takes a Hub id, a model
directory or an adapter directory alike.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import ensure_dir
from embedrl.core.items import Item, sample_frames
from embedrl.core.tcot import TCoT, usable_tcot
from embedrl.models.base import CONFIG_NAME, LORA_TARGETS, Embedder
from embedrl.models.formats import (
    FORMATS,
    EmbeddingFormat,
    build_parts,
    detect_format,
    get_format,
)

logger = logging.getLogger(__name__)


def prepare_model(model, processor, fmt: EmbeddingFormat) -> int | None:
    """Make `model` and `processor` ready for `fmt`; return the pooled special token's id (if any).

    The special token is the one the checkpoint's config names (`emb_token_ids`, as Embed-RL
    saves it), else `fmt.special_token`, added with `add_tokens` when the tokenizer lacks it;
    the embedding matrix grows only when the tokenizer outgrows it (a Qwen vocabulary has spare
    rows). The processor's image / video size bounds are set to the format's.
    """
    if fmt.processor_size is not None:
        low, high = fmt.processor_size
        for part in (processor.image_processor, getattr(processor, "video_processor", None)):
            if part is not None:
                part.size = {"shortest_edge": low, "longest_edge": high}
    if fmt.special_token is None:
        return None
    tok = processor.tokenizer
    config = model.config
    saved = getattr(config, "emb_token_ids", None)
    token = tok.convert_ids_to_tokens(int(saved[0])) if saved else fmt.special_token
    if token not in tok.get_vocab():
        tok.add_tokens([token])
        logger.info("added %s to the vocabulary (now %d tokens)", token, len(tok))
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
    token_id = tok.convert_tokens_to_ids(token)
    config.emb_token_ids = [token_id]
    return token_id


def recorded_format(name_or_path: str) -> str | None:
    """The format a model's `embedrl.json` records, else the one its files identify, else None."""
    saved = Path(name_or_path) / CONFIG_NAME
    if saved.is_file():
        recorded = json.loads(saved.read_text()).get("format")
        if recorded:
            return recorded
    detected = detect_format(name_or_path)
    if detected is not None:
        logger.info("%s: detected embedding format %s", name_or_path, detected)
    return detected


def resolve_format(name_or_path: str, format: str | None) -> EmbeddingFormat:
    """The format asked for, else the model's own (`recorded_format`); an error lists the known ones."""
    name = format or recorded_format(name_or_path)
    if name is None:
        raise EmbedrlError(f"{name_or_path}: cannot tell which embedding format this model uses; pass "
                           f"--format / format= one of: {', '.join(FORMATS)}")
    return get_format(name)


class VLMEmbedder(Embedder):
    backend = "vlm"

    def __init__(self, model, processor, format: str | EmbeddingFormat = "embed-rl", name_or_path: str = "",
                 device: str | torch.device | None = None):
        self.module = model
        self.processor = processor
        self.name_or_path = name_or_path
        self.format = get_format(format)
        self.special_token_id = prepare_model(model, processor, self.format)
        self.processor.tokenizer.padding_side = "left"
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.module.to(device)

    @property
    def dim(self) -> int:
        config = self.module.config
        return int(getattr(config, "text_config", config).hidden_size)

    @property
    def is_lora(self) -> bool:
        return hasattr(self.module, "peft_config")

    def eval_view(self, modality: str, side: str) -> VLMEmbedder:
        fmt = self.format.for_eval(modality, side)
        if fmt is self.format:
            return self
        view = object.__new__(VLMEmbedder)
        view.__dict__.update(self.__dict__, format=fmt)
        return view

    # -- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str, format: str | None = None, device: str | None = None,
                        dtype: torch.dtype | None = None) -> VLMEmbedder:
        from embedrl.models.hf import check_model_path, load_vlm

        check_model_path(name_or_path, "embedder")  # a wrong path says so, not that its format is unknown
        fmt = resolve_format(name_or_path, format)
        model, processor = load_vlm(name_or_path, dtype, prepare_base=functools.partial(prepare_model, fmt=fmt),
                                    what="embedder")
        return cls(model, processor, format=fmt, name_or_path=name_or_path, device=device)

    def apply_lora(self, r: int = 16, alpha: int = 32, dropout: float = 0.05,
                   target_modules: str | list[str] = LORA_TARGETS) -> None:
        from peft import LoraConfig, get_peft_model

        if self.is_lora:
            return
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
        self.module = get_peft_model(self.module, config)

    def embedrl_config(self) -> dict[str, Any]:
        return {"format": self.format.name, "lora": self.is_lora, "source": self.name_or_path}

    def save_pretrained(self, path: str | Path, merge_lora: bool = False) -> None:
        path = ensure_dir(path)
        model = self.module
        if self.is_lora and merge_lora:
            model = model.merge_and_unload()
        model.save_pretrained(str(path))
        self.processor.save_pretrained(str(path))
        self.write_embedrl_config(path)

    # -- the two steps -----------------------------------------------------------------------

    def input_size(self, item: Item, tcot: TCoT | None = None) -> float:
        """About how many tokens the item's input holds (text characters / 4, plus each image's vision
        tokens under the format's resize bounds, read from the file's header): batches pad to it."""
        fmt, ip = self.format, self.processor.image_processor
        tcot = usable_tcot(tcot, item) if fmt.reads_tcot else None
        text = len(item.instruction) + len(item.text) + (len(tcot.raw or "") if tcot else 0)
        frames = sample_frames(item.frames or [], fmt.num_frames)
        visuals = [item.image] if item.image is not None else []
        visuals += frames[:1] * (len(frames) + len(tcot.key_frames if tcot else []))  # frames share a size
        visuals += [item.image] * len(tcot.boxes if tcot and item.image is not None else [])  # crops: at most that
        resize = fmt.frame_resize if frames else fmt.image_resize
        low = (resize and resize.min_pixels) or ip.size.get("shortest_edge") or 0
        high = (resize and resize.max_pixels) or ip.size.get("longest_edge") or 1 << 30
        tokens_per_pixel = 1 / ((resize.patch if resize else ip.patch_size) * ip.merge_size) ** 2
        return text / 4 + sum(min(max(_pixels(v), low), high) * tokens_per_pixel for v in visuals)

    def _render(self, system: str | None, parts: list[dict]) -> str:
        fmt = self.format
        if fmt.template is not None:  # a literal layout
            user = "".join(p["text"] if p["type"] == "text" else
                           fmt.image_placeholder if p["type"] == "image" else fmt.video_placeholder for p in parts)
            return fmt.template.replace("{system}", system or "").replace("{user}", user)
        messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system is not None else []
        messages.append({"role": "user", "content": [_chat_part(p) for p in parts]})
        if fmt.assistant is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": fmt.assistant}]})
        return self.processor.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=fmt.generation_prompt)

    def collate(self, items: Sequence[Item], tcots: Sequence[TCoT | None] | None = None) -> dict[str, Any]:
        from qwen_vl_utils import fetch_image, fetch_video

        fmt = self.format
        texts, images, videos, metadata = [], [], [], []
        for i, item in enumerate(items):
            tcot = usable_tcot(tcots[i] if tcots is not None else None, item)
            if tcot is not None and not fmt.reads_tcot:
                raise EmbedrlError(f"the {fmt.name} format has no place for T-CoTs; embed without a reasoner "
                                   "(e.g. --tcot none) or use a format that reads them (embed-rl)")
            system, parts = build_parts(fmt, item, tcot)
            texts.append(self._render(system, parts))
            for part in parts:
                if part["type"] == "image":
                    resize = part["resize"]
                    images.append(part["image"] if resize is None else
                                  fetch_image({"image": part["image"], **resize.element()}, image_patch_size=resize.patch))
                elif part["type"] == "video" and fmt.video_patch is None:
                    videos.append(part["video"])
                elif part["type"] == "video":
                    video, meta = fetch_video({"video": part["video"], **fmt.video_element},
                                              image_patch_size=fmt.video_patch, return_video_metadata=True)
                    videos.append(video)
                    metadata.append(meta)
        kwargs: dict[str, Any] = dict(fmt.processor_kwargs)
        if videos:
            kwargs["do_sample_frames"] = False
        if metadata:
            kwargs["video_metadata"] = metadata
        batch = self.processor(text=texts, images=images or None, videos=videos or None, padding=True,
                               return_tensors="pt", **kwargs)
        return dict(batch)

    def _backbone(self):
        """The model without its LM head (e.g. Qwen2VLModel): its output is the final-norm hidden state."""
        model = self.module.get_base_model() if self.is_lora else self.module
        return model.model

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        hidden = self._backbone()(**batch, use_cache=False).last_hidden_state
        if self.special_token_id is None:  # inputs are left-padded: the last token is the last real one
            emb = hidden[:, -1]
        else:
            is_emb = batch["input_ids"] == self.special_token_id
            if not bool(is_emb.any(dim=1).all()):
                raise EmbedrlError(f"an input lost its {self.format.special_token} token (truncated?); "
                                   "shorten the text or raise max length")
            positions = torch.arange(is_emb.shape[1], device=is_emb.device)
            last = torch.where(is_emb, positions, -1).max(dim=1).values
            emb = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return F.normalize(emb.float(), dim=-1)

    def bare_forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The backbone's own forward (vision tower + language model, all hidden states) on the same
        inputs: the overhead baseline. Not the LM head, which an embedder never runs (its logits over
        a 152k vocabulary would pad the baseline by a fifth at 2B)."""
        return self._backbone()(**batch, use_cache=False).last_hidden_state


def _pixels(image) -> int:
    """An image's pixel count from its header (PIL reads no pixels on open); 0 if it cannot be read."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.width * image.height
    try:
        with Image.open(image) as im:
            return im.width * im.height
    except (OSError, ValueError):
        return 0  # collate reports the unreadable file


def _chat_part(part: dict) -> dict:
    """A part as a chat template reads it (the template only needs the type)."""
    return part if part["type"] == "text" else {"type": part["type"]}
