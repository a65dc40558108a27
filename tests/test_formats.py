"""Parity: each embedding format embeds exactly as its authors' published code does.

Every reference below is written in this file from the authors' published facts (prompt
strings, item order, processor calls, pooled position, resize constants; the sources are named
per reference) with transformers and qwen-vl-utils directly -- it never calls embedrl. Each is
compared with `embedrl.load_embedder(..., format=NAME)` on a tiny random model of the family's
class: text only, image + text, video frames, and (embed-rl) T-CoTs with boxes and key frames.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import parse_tcot
from embedrl.models.base import load_embedder

TOL = 1e-5
SUMMARIZE = "Summarize the above content in one word:"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("format-media")
    image = Image.new("RGB", (150, 110), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 70, 70), fill="red")
    draw.rectangle((80, 40, 140, 100), fill="blue")
    image.save(root / "image.png")
    frames = []
    for i in range(5):  # large enough for Embed-RL's per-frame pixel ceiling to bind
        frame = Image.new("RGB", (700, 500), (40 * i, 200 - 30 * i, 90))
        ImageDraw.Draw(frame).rectangle((60 * i, 80, 60 * i + 200, 300), fill="yellow")
        frame.save(root / f"frame{i}.png")
        frames.append(str(root / f"frame{i}.png"))
    return {"image": str(root / "image.png"), "frames": frames}


def _rgb(path):
    return Image.open(path).convert("RGB")


def _model(model_dir, **processor_kwargs):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, **processor_kwargs)
    return AutoModelForImageTextToText.from_pretrained(model_dir).eval(), processor


def _last_real(hidden, mask):
    """The hidden state at each row's last attention-mask position (either padding side)."""
    col = mask.shape[1] - mask.flip(1).argmax(1) - 1
    return hidden[torch.arange(hidden.shape[0]), col]


# --- embed-rl: ZoengHN/Embed-RL eval/mmeb_eval/vlm2vec/src/model/{processor.py, model.py} -------------

IMAGE_PIXELS = (128 * 32 * 32, 768 * 32 * 32)   # qwen2_vision_process.py MIN_PIXELS / MAX_PIXELS
VIDEO_PIXELS = (128 * 32 * 32, 300 * 32 * 32)   # VIDEO_MIN_PIXELS / VIDEO_MAX_PIXELS


def _embed_rl_cot(cot, images, pixels):
    """process_cot_with_visual_content, with key frames 1-based as the T-CoT prompts define them
    (the published code indexes them from 0: bug B1, not reproduced)."""
    thinking = re.search(r"<thinking>(.*?)</thinking>", cot, re.DOTALL)
    data = json.loads(re.search(r"\{[^{}]*\}", thinking.group(1), re.DOTALL).group(0))
    visuals = []
    if "bbox_2d" in data and images is not None:
        original = images[0] if isinstance(images, list) else images
        width, height = original.size
        for box in data["bbox_2d"]:
            x1, y1 = int(box[0] * width / 1000), int(box[1] * height / 1000)
            x2, y2 = int(box[2] * width / 1000), int(box[3] * height / 1000)
            x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
            y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
            w, h = x2 - x1, y2 - y1
            if w >= 10 and h >= 10 and max(w, h) / min(w, h) <= 50:
                visuals.append(original.crop((x1, y1, x2, y2)))
    elif "key_frames" in data:
        visuals = [images[k - 1] for k in data["key_frames"] if 1 <= k <= len(images)]
    out = [{"type": "text", "text": f"<thinking>{thinking.group(1)}</thinking>\n"}]
    out += [{"type": "image", "image": v, "min_pixels": pixels[0], "max_pixels": pixels[1]} for v in visuals]
    rest = cot[thinking.end():].strip()
    return out + ([{"type": "text", "text": rest}] if rest else [])


