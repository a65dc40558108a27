"""Load and save open_clip models by directory or by architecture name, offline.

A saved directory uses open_clip's own local layout, so `open_clip` itself loads it with
`create_model_and_transforms("local-dir:DIR")`:

    open_clip_config.json         {"model_cfg": {...}, "preprocess_cfg": {...}}
    open_clip_model.safetensors   the state dict

`load_open_clip(spec)` accepts such a directory, `ARCH` (random weights), `ARCH:PRETRAINED`
(an open_clip pretrained tag or a weights file; tags download), `hf-hub:ORG/REPO`, and any of
these behind an `open_clip:` prefix.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import atomic_write, ensure_dir

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
PREFIX = "open_clip:"


def build_open_clip(model_cfg: dict[str, Any]):
    """A randomly initialised open_clip CLIP from a model config (seed torch before calling)."""
    import open_clip

    cfg = json.loads(json.dumps(model_cfg))  # open_clip's constructors may modify nested dicts
    cls = open_clip.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.CLIP
    return cls(**cfg).eval()


def save_open_clip(model, model_cfg: dict[str, Any], out: str | os.PathLike) -> Path:
    """Write `model` in open_clip's local-directory layout (config + safetensors weights)."""
    import safetensors.torch
    from open_clip.transform import PreprocessCfg

    out = ensure_dir(out)
    # Models from open_clip's factory carry their preprocessing; a freshly built one gets
    # open_clip's defaults (OpenAI mean/std, bicubic, shortest-side resize).
    pp = {**asdict(PreprocessCfg()), **getattr(model.visual, "preprocess_cfg", {})}
    preprocess_cfg = {k: (list(pp[k]) if k in ("mean", "std") else pp[k])
                      for k in ("mean", "std", "interpolation", "resize_mode")}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write(out / WEIGHTS_FILE, "wb") as f:
        f.write(safetensors.torch.save(state, metadata={"format": "pt"}))
    with atomic_write(out / CONFIG_FILE) as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, f, indent=2)
        f.write("\n")
    return out


def open_clip_name(spec: str | os.PathLike) -> tuple[str, str | None]:
    """Split a spec into the (model_name, pretrained) pair open_clip's factory takes."""
    spec = str(spec)
    if spec.startswith(PREFIX):
        spec = spec[len(PREFIX):]
    if Path(spec).is_dir():
        if not (Path(spec) / CONFIG_FILE).is_file():
            raise EmbedrlError(f"{spec} has no {CONFIG_FILE}; it is not an open_clip model directory")
        return f"local-dir:{Path(spec).resolve()}", None
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    arch, _, pretrained = spec.partition(":")
    return arch, (pretrained or None)


def model_config(spec: str | os.PathLike) -> dict[str, Any]:
    """The architecture config of a spec (what `build_open_clip` / `save_open_clip` take)."""
    import open_clip

    name, _ = open_clip_name(spec)
    cfg = open_clip.get_model_config(name if ":" in name else name.replace("/", "-"))
    if cfg is None:
        raise EmbedrlError(f"unknown open_clip architecture {name!r}; see open_clip.list_models()")
    return cfg


def load_open_clip(spec: str | os.PathLike, device: str = "cpu"):
    """Return (model, preprocess, tokenizer) for a directory, `ARCH[:PRETRAINED]` or `hf-hub:` id.

    `preprocess` is open_clip's evaluation transform (PIL image -> tensor); `tokenizer` maps a
    list of strings to a (N, context_length) token tensor. The model is in eval mode.
    """
    import open_clip

    name, pretrained = open_clip_name(spec)
    if not name.startswith(("local-dir:", "hf-hub:")) and open_clip.get_model_config(name.replace("/", "-")) is None:
        raise EmbedrlError(f"unknown open_clip architecture {name!r}; see open_clip.list_models()")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        raise EmbedrlError(f"cannot load open_clip model {spec}: {str(e).splitlines()[0]}") from e
    return model.eval(), preprocess, open_clip.get_tokenizer(name)
