"""Loading any Hugging Face image-text-to-text model (Qwen2-VL / Qwen2.5-VL / Qwen3-VL, the tiny
presets) with its processor, from a Hub id, a model directory or a PEFT LoRA adapter directory.

The embedder, the reasoner, EG-RL's policy and the discriminator all load through here, so
they accept the same specs and fail with the same one-line message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_json


def check_model_path(spec: str, what: str = "model") -> bool:
    """Whether `spec` is a local directory; a path that names nothing, or a folder with no model in it, is an
    error now (before anything else reads it). A Hub id passes."""
    path = Path(spec).expanduser()
    if not path.exists():
        if spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1:
            raise EmbedrlError(f"{what} not found: {spec} (no such directory; a Hub id looks like org/name)")
        return False
    if path.is_dir() and not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
        raise EmbedrlError(f"cannot load {what} {spec!r}: no config.json or adapter_config.json in it "
                           "(not a model directory)")
    return True


def load_vlm(spec: str | os.PathLike, dtype: Any = None, processor_kwargs: dict[str, Any] | None = None,
             prepare_base: Callable[[Any, Any], Any] | None = None, what: str = "model") -> tuple[Any, Any]:
    """(model, processor) for `spec`. An adapter directory loads its base model, calls
    `prepare_base(base, processor)` (e.g. to add tokens the adapters were trained with), then
    the adapters (frozen; merge or wrap them again to train)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    spec = str(spec)
    local = check_model_path(spec, what)
    adapter = Path(spec) / "adapter_config.json"
    try:
        processor = AutoProcessor.from_pretrained(spec, **(processor_kwargs or {}))
        if adapter.is_file():
            from peft import PeftModel

            base = AutoModelForImageTextToText.from_pretrained(read_json(adapter)["base_model_name_or_path"],
                                                               dtype=dtype or "auto")
            if prepare_base is not None:
                prepare_base(base, processor)
            model = PeftModel.from_pretrained(base, spec, is_trainable=False)
        else:
            model = AutoModelForImageTextToText.from_pretrained(spec, dtype=dtype or "auto")
    except (OSError, ValueError) as e:
        where = "" if local else "no such directory here, and as a Hub id: "
        raise EmbedrlError(f"cannot load {what} {spec!r}: {where}{str(e).splitlines()[0]}") from e
    return model, processor


# vision-tower parameter names across VLM families (Qwen2/2.5/3-VL: visual.*; LLaVA-style: vision_tower.*)
VISION_PARAMS = re.compile(r"(^|\.)(visual|vision_tower|vision_model)\.")


def freeze_vision_tower(model: Any, what: str = "model") -> int:
    """Stop training the vision tower (train the language side only); returns how many tensors were frozen.

    Fine-tuning a small VLM on a narrow text format wears away what its vision tower had learned;
    keeping the tower fixed keeps its perception."""
    frozen = [p.requires_grad_(False) for n, p in model.named_parameters() if VISION_PARAMS.search(n)]
    if not frozen:
        raise EmbedrlError(f"freeze_vision: the {what} has no parameters named like a vision tower "
                           f"({VISION_PARAMS.pattern})")
    return len(frozen)