def reference_embed_rl(model_dir, text, image=None, frames=None, cot=None):
    from qwen_vl_utils import process_vision_info

    model, processor = _model(model_dir)
    processor.tokenizer.padding_side = "left"
    if "<emb>" not in processor.tokenizer.get_vocab():
        processor.tokenizer.add_tokens(["<emb>"])
    content = []
    if frames:  # a frame list: the text first, then each frame as an image item
        frames = [_rgb(f) for f in frames]
        content.append({"type": "text", "text": text})
        content += [{"type": "image", "image": f, "min_pixels": VIDEO_PIXELS[0], "max_pixels": VIDEO_PIXELS[1]}
                    for f in frames]
        if cot:
            content += _embed_rl_cot(cot, frames, VIDEO_PIXELS)
    elif image:
        image = _rgb(image)
        content.append({"type": "image", "image": image, "min_pixels": IMAGE_PIXELS[0], "max_pixels": IMAGE_PIXELS[1]})
        content.append({"type": "text", "text": text})
        if cot:
            content += _embed_rl_cot(cot, image, IMAGE_PIXELS)
    else:
        content.append({"type": "text", "text": text})
        if cot:
            content += _embed_rl_cot(cot, None, IMAGE_PIXELS)
    content.append({"type": "text", "text": SUMMARIZE})
    messages = [{"role": "user", "content": content},
                {"role": "assistant", "content": [{"type": "text", "text": "<emb>"}]}]
    prompt = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    images, _, _ = process_vision_info([messages], return_video_kwargs=True, image_patch_size=16,
                                       return_video_metadata=True)
    inputs = processor(text=[prompt], images=images, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.model(**inputs).last_hidden_state
    emb_id = processor.tokenizer.convert_tokens_to_ids("<emb>")
    last = torch.nonzero(inputs["input_ids"][0] == emb_id)[-1, 0]
    return F.normalize(hidden[0, last][None], dim=-1)[0]


# --- vlm2vec: TIGER-AI-Lab/VLM2Vec src/model/processor.py (process_input_text, Qwen2_VL_process_fn),
#     src/model/model.py (_pooling "eos"), src/arguments.py (resize_min/max_pixels) --------------------

def reference_vlm2vec(model_dir, instruction, text, image=None, frames=None):
    model, processor = _model(model_dir)
    processor.image_processor.size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 1280}
    processor.video_processor.size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 1280}
    prompt = instruction + (" " + text if text else "")
    if frames:
        prompt = "<|video_pad|> " + prompt
        inputs = processor(text=[prompt], videos=[[_rgb(f) for f in frames]], return_tensors="pt")
    elif image:
        prompt = "<|image_pad|> " + prompt
        inputs = processor(text=[prompt], images=[_rgb(image)], return_tensors="pt")
    else:
        inputs = processor(text=[prompt], images=None, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs, return_dict=True, output_hidden_states=True).hidden_states[-1]
    return F.normalize(_last_real(hidden, inputs["attention_mask"]), dim=-1)[0]


# --- gme: gme_inference.py (GmeQwen2VL: get_fused_embeddings, fetch_image, smart_resize), as copied in
#     TIGER-AI-Lab/VLM2Vec src/model/baseline_backbone/gme/; middle frame for video (VLM2Vec's harness) ----

def _gme_fetch_image(image, factor=28, min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28):
    width, height = image.size
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return image.resize((w_bar, h_bar))


def reference_gme(model_dir, instruction, text, image=None, frames=None):
    model, processor = _model(model_dir, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)
    if frames:
        image = frames[len(frames) // 2]
    user = ("<|vision_start|><|image_pad|><|vision_end|>" if image else "") + (text or "")
    system = instruction or "You are a helpful assistant."
    prompt = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
              f"<|im_start|>assistant\n<|endoftext|>")
    images = [_gme_fetch_image(_rgb(image))] if image else None
    inputs = processor(text=[prompt], images=images, padding=True, truncation=True, max_length=1800,
                       return_tensors="pt")
    with torch.no_grad():
        hidden = model.model(**inputs).last_hidden_state
    return F.normalize(hidden[:, -1], dim=-1)[0]


# --- qwen3-vl-embedding: QwenLM/Qwen3-VL-Embedding src/models/qwen3_vl_embedding.py
#     (format_model_input, _preprocess_inputs, _pooling_last) ----------------------------------------

