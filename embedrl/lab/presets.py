"""Tiny offline presets: small random models of the real architecture classes.

Everything offline (tests, the quickstart, smoke runs) runs on these, so nothing is ever
downloaded:

    tiny-reasoner       Qwen2VLForConditionalGeneration (0.7M parameters) + a byte-level BPE
                        tokenizer trained here + a Qwen2-VL chat template and processor;
                        loads with AutoModelForImageTextToText / AutoProcessor.
    tiny-reasoner-digits  the same, with a tokenizer that writes numbers digit by digit, as
                        the Qwen2 family's tokenizers do (box coordinates are then copied
                        digit by digit; docs/lab-notebook.md has what that changes).
    tiny-reasoner-wide  tiny-reasoner with a text model twice as wide (hidden 256, 8 heads; 1.85M
                        parameters), for runs that need a larger reasoner.
    tiny-vlm-embedder   the same family and tokenizer (own seed offset), with `<emb>` and an
                        `embedrl.json` for the VLM embedder backend (format `embed-rl`).
    tiny-qwen3-vl       Qwen3VLForConditionalGeneration (text hidden 64, 2 layers, deepstack at
                        vision block 1; patch 16) with the same tokenizer and a Qwen3-VL chat
                        template (no default system turn): a reasoner, or the backbone of the
                        `embed-rl` / `qwen3-vl-embedding` formats.
    tiny-qwen2.5-vl     Qwen2_5_VLForConditionalGeneration (windowed vision attention), the
                        same tokenizer and the Qwen2-VL chat template.
    tiny-vlm-embedder-qwen3-vl  tiny-qwen3-vl (own seed offset) with an `embedrl.json` for the
                        VLM embedder backend in the `embed-rl` format, as the paper's embedders.
    tiny-clip           a small open_clip model from a custom config with open_clip's bundled
                        tokenizer, saved so `open_clip` loads it from the directory.

A preset is deterministic for its seed: the same seed gives byte-identical files. Run with
`embedrl presets make NAME --out DIR [--seed N]`; tests use the fixtures in tests/conftest.py.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import ensure_dir, write_json

log = logging.getLogger(__name__)

PRESETS: dict[str, str] = {
    "tiny-reasoner": "Qwen2VLForConditionalGeneration (0.7M params), local byte-level BPE tokenizer, chat template",
    "tiny-reasoner-digits": "tiny-reasoner whose tokenizer splits numbers into single digits, as Qwen2's does",
    "tiny-reasoner-wide": "tiny-reasoner with a text model twice as wide (hidden 256, 1.85M params)",
    "tiny-vlm-embedder": "Qwen2-VL family with <emb> registered, for the VLM embedder backend (embed-rl format)",
    "tiny-qwen3-vl": "Qwen3VLForConditionalGeneration (text hidden 64, 2 layers, deepstack [1]), Qwen3-VL chat template",
    "tiny-qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration (text hidden 128, 2 layers, windowed vision)",
    "tiny-vlm-embedder-qwen3-vl": "tiny-qwen3-vl as a VLM embedder in the embed-rl format (the paper's backbone class)",
    "tiny-clip": "open_clip ViT (width 128, 2 layers, 112 px) + text tower, bundled tokenizer",
}

# The presets a reasoner (warm-up, SFT, EG-RL) can start from.
REASONER_PRESETS = ("tiny-reasoner", "tiny-reasoner-digits", "tiny-reasoner-wide", "tiny-qwen3-vl", "tiny-qwen2.5-vl")

# Seeds are offset per preset so that `--seed 0` does not give two presets the same weights.
# (the reasoners differ in vocabulary or width, so their weights differ anyway)
_SEED_OFFSETS = {"tiny-reasoner": 0, "tiny-reasoner-digits": 0, "tiny-reasoner-wide": 0, "tiny-vlm-embedder": 1_000_003,
                 "tiny-clip": 2_000_003, "tiny-qwen3-vl": 0, "tiny-qwen2.5-vl": 0,
                 "tiny-vlm-embedder-qwen3-vl": 1_000_003}

_STAGING = ".staging-"
# Written into every preset directory: provenance, and the licence to overwrite it later
# (make_preset never overwrites a directory holding anything else).
MARKER = ".embedrl-preset.json"

EMB_TOKEN = "<emb>"
CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
TOKENIZER_VOCAB = 1536  # a ceiling: with digits split, the built-in corpus yields ~800 tokens

# Qwen2-VL chat layout: <|im_start|>role\n...<|im_end|>\n, a default system turn, and each
# image / video part rendered as <|vision_start|><|image_pad|><|vision_end|> (the processor
# expands the pad into one token per merged vision patch). No whitespace control: the
# only whitespace in the output is the newlines written here.
_DEFAULT_SYSTEM = ("{% if loop.first and message['role'] != 'system' %}"
                   "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                   "{% endif %}")
_TURNS = (
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}"
    "{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
)
_GENERATION_PROMPT = "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
CHAT_TEMPLATE = "{% for message in messages %}" + _DEFAULT_SYSTEM + _TURNS + "{% endfor %}" + _GENERATION_PROMPT
# Qwen3-VL's chat layout: the same turns, but no system turn unless the messages hold one.
QWEN3_CHAT_TEMPLATE = "{% for message in messages %}" + _TURNS + "{% endfor %}" + _GENERATION_PROMPT

# Image sizes for the tiny processors: a 112x112 image becomes 8x8 patches of 14 px, merged
# 2x2 into 16 vision tokens; anything larger is scaled down to at most 64 tokens.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 224 * 224

TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 112, "layers": 2, "width": 128, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_preset(name: str, out: str | os.PathLike, seed: int = 0) -> Path:
    """Build preset `name` with random weights from `seed` and save it to directory `out`.

    `out` must be new, empty, or a directory an earlier `make_preset` wrote (its files are
    replaced; a model directory from anywhere else is never overwritten). Files are first
    written to a staging folder inside `out` and then moved into place one by one (the
    marker first), so an interrupted make never leaves a half-written weights file and a
    re-run simply makes the preset again.
    """
    if name not in PRESETS:
        raise EmbedrlError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EmbedrlError(f"{out} is a file; the output must be a directory")
    ensure_dir(out)
    for leftover in out.glob(f"{_STAGING}*"):  # from a make that was interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    if any(out.iterdir()) and not _looks_like_preset(out):
        raise EmbedrlError(f"{out} is not empty and was not made by `embedrl presets make`; "
                          "choose a new or empty directory")
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(dir=out, prefix=_STAGING))
    try:
        _MAKERS[name](staging, seed + _SEED_OFFSETS[name])
        write_json(staging / MARKER, {"preset": name, "seed": seed})
        written = {p.name for p in staging.iterdir()}
        for p in sorted(staging.iterdir()):
            os.replace(p, out / p.name)
        for stale in _ALL_PRESET_FILES - written:  # left over from a different preset
            (out / stale).unlink(missing_ok=True)
    except OSError as e:
        raise EmbedrlError(f"cannot write preset to {out}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    info = describe(out)
    log.info("made %s (seed %d) in %s: %.2fM parameters, %.1f MB, %.1f s", name, seed, out,
             info["parameters"] / 1e6, info["size_mb"], time.perf_counter() - start)
    return out


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Size on disk (MB) and parameter count (from the safetensors headers) of a model directory."""
    from safetensors import safe_open

    path = Path(path)
    files = [p for p in path.iterdir() if p.is_file()]
    params = 0
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as st:
                params += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return {"size_mb": sum(f.stat().st_size for f in files) / 1e6, "parameters": params}


