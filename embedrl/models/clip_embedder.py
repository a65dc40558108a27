"""open_clip backend: CLIP-style dual encoders behind the Embedder interface.

T-CoT conditioning (tested in tests/test_embedders.py):
  - text side: the evidence text (keywords, then the answer) is appended to the item's text;
  - image side: evidence crops (from boxes) or key frames are encoded like the full image and
    their mean is fused with the full image's (or all frames') mean embedding:
    `normalize((1 - a) * full + a * evidence)`, with `a = sigmoid(evidence_logit)` learned
    in training (initial value `evidence_weight`, 0.3 by default) and saved in `embedrl.json`;
  - an item with text and image (a composed query) is the normalised sum of both sides.
A broken T-CoT (see `usable_tcot`) leaves the item raw.

Loading: a directory saved by `save_pretrained` (open_clip's local-dir layout plus
`embedrl.json`), or `open_clip:ARCH[:PRETRAINED]` for open_clip's own registry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, load_image
from embedrl.core.tcot import TCoT, materialize, usable_tcot
from embedrl.models.base import CONFIG_NAME, Embedder

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_root_logger():
    """open_clip logs its loading steps with the root logger at INFO; keep our output readable."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


class CLIPFusion(nn.Module):
    """The trainable module: an open_clip model plus the learned evidence weight."""

    def __init__(self, clip: nn.Module, evidence_weight: float = 0.3):
        super().__init__()
        self.clip = clip
        w = min(max(evidence_weight, 1e-4), 1 - 1e-4)
        self.evidence_logit = nn.Parameter(torch.tensor(math.log(w / (1 - w))))

    @property
    def evidence_weight(self) -> float:
        return torch.sigmoid(self.evidence_logit).item()


def _scatter_mean(values: torch.Tensor, owner: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    total = values.new_zeros(n, values.shape[1]).index_add(0, owner, values)
    count = values.new_zeros(n).index_add(0, owner, torch.ones_like(owner, dtype=values.dtype))
    return total / count.clamp(min=1).unsqueeze(1), count


class CLIPEmbedder(Embedder):
    backend = "open_clip"

    def __init__(self, clip: nn.Module, preprocess, tokenizer, model_cfg: dict[str, Any], name_or_path: str = "",
                 evidence_weight: float = 0.3, device: str | torch.device | None = None):
        self.module = CLIPFusion(clip, evidence_weight)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.name_or_path = name_or_path
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.module.to(device)

    @property
    def dim(self) -> int:
        return int(self.module.clip.visual.output_dim)

    # -- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | None = None) -> CLIPEmbedder:
        from embedrl.models.open_clip_io import load_open_clip, model_config

        path = Path(name_or_path)
        with _quiet_root_logger():
            clip, preprocess, tokenizer = load_open_clip(name_or_path)
            cfg = model_config(name_or_path)
        embedder = cls(clip, preprocess, tokenizer, cfg, name_or_path=name_or_path, device=device)
        extra = json.loads((path / CONFIG_NAME).read_text()) if (path / CONFIG_NAME).is_file() else {}
        if "evidence_logit" in extra:  # the exact trained value, so fingerprints survive a save
            embedder.module.evidence_logit.data.fill_(extra["evidence_logit"])
        return embedder

    def embedrl_config(self) -> dict[str, Any]:
        return {"evidence_logit": self.module.evidence_logit.item(),
                "evidence_weight": self.module.evidence_weight, "source": self.name_or_path}

    def save_pretrained(self, path: str | Path) -> None:
        from embedrl.models.open_clip_io import save_open_clip

        save_open_clip(self.module.clip, self.model_cfg, path)
        self.write_embedrl_config(path)

    # -- the two steps -----------------------------------------------------------------------

    def collate(self, items: Sequence[Item], tcots: Sequence[TCoT | None] | None = None) -> dict[str, Any]:
        texts, text_owner = [], []
        pixels, pixel_owner, pixel_is_evidence = [], [], []
        for i, item in enumerate(items):
            tcot = usable_tcot(tcots[i] if tcots is not None else None, item)
            text = " ".join(p for p in (item.instruction, item.text, tcot.evidence_text() if tcot else "") if p)
            if text:
                texts.append(text)
                text_owner.append(i)
            image = item.load_image()
            views = ([image] if image is not None else []) + item.load_frames()
            evidence = materialize(item, tcot, image=image) if tcot else None
            evidence_views = (evidence.crops + [load_image(f) for f in evidence.frames]) if evidence else []
            if not text and not views:
                raise EmbedrlError(f"item {item.id or i} has no text, image or frames to embed")
            for view, is_ev in [(v, False) for v in views] + [(v, True) for v in evidence_views]:
                pixels.append(self.preprocess(view))
                pixel_owner.append(i)
                pixel_is_evidence.append(is_ev)
        batch: dict[str, Any] = {"n_items": len(items)}
        if texts:
            batch["input_ids"] = self.tokenizer(texts)
            batch["text_owner"] = torch.tensor(text_owner)
        if pixels:
            batch["pixel_values"] = torch.stack(pixels)
            batch["pixel_owner"] = torch.tensor(pixel_owner)
            batch["pixel_is_evidence"] = torch.tensor(pixel_is_evidence)
        return batch

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        clip, n = self.module.clip, batch["n_items"]
        parts = []
        if "input_ids" in batch:
            text = clip.encode_text(batch["input_ids"], normalize=True)
            parts.append(text.new_zeros(n, text.shape[1]).index_add(0, batch["text_owner"], text))
        if "pixel_values" in batch:
            views = clip.encode_image(batch["pixel_values"], normalize=True)
            is_ev = batch["pixel_is_evidence"]
            full, _ = _scatter_mean(views[~is_ev], batch["pixel_owner"][~is_ev], n)
            evid, n_ev = _scatter_mean(views[is_ev], batch["pixel_owner"][is_ev], n)
            a = torch.sigmoid(self.module.evidence_logit).to(views.dtype)
            fused = torch.where((n_ev > 0).unsqueeze(1), (1 - a) * full + a * evid, full)
            parts.append(F.normalize(fused, dim=-1))  # rows without an image stay zero
        return F.normalize(torch.stack(parts).sum(0), dim=-1)

    def bare_forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """open_clip's own image and text towers on the same inputs (the overhead baseline)."""
        clip = self.module.clip
        out = []
        if "input_ids" in batch:
            out.append(clip.encode_text(batch["input_ids"]))
        if "pixel_values" in batch:
            out.append(clip.encode_image(batch["pixel_values"]))
        return torch.cat(out)