def reference_qwen3_vl_embedding(model_dir, instruction, text, image=None, frames=None):
    import unicodedata

    from qwen_vl_utils import process_vision_info

    model, processor = _model(model_dir, padding_side="right")
    if instruction and not unicodedata.category(instruction[-1]).startswith("P"):
        instruction += "."
    content = []
    if frames:
        content.append({"type": "video", "video": [_rgb(f) for f in frames], "total_pixels": 10 * 768 * 32 * 32})
    if image:
        content.append({"type": "image", "image": _rgb(image), "min_pixels": 4 * 32 * 32,
                        "max_pixels": 1800 * 32 * 32})
    if text:
        content.append({"type": "text", "text": text})
    conversation = [{"role": "system", "content": [{"type": "text", "text": instruction or "Represent the user's input."}]},
                    {"role": "user", "content": content}]
    prompt = processor.apply_chat_template([conversation], add_generation_prompt=True, tokenize=False)
    images, videos, video_kwargs = process_vision_info([conversation], image_patch_size=16,
                                                       return_video_metadata=True, return_video_kwargs=True)
    metadata = None
    if videos is not None:
        videos, metadata = (list(x) for x in zip(*videos))
    inputs = processor(text=prompt, images=images, videos=videos, video_metadata=metadata, truncation=True,
                       max_length=8192, padding=True, do_resize=False, return_tensors="pt", **video_kwargs)
    with torch.no_grad():
        hidden = model.model(**inputs).last_hidden_state
    return F.normalize(_last_real(hidden, inputs["attention_mask"]), dim=-1)[0]


# --- the comparisons ---------------------------------------------------------------------------

def _cases(media):
    return {
        "text": dict(instruction="Find me an everyday image that matches the given caption:",
                     text="a red circle next to a blue square"),
        "image+text": dict(instruction="Represent the given image with the following question",
                           text="What is left of the square?", image=media["image"]),
        "video": dict(instruction="Find a video that contains the following visual content:",
                      text="a yellow box moves right", frames=media["frames"]),
    }


def _embedrl(model_dir, fmt, case, tcot=None):
    embedder = load_embedder(str(model_dir), format=fmt)
    item = Item(text=case["text"], instruction=case["instruction"], image=case.get("image"), frames=case.get("frames"))
    return embedder.encode([item], None if tcot is None else [tcot])[0]


REFERENCES = {
    "vlm2vec": ("tiny_reasoner_dir", lambda d, c: reference_vlm2vec(d, c["instruction"], c["text"],
                                                                     c.get("image"), c.get("frames"))),
    "gme": ("tiny_reasoner_dir", lambda d, c: reference_gme(d, c["instruction"], c["text"], c.get("image"),
                                                             c.get("frames"))),
    "qwen3-vl-embedding": ("tiny_qwen3vl_dir", lambda d, c: reference_qwen3_vl_embedding(
        d, c["instruction"], c["text"], c.get("image"), c.get("frames"))),
    # Embed-RL's MMEB eval: the VLM2Vec-formatted text with placeholders removed, stripped
    "embed-rl": ("tiny_qwen3vl_dir", lambda d, c: reference_embed_rl(d, f"{c['instruction']} {c['text']}".strip(),
                                                                      c.get("image"), c.get("frames"))),
}


@pytest.mark.parametrize("case", ["text", "image+text", "video"])
@pytest.mark.parametrize("fmt", list(REFERENCES))
def test_format_matches_its_authors_layout(fmt, case, media, request):
    fixture, reference = REFERENCES[fmt]
    model_dir = request.getfixturevalue(fixture)
    c = _cases(media)[case]
    ours, theirs = _embedrl(model_dir, fmt, c), reference(model_dir, c)
    diff = (ours - theirs).abs().max().item()
    print(f"{fmt} {case}: max abs diff {diff:.2e}")
    assert diff <= TOL


BOX_COT = ('<thinking>The image shows a red circle at the top left and a blue square at the right. '
           '{"bbox_2d": [[50, 60, 480, 650], [530, 350, 940, 920], [0, 0, 40, 900]]}</thinking>\n'
           '<rethink>The circle is left of the square.</rethink>\n<answer>A red circle.</answer>')
FRAME_COT = ('<thinking>Frame 2 shows the box on the left, frame 4 further right. {"key_frames": [2, 4]}</thinking>\n'
             '<rethink>The box moves to the right.</rethink>\n<answer>A yellow box moving right.</answer>')


