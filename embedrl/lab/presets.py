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
                        `embedrl.json` for the VLM embedder backend.
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
    "tiny-vlm-embedder": "Qwen2-VL family with <emb> registered, for the VLM embedder backend",
    "tiny-clip": "open_clip ViT (width 128, 2 layers, 112 px) + text tower, bundled tokenizer",
}

# The presets a reasoner (warm-up, SFT, EG-RL) can start from.
REASONER_PRESETS = ("tiny-reasoner", "tiny-reasoner-digits", "tiny-reasoner-wide")

# Seeds are offset per preset so that `--seed 0` does not give two presets the same weights.
# (the reasoners differ in vocabulary or width, so their weights differ anyway)
_SEED_OFFSETS = {"tiny-reasoner": 0, "tiny-reasoner-digits": 0, "tiny-reasoner-wide": 0, "tiny-vlm-embedder": 1_000_003,
                 "tiny-clip": 2_000_003}

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
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
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
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

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


def build_tokenizer(split_digits: bool = False):
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
        chat_template=CHAT_TEMPLATE,
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


def _make_qwen2vl(out: Path, seed: int, split_digits: bool = False, text_hidden: int = 128) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    tokenizer = build_tokenizer(split_digits)
    config = tiny_qwen2vl_config(tokenizer, text_hidden)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=config.text_config.pad_token_id,
        do_sample=False, max_new_tokens=64,
    )
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 3 MB save needs no "Writing model shards" bar
    try:
        model.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    build_processor(tokenizer).save_pretrained(out)


def _make_tiny_reasoner(out: Path, seed: int) -> None:
    _make_qwen2vl(out, seed)


def _make_tiny_vlm_embedder(out: Path, seed: int) -> None:
    from embedrl.models.base import CONFIG_NAME

    _make_qwen2vl(out, seed)
    write_json(out / CONFIG_NAME, {"backend": "vlm", "pooling": "last_emb_token"})


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
    "tiny-reasoner": _make_tiny_reasoner,
    "tiny-reasoner-digits": lambda out, seed: _make_qwen2vl(out, seed, split_digits=True),
    "tiny-reasoner-wide": lambda out, seed: _make_qwen2vl(out, seed, text_hidden=256),
    "tiny-vlm-embedder": _make_tiny_vlm_embedder,
    "tiny-clip": _make_tiny_clip,
}

# Every file name some preset writes: a re-make with another preset removes the others'.
_ALL_PRESET_FILES = {
    "config.json", "generation_config.json", "model.safetensors", "processor_config.json",
    "preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
    "added_tokens.json", "embedrl.json", "open_clip_config.json", "open_clip_model.safetensors", MARKER,
}
