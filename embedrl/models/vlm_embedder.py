"""VLM backend: any Hugging Face image-text-to-text model embeds at its last `<emb>` token.

Input layout (one chat, so a chat-tuned VLM reads it naturally):
    user:      [image | frames] instruction + text
    assistant: <thinking>{evidence}</thinking> [evidence crops | key frames] <rethink>..</rethink><answer>..</answer>
    user:      SUMMARIZE_PROMPT
    assistant: <emb>
The embedding is the last layer's hidden state at the last `<emb>`, L2-normalised. Without
a (usable) T-CoT the assistant turn is left out and the raw item is embedded. Video frames
are passed as an image sequence, which every image-text-to-text processor accepts.

LoRA: `apply_lora()` wraps the language model's projections with PEFT adapters;
`save_pretrained` writes the adapters in PEFT layout (plus processor and `embedrl.json`), or
the merged model in HF layout with `merge_lora=True`. Loading takes a Hub id, a model
directory or an adapter directory alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import ensure_dir
from embedrl.core.items import Item, load_image
from embedrl.core.tcot import TCoT, materialize, render_tcot, usable_tcot
from embedrl.models.base import LORA_TARGETS, Embedder

logger = logging.getLogger(__name__)

EMB_TOKEN = "<emb>"
SUMMARIZE_PROMPT = "Summarize the above content and its evidence in one word:"


def ensure_emb_token(model, processor) -> int:
    """Register `<emb>` in the tokenizer (resizing embeddings if it is new); return its id."""
    tok = processor.tokenizer
    if EMB_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [EMB_TOKEN]}, replace_additional_special_tokens=False)
        model.resize_token_embeddings(len(tok))
        logger.info("added %s to the vocabulary (now %d tokens)", EMB_TOKEN, len(tok))
    return tok.convert_tokens_to_ids(EMB_TOKEN)


class VLMEmbedder(Embedder):
    backend = "vlm"

    def __init__(self, model, processor, name_or_path: str = "", device: str | torch.device | None = None):
        self.module = model
        self.processor = processor
        self.name_or_path = name_or_path
        self.emb_token_id = ensure_emb_token(model, processor)
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

    # -- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | None = None, dtype: torch.dtype | None = None,
                        **kwargs: Any) -> VLMEmbedder:
        from embedrl.models.hf import load_vlm

        model, processor = load_vlm(name_or_path, dtype, prepare_base=ensure_emb_token, what="embedder")
        return cls(model, processor, name_or_path=name_or_path, device=device)

    def apply_lora(self, r: int = 16, alpha: int = 32, dropout: float = 0.05,
                   target_modules: str | list[str] = LORA_TARGETS) -> None:
        from peft import LoraConfig, get_peft_model

        if self.is_lora:
            return
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
        self.module = get_peft_model(self.module, config)

    def embedrl_config(self) -> dict[str, Any]:
        return {"pooling": "last_emb_token", "emb_token": EMB_TOKEN, "summarize_prompt": SUMMARIZE_PROMPT,
                "lora": self.is_lora, "source": self.name_or_path}

    def save_pretrained(self, path: str | Path, merge_lora: bool = False) -> None:
        path = ensure_dir(path)
        model = self.module
        if self.is_lora and merge_lora:
            model = model.merge_and_unload()
        model.save_pretrained(str(path))
        self.processor.save_pretrained(str(path))
        self.write_embedrl_config(path)

    # -- the two steps -----------------------------------------------------------------------

    def _conversation(self, item: Item, tcot: TCoT | None) -> tuple[list[dict], list]:
        images: list = []
        user: list[dict] = []
        image = item.load_image()
        for view in ([image] if image is not None else []) + item.load_frames():
            user.append({"type": "image"})
            images.append(view)
        text = "\n".join(p for p in (item.instruction, item.text) if p)
        if text or not user:
            user.append({"type": "text", "text": text})
        messages = [{"role": "user", "content": user}]
        if tcot is not None:
            rendered = render_tcot(tcot)
            thinking, rest = rendered.split("</thinking>", 1)
            evidence = materialize(item, tcot, image=image)
            content = [{"type": "text", "text": thinking + "</thinking>"}]
            for view in evidence.crops + [load_image(f) for f in evidence.frames]:
                content.append({"type": "image"})
                images.append(view)
            content.append({"type": "text", "text": rest})
            messages.append({"role": "assistant", "content": content})
        messages.append({"role": "user", "content": [{"type": "text", "text": SUMMARIZE_PROMPT}]})
        return messages, images

    def collate(self, items: Sequence[Item], tcots: Sequence[TCoT | None] | None = None) -> dict[str, Any]:
        texts, images = [], []
        for i, item in enumerate(items):
            tcot = usable_tcot(tcots[i] if tcots is not None else None, item)
            messages, item_images = self._conversation(item, tcot)
            prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            texts.append(prompt + EMB_TOKEN)
            images.extend(item_images)
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        return dict(batch)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        out = self.module(**batch, output_hidden_states=True, logits_to_keep=1, use_cache=False)
        hidden = out.hidden_states[-1]
        is_emb = batch["input_ids"] == self.emb_token_id
        if not bool(is_emb.any(dim=1).all()):
            raise EmbedrlError(f"an input lost its {EMB_TOKEN} token (truncated?); shorten the text or raise max length")
        positions = torch.arange(is_emb.shape[1], device=is_emb.device)
        last = torch.where(is_emb, positions, -1).max(dim=1).values
        emb = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return F.normalize(emb.float(), dim=-1)

    def bare_forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The model's plain forward (all-position logits) on the same inputs (the overhead baseline)."""
        return self.module(**batch, use_cache=False).logits

