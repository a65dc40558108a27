"""Real-size embedder architectures with random weights, built from config (nothing downloads).

What `embedrl bench encode --arch NAME` and `embedrl bench gpu` time: at these sizes the forward
should dominate and everything around it hide behind it, which the tiny presets cannot show.

    ViT-B-32      open_clip's ViT-B-32 config (151M parameters, 224 px), its bundled tokenizer
    ViT-L-14      open_clip's ViT-L-14 config (428M parameters, 224 px)
    qwen2-vl-2b   Qwen2VLForConditionalGeneration in Qwen2-VL-2B-Instruct's shapes (text: hidden 1536,
                  28 layers, 12 heads / 2 KV heads, MLP 8960, vocabulary 151,936, tied embeddings;
                  vision: 1280 wide, 32 blocks, 16 heads, patch 14, merge 2), Qwen2-VL's processor
                  at its default pixel bounds, the tiny presets' tokenizer (a byte-level BPE of ~1k
                  tokens: texts run ~2x the tokens Qwen's tokenizer gives them), embedding format
                  `embed-rl` by default (the one that reads T-CoTs)

`depth` keeps every width and cuts the layer count (text layers and vision blocks alike), so each
layer has its real shape on a machine that cannot run 60 of them in minutes; the bench prints it.
"""

from __future__ import annotations

from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.models.base import Embedder

ARCHS: dict[str, str] = {
    "ViT-B-32": "open_clip ViT-B-32 (151M parameters, 224 px)",
    "ViT-L-14": "open_clip ViT-L-14 (428M parameters, 224 px)",
    "qwen2-vl-2b": "Qwen2-VL-2B-Instruct's shapes (2.2B parameters at full depth), embed-rl format",
}

# Qwen2-VL-2B-Instruct's config.json (the fields that set a layer's shape and the layer counts)
QWEN2_VL_2B_TEXT = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                    "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                    "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                        "mrope_section": [16, 24, 24]}}
QWEN2_VL_2B_VISION = {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4,
                      "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}


def build_arch(name: str, depth: int | None = None, format: str | None = None, device: str | None = None,
               seed: int = 0) -> Embedder:
    """The embedder of architecture `name` with random weights (seeded), on `device`."""
    import torch

    if name not in ARCHS:
        raise EmbedrlError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")
    if depth is not None and depth < 1:
        raise EmbedrlError("--depth must be at least 1")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name.startswith("ViT-"):
            return _open_clip(name, depth, device)
        return _qwen2_vl(depth, format or "embed-rl", device)


def _open_clip(name: str, depth: int | None, device: str | None) -> Embedder:
    import open_clip

    from embedrl.models.clip_embedder import CLIPEmbedder
    from embedrl.models.open_clip_io import build_open_clip, model_config

    cfg = model_config(name)
    if depth is not None:
        cfg = {**cfg, "vision_cfg": {**cfg["vision_cfg"], "layers": depth},
               "text_cfg": {**cfg["text_cfg"], "layers": depth}}
    clip = build_open_clip(cfg)
    preprocess = open_clip.image_transform(clip.visual.image_size, is_train=False)
    return CLIPEmbedder(clip, preprocess, open_clip.get_tokenizer(name), cfg, name_or_path=_label(name, depth),
                        device=device)


def _qwen2_vl(depth: int | None, format: str, device: str | None) -> Embedder:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from embedrl.lab.presets import CHAT_TEMPLATE, CHAT_TOKENS, VISION_TOKENS, build_tokenizer
    from embedrl.models.vlm_embedder import VLMEmbedder

    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in CHAT_TOKENS + VISION_TOKENS}
    text: dict[str, Any] = {**QWEN2_VL_2B_TEXT, "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]}
    vision = dict(QWEN2_VL_2B_VISION)
    if depth is not None:
        text.update(num_hidden_layers=depth, max_window_layers=depth)
        vision["depth"] = depth
    config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    model = Qwen2VLForConditionalGeneration(config).eval()
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    return VLMEmbedder(model, processor, format=format, name_or_path=_label("qwen2-vl-2b", depth), device=device)


def _label(name: str, depth: int | None) -> str:
    return name if depth is None else f"{name} (depth {depth})"