@pytest.mark.parametrize("case,cot", [("image+text", BOX_COT), ("video", FRAME_COT), ("text", None)])
def test_embed_rl_with_tcot_evidence_matches(case, cot, media, tiny_qwen3vl_dir):
    c = _cases(media)[case]
    if cot is None:  # a text T-CoT: keywords, no visuals
        cot = ('<thinking>The caption names a red circle and a blue square. {"text_keywords": ["red circle", '
               '"blue square"]}</thinking>\n<rethink>Both shapes.</rethink>\n<answer>Red circle, blue square.</answer>')
    tcot = parse_tcot(cot)
    assert tcot.valid and tcot.raw == cot
    ours = _embedrl(tiny_qwen3vl_dir, "embed-rl", c, tcot)
    theirs = reference_embed_rl(tiny_qwen3vl_dir, f"{c['instruction']} {c['text']}", c.get("image"),
                                c.get("frames"), cot)
    diff = (ours - theirs).abs().max().item()
    print(f"embed-rl {case} with T-CoT: max abs diff {diff:.2e}")
    assert diff <= TOL
    raw = _embedrl(tiny_qwen3vl_dir, "embed-rl", c)
    assert (ours - raw).abs().max() > 1e-3  # the evidence is really in the input


def test_embed_rl_on_qwen2vl_uses_that_models_chat_template(media, tiny_reasoner_dir):
    """The layout is messages through the checkpoint's own chat template: on a Qwen2-VL model that
    template adds its default system turn, as the authors' code would on that model."""
    c = _cases(media)["image+text"]
    ours = _embedrl(tiny_reasoner_dir, "embed-rl", c)
    theirs = reference_embed_rl(tiny_reasoner_dir, f"{c['instruction']} {c['text']}", c.get("image"))
    assert (ours - theirs).abs().max().item() <= TOL


def test_formats_differ_and_batches_match_single_items(media, tiny_qwen3vl_dir):
    items = [Item(text=c["text"], instruction=c["instruction"], image=c.get("image"), frames=c.get("frames"))
             for c in _cases(media).values()]
    vectors = {}
    for fmt in ("embed-rl", "qwen3-vl-embedding"):
        embedder = load_embedder(str(tiny_qwen3vl_dir), format=fmt)
        batched = embedder.encode(items, batch_size=3)
        single = torch.cat([embedder.encode([i]) for i in items])
        assert (batched - single).abs().max() <= TOL
        vectors[fmt] = batched
    assert ((vectors["embed-rl"] - vectors["qwen3-vl-embedding"]).norm(dim=1) > 1e-2).all()


def test_formats_without_a_tcot_slot_refuse_tcots(media, tiny_reasoner_dir):
    embedder = load_embedder(str(tiny_reasoner_dir), format="vlm2vec")
    tcot = parse_tcot('<thinking>{"text_keywords": ["red"]}</thinking><rethink>r</rethink><answer>a</answer>')
    with pytest.raises(EmbedrlError, match="no place for T-CoTs"):
        embedder.encode([Item(text="a red circle")], [tcot])


def test_format_choice_errors_name_the_known_formats(tiny_reasoner_dir, tiny_clip_dir):
    with pytest.raises(EmbedrlError, match="cannot tell which embedding format.*embed-rl, vlm2vec, gme"):
        load_embedder(str(tiny_reasoner_dir))
    with pytest.raises(EmbedrlError, match="unknown embedding format 'nope'; known embedding formats: embed-rl"):
        load_embedder(str(tiny_reasoner_dir), format="nope")
    with pytest.raises(EmbedrlError, match="unknown keyword.*pooling"):
        load_embedder(str(tiny_reasoner_dir), format="gme", pooling="mean")
    with pytest.raises(EmbedrlError, match="embedding formats .* are for VLM embedders"):
        load_embedder(str(tiny_clip_dir), format="gme")