def _looks_like_preset(path: Path) -> bool:
    return (path / MARKER).is_file()


# --- tokenizer and processor shared by the Qwen2-VL presets ---------------------------------


def build_tokenizer(split_digits: bool = False, chat_template: str = CHAT_TEMPLATE):
    """Train the byte-level BPE tokenizer on the built-in corpus; returns a fast HF tokenizer.

    Chat and vision markers are special tokens (dropped by `skip_special_tokens`); the T-CoT
    tags and `<emb>` are added as ordinary atomic tokens, so decoded Reasoner output keeps its
    `<thinking>...</answer>` structure. `split_digits` splits numbers into single digits before
    BPE, as the Qwen2 family's tokenizers do; without it digit runs merge ("599" as " 59" + "9"),
    and a box corner cut one token short reads as a smaller number.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from embedrl.core.tcot import SPECIAL_TOKENS as TCOT_TAGS
    from embedrl.lab.tiny_corpus import corpus

    special = list(CHAT_TOKENS + VISION_TOKENS)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), tok.pre_tokenizer])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB, min_frequency=2, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (*TCOT_TAGS, EMB_TOKEN)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=list(VISION_TOKENS),
        chat_template=chat_template,
        model_max_length=4096,
        padding_side="left",  # generation pads on the left
        clean_up_tokenization_spaces=False,
    )


def build_processor(tokenizer):
    """Qwen2VLProcessor with the PIL image processor, sized for tiny images."""
    from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    video_processor = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS,
                                            cap_pixels_per_frame=True)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def tiny_qwen2vl_config(tokenizer, text_hidden: int = 128):
    """The small Qwen2-VL config: text hidden 128 (or `text_hidden`) x 2 layers, vision 64 x 2 blocks.

    Attention heads stay 32 wide, so the rotary sections fit every width; the vision merger
    projects to the text width (its `hidden_size`).
    """
    from transformers import Qwen2VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in CHAT_TOKENS + VISION_TOKENS}
    return Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": text_hidden, "intermediate_size": 2 * text_hidden,
            "num_hidden_layers": 2, "num_attention_heads": text_hidden // 32, "num_key_value_heads": text_hidden // 64,
            "max_position_embeddings": 4096, "max_window_layers": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            "bos_token_id": None, "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2, "embed_dim": 64, "hidden_size": text_hidden, "num_heads": 4, "mlp_ratio": 2,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def tiny_qwen3vl_config(tokenizer, text_hidden: int = 64):
    """The small Qwen3-VL config: text hidden 64 x 2 layers (heads 32 wide, interleaved mrope),
    vision 64 x 2 blocks with patch 16 and deepstack features taken after block 1."""
    from transformers import Qwen3VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in CHAT_TOKENS + VISION_TOKENS}
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": text_hidden, "intermediate_size": 2 * text_hidden,
            "num_hidden_layers": 2, "num_attention_heads": text_hidden // 32, "num_key_value_heads": 1,
            "head_dim": 32, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6],
                                "mrope_interleaved": True},
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "patch_size": 16,
            "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": text_hidden,
            "num_position_embeddings": 256, "deepstack_visual_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def tiny_qwen25vl_config(tokenizer, text_hidden: int = 128):
    """The small Qwen2.5-VL config: the Qwen2-VL text model, and a windowed vision tower
    (2 blocks, the second with full attention)."""
    from transformers import Qwen2_5_VLConfig

    base = tiny_qwen2vl_config(tokenizer, text_hidden).to_dict()
    return Qwen2_5_VLConfig(
        text_config=base["text_config"],
        vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "out_hidden_size": text_hidden, "fullatt_block_indexes": [1]},
        image_token_id=base["image_token_id"], video_token_id=base["video_token_id"],
        vision_start_token_id=base["vision_start_token_id"], vision_end_token_id=base["vision_end_token_id"],
        tie_word_embeddings=True,
    )


def build_qwen3vl_processor(tokenizer):
    """Qwen3VLProcessor sized for tiny images (patch 16: a 112x112 image becomes 9 merged tokens
    after rounding to 128x128 -> 16 tokens); Qwen3-VL's image mean/std of 0.5."""
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLProcessor, Qwen3VLVideoProcessor

    half = [0.5, 0.5, 0.5]
    image_processor = Qwen2VLImageProcessorPil(patch_size=16, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS,
                                               image_mean=half, image_std=half)
    video_processor = Qwen3VLVideoProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
                                            image_mean=half, image_std=half)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=QWEN3_CHAT_TEMPLATE)


