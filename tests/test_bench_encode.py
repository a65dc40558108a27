"""`embedrl bench encode` measures every backend and modality against its bare forward in one run."""

import json

import pytest

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError


def test_bench_encode_reports_each_backend_and_modality_with_ratios(tiny_clip_dir, tiny_vlm_embedder_dir,
                                                                    synth_tiny_dir, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["-q", "bench", "encode", "--model", str(tiny_clip_dir), str(tiny_vlm_embedder_dir),
                 "--data", str(synth_tiny_dir), "--n", "16", "--batch-size", "8", "--repeats", "1",
                 "--modalities", "text", "image+tcot", "video", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [(r["backend"], r["modality"]) for r in rows] == [
        ("open_clip", "text"), ("open_clip", "image+tcot"), ("open_clip", "video"),
        ("vlm", "text"), ("vlm", "image+tcot"), ("vlm", "video")]
    for row in rows:
        assert row["items"] == (2 if row["modality"] == "video" else 16)  # a video set holds n / 8 clips
        for way in ("encode", "inline", "forward", "bare"):
            assert row[f"{way}_s"] > 0 and abs(row[f"{way}_items_per_s"] * row[f"{way}_s"] - row["items"]) < 1e-6
        assert abs(row["encode_vs_bare"] - row["bare_s"] / row["encode_s"]) < 1e-9
        assert f"{row['encode_vs_bare']:.2f}x" in table


def test_bench_encode_builds_real_architectures_from_config(synth_tiny_dir, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["-q", "bench", "encode", "--arch", "ViT-B-32", "--depth", "1", "--data", str(synth_tiny_dir),
                 "--image-px", "224", "--n", "4", "--batch-size", "4", "--repeats", "1",
                 "--modalities", "image", "text", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["model"], r["modality"]) for r in rows] == [("ViT-B-32 (depth 1)", "image"),
                                                           ("ViT-B-32 (depth 1)", "text")]
    assert "ViT-B-32 (depth 1)" in capsys.readouterr().out


def test_real_architectures_keep_their_widths_at_any_depth():
    from embedrl.lab.archs import build_arch

    clip = build_arch("ViT-B-32", depth=1)
    visual = clip.module.clip.visual
    assert clip.dim == 512 and visual.image_size == (224, 224) and len(visual.transformer.resblocks) == 1
    assert visual.transformer.width == 768 and clip.module.clip.transformer.width == 512
    with pytest.raises(EmbedrlError, match="unknown architecture"):
        build_arch("ViT-X-99")


@pytest.mark.slow
def test_qwen2_vl_2b_shapes_build_and_encode(synth_tiny_dir):
    from embedrl.core.items import Item
    from embedrl.lab.archs import build_arch

    vlm = build_arch("qwen2-vl-2b", depth=1)
    config = vlm.module.config
    assert (config.text_config.hidden_size, config.text_config.vocab_size, config.vision_config.embed_dim) == (
        1536, 151936, 1280)
    image = next((synth_tiny_dir / "images").iterdir())
    assert vlm.encode([Item(text="a red circle"), Item(image=str(image))]).shape == (2, 1536)