def test_checkpoints_that_identify_themselves_are_detected(tmp_path, tiny_reasoner_dir):
    import shutil

    embed_rl = shutil.copytree(tiny_reasoner_dir, tmp_path / "embed-rl")
    config = json.loads((embed_rl / "config.json").read_text())
    config["emb_token_ids"] = [7]  # Embed-RL's train.py stores the <emb> id here
    (embed_rl / "config.json").write_text(json.dumps(config))
    assert load_embedder(str(embed_rl)).format.name == "embed-rl"
    gme = shutil.copytree(tiny_reasoner_dir, tmp_path / "gme")
    (gme / "gme_inference.py").write_text("# GME's inference script\n")
    assert load_embedder(str(gme)).format.name == "gme"


@pytest.fixture(scope="module")
def small_benchmark(synth_tiny_dir, tmp_path_factory):
    """Two sets of the synthetic benchmark (image -> text, text -> video), cut to a few queries."""
    import yaml

    out = tmp_path_factory.mktemp("small-bench")
    registry = yaml.safe_load((synth_tiny_dir / "registry.yaml").read_text())
    keep = [{**spec, "num_sample_per_subset": 3 if spec["name"] == "Synth-I2T" else 2}  # the harness's cap
            for spec in registry["datasets"] if spec["name"] in ("Synth-I2T", "Synth-VideoRet")]
    (out / "registry.yaml").write_text(yaml.safe_dump({"datasets": keep}))
    return out / "registry.yaml"


@pytest.mark.parametrize("fixture,fmt", [
    ("tiny_reasoner_dir", "vlm2vec"), ("tiny_qwen3vl_dir", "embed-rl"),
    pytest.param("tiny_reasoner_dir", "gme", marks=pytest.mark.slow),
    pytest.param("tiny_qwen3vl_dir", "qwen3-vl-embedding", marks=pytest.mark.slow)])
def test_eval_mmeb_runs_each_format_end_to_end(fixture, fmt, small_benchmark, synth_tiny_dir, tmp_path, request):
    from embedrl.cli import main

    model_dir = request.getfixturevalue(fixture)
    assert main(["eval", "mmeb", "--model", str(model_dir), "--format", fmt, "--registry", str(small_benchmark),
                 "--data-root", str(synth_tiny_dir), "--out", str(tmp_path), "--no-report"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metadata"]["format"] == fmt
    assert set(results["metrics"]["image"]) == {"Synth-I2T"} and set(results["metrics"]["video"]) == {"Synth-VideoRet"}


def test_mmeb_sides_are_embedded_as_each_family_harness_does(media, tiny_reasoner_dir, tiny_qwen3vl_dir):
    from embedrl.models.formats import build_parts

    def rendered(embedder, modality, side, item):
        view = embedder.eval_view(modality, side)
        return view._render(*build_parts(view.format, item))

    query = Item(text="a cat", instruction="Represent the given image for classification", image=media["image"])
    label = Item(text="cat", instruction="Represent the class label")
    vlm2vec = load_embedder(str(tiny_reasoner_dir), format="vlm2vec")
    # VLM2Vec's image-task parsers: "\n" after the image token and at the end; labels raw
    assert rendered(vlm2vec, "image", "query", query) == "<|image_pad|>\nRepresent the given image for classification a cat\n"
    assert rendered(vlm2vec, "image", "target", label) == "cat"
    # its video / visual-document parsers: process_input_text as is
    assert rendered(vlm2vec, "visdoc", "target", Item(instruction="Understand the content of the provided document image.",
                                                      image=media["image"])) == \
        "<|image_pad|> Understand the content of the provided document image."
    qwen3 = load_embedder(str(tiny_qwen3vl_dir), format="qwen3-vl-embedding")
    video_query = Item(text="a dog runs", instruction="Find a video that contains the following visual content:")
    assert rendered(qwen3, "video", "query", video_query).startswith(
        "<|im_start|>system\nFind a video that contains the following visual content.<|im_end|>")
    assert rendered(qwen3, "video", "target", label).startswith("<|im_start|>system\nRepresent the user's input.<|im_end|>")
    gme = load_embedder(str(tiny_reasoner_dir), format="gme")
    assert rendered(gme, "image", "target", label).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert rendered(gme, "image", "query", label).startswith("<|im_start|>system\nRepresent the class label<|im_end|>")
