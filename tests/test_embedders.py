"""The Embedder interface on both backends: shapes, normalisation, batching, T-CoT conditioning, save/load."""

import pytest
import torch
from PIL import Image, ImageDraw

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import TCoT, parse_tcot
from embedrl.models.base import load_embedder


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    paths = []
    for i, colour in enumerate(["red", "blue", "green"]):
        img = Image.new("RGB", (112, 112), "white")
        draw = ImageDraw.Draw(img)
        draw.ellipse((5, 5, 50, 50), fill=colour)
        draw.rectangle((60, 60, 105, 105), fill=["yellow", "purple", "orange"][i])
        img.save(root / f"{i}.png")
        paths.append(str(root / f"{i}.png"))
    return paths


@pytest.fixture(params=["tiny_clip_dir", "tiny_vlm_embedder_dir", "tiny_vlm_embedder_qwen3vl_dir"])
def embedder(request):
    return load_embedder(str(request.getfixturevalue(request.param)))


def _items(media):
    return [Item(text="a red circle"), Item(image=media[0]), Item(text="find this", image=media[1]),
            Item(frames=media), Item(text="a big blue disc", instruction="Represent the caption")]


def test_encode_is_normalised_float32_and_batch_independent(embedder, media):
    items = _items(media)
    out = embedder.encode(items, batch_size=2)
    assert out.shape == (len(items), embedder.dim) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(len(items)), atol=1e-5)
    one_by_one = torch.cat([embedder.encode([item]) for item in items])
    assert torch.allclose(out, one_by_one, atol=1e-5)
    assert embedder.encode([]).shape == (0, embedder.dim)


def test_embeddings_change_with_the_tcot_and_broken_ones_fall_back_to_raw(embedder, media):
    items = [Item(text="a red circle"), Item(image=media[0]), Item(frames=media)]
    raw = embedder.encode(items)
    tcots = [TCoT(keywords=["red", "circle"], answer="red"),
             TCoT(boxes=[[0, 0, 500, 500]], keywords=["red circle"]),   # crop of the red circle
             TCoT(key_frames=[2], answer="blue")]
    conditioned = embedder.encode(items, tcots)
    assert ((raw - conditioned).norm(dim=1) > 1e-3).all()
    # a broken generation, or evidence that does not fit the item, embeds the raw item
    broken = [parse_tcot("<thinking>{bad"), TCoT(key_frames=[1]), TCoT(key_frames=[9])]
    assert torch.allclose(embedder.encode(items, broken), raw, atol=1e-5)


def test_save_and_load_round_trip(embedder, media, tmp_path):
    items = _items(media)
    embedder.save_pretrained(tmp_path / "saved")
    again = load_embedder(str(tmp_path / "saved"))
    assert again.backend == embedder.backend and again.fingerprint() == embedder.fingerprint()
    assert torch.allclose(again.encode(items), embedder.encode(items), atol=1e-5)


def test_bad_items_give_clear_errors(embedder, media, tmp_path):
    with pytest.raises(EmbedrlError, match="image not found"):
        embedder.encode([Item(image=str(tmp_path / "missing.png"))])
    with pytest.raises(EmbedrlError, match="T-CoTs for"):
        embedder.encode([Item(text="a")], [None, None])
