"""Tiny presets load with the Auto classes / open_clip, generate and encode, and are deterministic."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError
from embedrl.core.tcot import SPECIAL_TOKENS
from embedrl.lab.presets import PRESETS, make_preset


def _image(colour="red", size=(112, 112)):
    return Image.new("RGB", size, colour)


def _chat(image, text):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


# --- tiny-reasoner ---------------------------------------------------------------------------


QWEN2_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.mark.parametrize("fixture,cls,system", [
    ("tiny_reasoner_dir", "Qwen2VLForConditionalGeneration", QWEN2_SYSTEM),
    ("tiny_qwen3vl_dir", "Qwen3VLForConditionalGeneration", ""),  # Qwen3-VL: no default system turn
    ("tiny_qwen25vl_dir", "Qwen2_5_VLForConditionalGeneration", QWEN2_SYSTEM),
])
def test_reasoner_generates_from_an_image_chat_prompt(fixture, cls, system, request):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = request.getfixturevalue(fixture)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    assert type(model).__name__ == cls and sum(p.numel() for p in model.parameters()) < 2_000_000

    messages = _chat(_image(), "What color is the circle?")
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (system + "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What color is the circle?"
                    "<|im_end|>\n<|im_start|>assistant\n")
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    # 112x112 px -> 16 vision tokens: 8x8 patches of 14 px merged 2x2 (Qwen2-VL), or rounded to
    # 128x128 for patches of 16 (Qwen3-VL)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 12
    assert int(new.max()) < len(processor.tokenizer)
    assert isinstance(processor.batch_decode(new[None], skip_special_tokens=True)[0], str)


def test_reasoner_batches_images_of_different_sizes(tiny_reasoner_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_reasoner_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_reasoner_dir).eval()
    batch = [_chat(_image("red"), "Describe the image."), _chat(_image("blue", (640, 480)), "Where is the star?")]
    inputs = processor.apply_chat_template(batch, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt", padding=True)
    tokens = (inputs["input_ids"] == model.config.image_token_id).sum(dim=1).tolist()
    assert tokens[0] == 16 and 16 < tokens[1] <= 64  # large images are scaled down to <= 64 tokens
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2


def test_reasoner_takes_video_frames(tiny_reasoner_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_reasoner_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_reasoner_dir).eval()
    frames = [_image((40 * i, 0, 0)) for i in range(4)]
    messages = [{"role": "user", "content": [{"type": "video", "video": frames},
                                             {"type": "text", "text": "Describe the video."}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    # 4 frames -> 2 temporal patches x 16 merged spatial tokens.
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) == 32
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_digits_preset_writes_numbers_digit_by_digit(tmp_path, tiny_reasoner_dir):
    from transformers import AutoTokenizer

    digits = AutoTokenizer.from_pretrained(make_preset("tiny-reasoner-digits", tmp_path / "r"))
    pieces = digits.tokenize("[437, 89, 599]")
    assert [p for p in pieces if p.isdigit()] == list("43789599")
    assert digits.decode(digits("[437, 89, 599]")["input_ids"]) == "[437, 89, 599]"
    # the default preset merges digit runs (what the lab notebook's finding is about)
    assert any(len(p) > 1 and p.lstrip("Ġ").isdigit() for p in AutoTokenizer.from_pretrained(tiny_reasoner_dir).tokenize(
        "[437, 89, 599]"))


def test_wide_preset_is_the_same_reasoner_with_a_wider_text_model(tmp_path, tiny_reasoner_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    wide_dir = make_preset("tiny-reasoner-wide", tmp_path / "w")
    assert (wide_dir / "tokenizer.json").read_bytes() == (tiny_reasoner_dir / "tokenizer.json").read_bytes()
    wide = AutoModelForImageTextToText.from_pretrained(wide_dir)
    base = AutoModelForImageTextToText.from_pretrained(tiny_reasoner_dir)
    assert wide.config.text_config.hidden_size == 2 * base.config.text_config.hidden_size
    assert 2 < wide.num_parameters() / base.num_parameters() < 3
    # the vision merger must project to the text width, or an image prompt cannot be trained on
    processor = AutoProcessor.from_pretrained(wide_dir)
    inputs = processor.apply_chat_template(_chat(_image(), "What color is the circle?"), tokenize=True,
                                           return_dict=True, return_tensors="pt")
    loss = wide(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss) and wide.model.visual.merger.mlp[0].weight.grad.abs().sum() > 0


def test_reasoner_tokenizer_keeps_tcot_tags_and_chat_tokens_atomic(tiny_reasoner_dir):
    from transformers import AutoProcessor, GenerationConfig

    tok = AutoProcessor.from_pretrained(tiny_reasoner_dir).tokenizer
    assert 1000 <= len(tok) <= 2100
    for t in (*SPECIAL_TOKENS, "<emb>", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
              "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"):
        assert tok.convert_ids_to_tokens(tok(t, add_special_tokens=False)["input_ids"]) == [t]
    tcot = ('<thinking>{"text_keywords": ["red", "circle"], "bbox_2d": [10, 20, 300, 400]}</thinking>'
            "<rethink>The box covers the circle.</rethink><answer>a red circle</answer>")
    ids = tok(tcot, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(tcot) / 2  # trained merges, not bytes
    # T-CoT tags survive decoding without special tokens: parse_tcot reads decoded output.
    assert tok.decode(ids, skip_special_tokens=True) == tcot
    assert tok.decode(tok("<|im_start|>hi<|im_end|>")["input_ids"], skip_special_tokens=True) == "hi"

    gen = GenerationConfig.from_pretrained(tiny_reasoner_dir)
    assert gen.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    assert gen.pad_token_id == tok.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    config = json.loads((tiny_reasoner_dir / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == len(tok)
    assert config["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")


# --- tiny-vlm-embedder -----------------------------------------------------------------------


def test_vlm_embedder_has_emb_token_and_its_own_weights(tiny_vlm_embedder_dir, tiny_reasoner_dir):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from embedrl.models.base import CONFIG_NAME

    assert json.loads((tiny_vlm_embedder_dir / CONFIG_NAME).read_text()) == {"backend": "vlm", "format": "embed-rl"}
    assert not (tiny_reasoner_dir / CONFIG_NAME).exists()
    assert (tiny_vlm_embedder_dir / "tokenizer.json").read_bytes() == (tiny_reasoner_dir / "tokenizer.json").read_bytes()
    a = load_file(tiny_vlm_embedder_dir / "model.safetensors")
    b = load_file(tiny_reasoner_dir / "model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)

    processor = AutoProcessor.from_pretrained(tiny_vlm_embedder_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_embedder_dir).eval()
    emb_id = processor.tokenizer.convert_tokens_to_ids("<emb>")
    messages = _chat(_image(), "Represent the given image for retrieval.")
    messages.append({"role": "assistant", "content": [{"type": "text", "text": "<emb>"}]})
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    positions = (inputs["input_ids"][0] == emb_id).nonzero().flatten()
    assert len(positions) == 1
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
    vec = hidden[0, positions[0]]
    assert vec.shape == (128,) and torch.isfinite(vec).all()


# --- tiny-clip -------------------------------------------------------------------------------


def test_clip_loads_with_open_clip_and_encodes(tiny_clip_dir):
    import open_clip

    from embedrl.models.open_clip_io import load_open_clip

    theirs = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip_dir}")[0].state_dict()
    ours, our_preprocess, tokenizer = load_open_clip(tiny_clip_dir)
    assert theirs.keys() == ours.state_dict().keys()
    assert all(torch.equal(theirs[k], v) for k, v in ours.state_dict().items())
    assert tokenizer.vocab_size == 49408  # open_clip's bundled BPE vocabulary

    images = torch.stack([our_preprocess(_image("red", (200, 150))), our_preprocess(_image("blue"))])
    assert images.shape == (2, 3, 112, 112)
    with torch.no_grad():
        img = ours.encode_image(images, normalize=True)
        txt = ours.encode_text(tokenizer(["a red circle", "a blue square", "three stars"]), normalize=True)
    assert img.shape == (2, 64) and txt.shape == (3, 64)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(txt[0], txt[1])
    embedrl_cfg = json.loads((tiny_clip_dir / "embedrl.json").read_text())
    assert embedrl_cfg["backend"] == "open_clip" and embedrl_cfg["model_cfg"]["embed_dim"] == 64


def test_load_open_clip_takes_arch_names_and_rejects_bad_specs(tmp_path):
    from embedrl.models.open_clip_io import load_open_clip, model_config

    model, _, tokenizer = load_open_clip("open_clip:ViT-S-32-alt")  # architecture only: random weights
    assert type(model).__name__ == "CLIP" and tokenizer(["x"]).shape == (1, 77)
    assert model_config("ViT-B/32")["embed_dim"] == 512
    with pytest.raises(EmbedrlError, match="unknown open_clip architecture"):
        load_open_clip("open_clip:NoSuchNet")
    with pytest.raises(EmbedrlError, match="not an open_clip model directory"):
        load_open_clip(tmp_path)
    with pytest.raises(EmbedrlError, match="not a known tag"):
        load_open_clip("ViT-S-32-alt:no-such-tag")


# --- determinism and output directories ------------------------------------------------------


def test_same_seed_gives_identical_files_other_seed_other_weights(tmp_path, tiny_reasoner_dir, tiny_clip_dir):
    torch.manual_seed(123)
    rng_state = torch.random.get_rng_state()
    again = make_preset("tiny-reasoner", tmp_path / "r0", seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the caller's RNG is left alone
    assert _files(again) == _files(tiny_reasoner_dir)
    other = make_preset("tiny-reasoner", tmp_path / "r1", seed=1)
    assert _files(other)["tokenizer.json"] == _files(tiny_reasoner_dir)["tokenizer.json"]
    assert _files(other)["model.safetensors"] != _files(tiny_reasoner_dir)["model.safetensors"]

    assert _files(make_preset("tiny-clip", tmp_path / "c0", seed=0)) == _files(tiny_clip_dir)
    c1 = _files(make_preset("tiny-clip", tmp_path / "c1", seed=1))
    assert c1["open_clip_model.safetensors"] != _files(tiny_clip_dir)["open_clip_model.safetensors"]


def test_remaking_over_another_preset_or_an_interrupted_make(tmp_path, tiny_reasoner_dir):
    out = tmp_path / "model"
    shutil.copytree(tiny_reasoner_dir, out)
    make_preset("tiny-clip", out)
    assert sorted(p.name for p in out.iterdir()) == [
        ".embedrl-preset.json", "embedrl.json", "open_clip_config.json", "open_clip_model.safetensors"]
    assert json.loads((out / ".embedrl-preset.json").read_text()) == {"preset": "tiny-clip", "seed": 0}

    out = tmp_path / "interrupted"
    (out / ".staging-x1y2").mkdir(parents=True)  # what a killed make leaves behind
    (out / ".staging-x1y2" / "model.safetensors").write_bytes(b"half")
    make_preset("tiny-clip", out)
    assert _files(out) == _files(tmp_path / "model")


def test_errors_unknown_name_and_bad_out(tmp_path):
    known = "tiny-reasoner, tiny-reasoner-digits, tiny-reasoner-wide, tiny-vlm-embedder, tiny-qwen3-vl"
    with pytest.raises(EmbedrlError, match=f"unknown preset 'tiny-gpt'.*{known}"):
        make_preset("tiny-gpt", tmp_path / "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(EmbedrlError, match="is a file"):
        make_preset("tiny-clip", tmp_path / "file")
    with pytest.raises(EmbedrlError, match="cannot create directory"):
        make_preset("tiny-clip", tmp_path / "file" / "sub")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(EmbedrlError, match="not empty"):
        make_preset("tiny-clip", tmp_path / "notes")
    assert os.listdir(tmp_path / "notes") == ["todo.txt"]
    (tmp_path / "notes" / "config.json").write_text("{}")  # someone's model: never overwritten
    with pytest.raises(EmbedrlError, match="not made by"):
        make_preset("tiny-clip", tmp_path / "notes")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_error_read_only_out(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(EmbedrlError, match="not writable"):
        make_preset("tiny-clip", ro)


# --- CLI -------------------------------------------------------------------------------------


def test_cli_list_and_make(tmp_path, capsys):
    assert main(["presets", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in PRESETS)
    assert main(["-q", "presets", "make", "tiny-clip", "--out", str(tmp_path / "c"), "--seed", "3"]) == 0
    assert "tiny-clip" in capsys.readouterr().out
    assert (tmp_path / "c" / "open_clip_model.safetensors").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["presets", "make", "nope", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown preset 'nope'" in err and "tiny-reasoner" in err
    (tmp_path / "file").write_text("x")
    assert main(["presets", "make", "tiny-clip", "--out", str(tmp_path / "file" / "sub")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_console_script_reports_bad_out_without_traceback(tmp_path):
    (tmp_path / "file").write_text("x")
    exe = Path(sys.executable).parent / "embedrl"
    res = subprocess.run([str(exe), "presets", "make", "tiny-reasoner", "--out", str(tmp_path / "file" / "out")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().startswith("embedrl: error: cannot create directory")
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1


@pytest.mark.parametrize("fixture,dim", [("tiny_clip_dir", 64), ("tiny_vlm_embedder_dir", 128)])
def test_embedder_presets_load_through_load_embedder(request, fixture, dim):
    from embedrl.core.items import Item
    from embedrl.models.base import load_embedder

    embedder = load_embedder(str(request.getfixturevalue(fixture)))
    vecs = embedder.encode([Item(text="a red circle"), Item(image=_image("red"))])
    assert embedder.dim == dim and vecs.shape == (2, dim)
    assert torch.allclose(vecs.norm(dim=1), torch.ones(2), atol=1e-4)
