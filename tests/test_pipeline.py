"""The input pipeline behind `encode`: same vectors whichever way batches are prepared, in input order."""

import pytest
import torch
from PIL import Image, ImageDraw

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import TCoT
from embedrl.models.base import load_embedder
from embedrl.models.clip_embedder import BatchedPreprocess
from embedrl.models.pipeline import InputPipeline, plan_batches


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_media")
    paths = []
    for i, (colour, size) in enumerate([("red", (112, 112)), ("blue", (224, 160)), ("green", (64, 96)),
                                        ("orange", (300, 200))]):
        img = Image.new("RGB", size, "white")
        ImageDraw.Draw(img).ellipse((5, 5, size[0] // 2, size[1] // 2), fill=colour)
        img.save(root / f"{i}.png")
        paths.append(str(root / f"{i}.png"))
    return paths


def _items(media):
    return [Item(text="a red circle"), Item(image=media[1]), Item(text="find this " * 12, image=media[0]),
            Item(frames=media[:3]), Item(image=media[3]), Item(text="a big blue disc", instruction="Represent it"),
            Item(image=media[2]), Item(text="x")]


@pytest.mark.parametrize("preset", ["tiny_clip_dir", "tiny_vlm_embedder_dir"])
def test_every_pipeline_gives_the_inline_vectors_in_input_order(preset, media, request):
    embedder = load_embedder(str(request.getfixturevalue(preset)))
    items = _items(media)
    tcots = [TCoT(keywords=["red"]), TCoT(boxes=[[0, 0, 500, 500]]), None, TCoT(key_frames=[2]), None, None,
             None, None]
    inline = embedder.encode(items, tcots, batch_size=3, pipeline=InputPipeline(workers=0, sort=False))
    one_by_one = torch.cat([embedder.encode([item], [tcot]) for item, tcot in zip(items, tcots)])
    assert torch.allclose(inline, one_by_one, atol=1e-5)
    for pipeline in (InputPipeline(), InputPipeline(workers=2, prefetch=1),
                     InputPipeline(workers=1, kind="process"), InputPipeline(workers=0, sort=True)):
        out = embedder.encode(items, tcots, batch_size=3, pipeline=pipeline)
        assert torch.allclose(out, inline, atol=1e-5), pipeline


def test_padded_backends_batch_items_of_like_size_together(media, tiny_vlm_embedder_dir, tiny_clip_dir):
    vlm = load_embedder(str(tiny_vlm_embedder_dir))
    items = _items(media)
    plan = plan_batches(vlm, items, None, batch_size=3)
    order = [i for rows in plan for i in rows]
    assert sorted(order) == list(range(len(items))) and [len(rows) for rows in plan] == [3, 3, 2]
    # the estimate (read from text lengths and image headers) orders items as their real input lengths do
    lengths = [vlm.collate([item])["input_ids"].shape[1] for item in items]
    assert [lengths[i] for i in order] == sorted(lengths) and len(set(lengths)) > 4
    # a backend that does not pad keeps the input order
    clip = load_embedder(str(tiny_clip_dir))
    assert plan_batches(clip, items, None, batch_size=3) == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_batched_preprocess_gives_the_per_image_pixels(tiny_clip_dir, media):
    clip = load_embedder(str(tiny_clip_dir))
    images = [Image.open(p) for p in media] + [Image.open(media[0]).convert("L"), Image.open(media[1]).convert("RGBA")]
    batched = BatchedPreprocess(clip.preprocess)
    assert batched.per_image is not None  # open_clip's eval transform is split at its ToTensor
    assert torch.equal(batched(images), torch.stack([clip.preprocess(im) for im in images]))


def test_a_bad_item_fails_clearly_from_the_background_thread(tiny_clip_dir, media, tmp_path):
    clip = load_embedder(str(tiny_clip_dir))
    items = [Item(image=media[0])] * 4 + [Item(image=str(tmp_path / "missing.png"))] + [Item(text="a")] * 4
    with pytest.raises(EmbedrlError, match="missing.png"):
        clip.encode(items, batch_size=2, pipeline=InputPipeline(workers=1))


def test_pipeline_settings_are_checked(monkeypatch):
    monkeypatch.setenv("EMBEDRL_ENCODE_WORKERS", "2:process")
    assert InputPipeline.from_env() == InputPipeline(workers=2, kind="process")
    monkeypatch.setenv("EMBEDRL_ENCODE_WORKERS", "0")
    assert InputPipeline.from_env().workers == 0
    for bad in ("two", "2:fork"):
        monkeypatch.setenv("EMBEDRL_ENCODE_WORKERS", bad)
        with pytest.raises(EmbedrlError, match="EMBEDRL_ENCODE_WORKERS|kind"):
            InputPipeline.from_env()