def build_qwen25vl_processor(tokenizer):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    video_processor = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, cap_pixels_per_frame=True)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor, chat_template=CHAT_TEMPLATE)


# family -> (model class name, config builder, processor builder, chat template)
_FAMILIES: dict[str, tuple[str, Callable, Callable, str]] = {
    "qwen2-vl": ("Qwen2VLForConditionalGeneration", tiny_qwen2vl_config, build_processor, CHAT_TEMPLATE),
    "qwen2.5-vl": ("Qwen2_5_VLForConditionalGeneration", tiny_qwen25vl_config, build_qwen25vl_processor,
                   CHAT_TEMPLATE),
    "qwen3-vl": ("Qwen3VLForConditionalGeneration", tiny_qwen3vl_config, build_qwen3vl_processor,
                 QWEN3_CHAT_TEMPLATE),
}


def _make_vlm(out: Path, seed: int, family: str = "qwen2-vl", split_digits: bool = False,
              text_hidden: int | None = None) -> None:
    import torch
    import transformers
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    class_name, make_config, make_processor, template = _FAMILIES[family]
    tokenizer = build_tokenizer(split_digits, template)
    config = make_config(tokenizer) if text_hidden is None else make_config(tokenizer, text_hidden)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        model = getattr(transformers, class_name)(config).eval()
    text = config.text_config
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=text.pad_token_id,
        do_sample=False, max_new_tokens=64,
    )
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 3 MB save needs no "Writing model shards" bar
    try:
        model.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    make_processor(tokenizer).save_pretrained(out)


def _make_tiny_vlm_embedder(out: Path, seed: int, family: str = "qwen2-vl") -> None:
    from embedrl.models.base import CONFIG_NAME
    from embedrl.models.formats import DEFAULT_VLM_FORMAT

    _make_vlm(out, seed, family)
    write_json(out / CONFIG_NAME, {"backend": "vlm", "format": DEFAULT_VLM_FORMAT})


def _make_tiny_clip(out: Path, seed: int) -> None:
    import torch

    from embedrl.models.base import CONFIG_NAME
    from embedrl.models.open_clip_io import build_open_clip, save_open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_open_clip(TINY_CLIP_CONFIG)
    save_open_clip(model, TINY_CLIP_CONFIG, out)
    write_json(out / CONFIG_NAME, {"backend": "open_clip", "model_cfg": TINY_CLIP_CONFIG})


_MAKERS: dict[str, Callable[[Path, int], None]] = {
    "tiny-reasoner": _make_vlm,
    "tiny-reasoner-digits": lambda out, seed: _make_vlm(out, seed, split_digits=True),
    "tiny-reasoner-wide": lambda out, seed: _make_vlm(out, seed, text_hidden=256),
    "tiny-vlm-embedder": _make_tiny_vlm_embedder,
    "tiny-clip": _make_tiny_clip,
    "tiny-qwen3-vl": lambda out, seed: _make_vlm(out, seed, "qwen3-vl"),
    "tiny-qwen2.5-vl": lambda out, seed: _make_vlm(out, seed, "qwen2.5-vl"),
    "tiny-vlm-embedder-qwen3-vl": lambda out, seed: _make_tiny_vlm_embedder(out, seed, "qwen3-vl"),
}

# Every file name some preset writes: a re-make with another preset removes the others'.
_ALL_PRESET_FILES = {
    "config.json", "generation_config.json", "model.safetensors", "processor_config.json",
    "preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
    "added_tokens.json", "embedrl.json", "open_clip_config.json", "open_clip_model.safetensors", MARKER,
}
