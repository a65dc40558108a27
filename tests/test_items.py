"""Items hash by content; pairs files fail loudly (file:line) or skip and count bad lines."""

import json
import re
import shutil

import pytest
from PIL import Image

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, load_image
from embedrl.data.pairs import read_pairs


@pytest.fixture
def img_dir(tmp_path):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "blue.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return tmp_path


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_content_hash_follows_content_not_path(img_dir):
    shutil.copy(img_dir / "red.png", img_dir / "red_copy.png")
    a = Item(text="x", image=str(img_dir / "red.png"))
    assert a.content_hash() == Item(text="x", image=str(img_dir / "red_copy.png")).content_hash()
    assert a.content_hash() != Item(text="x", image=str(img_dir / "blue.png")).content_hash()
    assert a.content_hash() != Item(text="y", image=str(img_dir / "red.png")).content_hash()


def test_item_dict_round_trip_and_modality(img_dir):
    item = Item(text="a cat", image="red.png", instruction="Find the image", id="7")
    back = Item.from_dict(item.to_dict(), root=img_dir)
    assert back.image == str(img_dir / "red.png") and back.text == "a cat" and back.id == "7"
    assert back.modality == "image+text"
    assert Item(frames=["a", "b"]).modality == "video"
    with pytest.raises(EmbedrlError, match="unknown item field"):
        Item.from_dict({"txt": "typo"})


def test_read_pairs_mmeb_style(img_dir):
    path = _write(img_dir / "pairs.jsonl", [
        {"qry": "<|image_1|> Represent the image", "qry_image_path": "red.png", "pos_text": "red",
         "neg_text": ["blue", "green"], "dataset": "d1", "qry_tcot": "<thinking>{}</thinking>"},
        {"qry": "blue", "pos_text": "", "pos_image_path": "blue.png", "neg_image_path": "red.png"},
    ])
    pairs, skipped = read_pairs(path)
    assert skipped == []
    assert pairs[0].query.text == "Represent the image" and pairs[0].query.image == str(img_dir / "red.png")
    assert [n.text for n in pairs[0].negs] == ["blue", "green"] and pairs[0].dataset == "d1"
    assert pairs[1].negs[0].image == str(img_dir / "red.png")


def test_negative_tcots_are_one_per_negative(img_dir):
    row = {"qry": "q", "pos_text": "p", "neg_text": ["a", "b"]}
    path = _write(img_dir / "pairs.jsonl", [{**row, "neg_tcot": ["<answer>a</answer>", None]}])
    pair = read_pairs(path)[0][0]
    assert pair.neg_tcot(0) == "<answer>a</answer>" and pair.neg_tcot(1) is None
    path = _write(img_dir / "pairs.jsonl", [{**row, "neg_tcot": ["<answer>a</answer>"]}])
    with pytest.raises(EmbedrlError, match="'neg_tcot' has 1 entries for 2 hard negatives"):
        read_pairs(path)


@pytest.mark.parametrize("bad_row, message", [
    ({"pos_text": "x"}, "missing field 'qry'"),
    ({"qry": "x"}, "missing field 'pos_text'"),
    ({"qry": "x", "pos_text": "y", "pos_image_path": "nope.png"}, "image not found"),
    ({"qry": "x", "pos_text": "y", "pos_image_path": "corrupt.png"}, "cannot read image"),
    ("{not json", "malformed JSON"),
])
def test_bad_line_names_file_and_line_or_is_skipped(img_dir, bad_row, message):
    good = {"qry": "a", "pos_text": "b"}
    path = _write(img_dir / "pairs.jsonl", [good, bad_row, good])
    with pytest.raises(EmbedrlError, match=rf"pairs.jsonl:2: .*{message}"):
        read_pairs(path)
    pairs, skipped = read_pairs(path, skip_bad=True)
    assert len(pairs) == 2 and len(skipped) == 1 and "pairs.jsonl:2" in skipped[0]


def test_empty_pairs_file_is_an_error(img_dir):
    path = _write(img_dir / "pairs.jsonl", [])
    with pytest.raises(EmbedrlError, match="no usable pairs"):
        read_pairs(path)


def test_decompression_bomb_is_refused(tmp_path):
    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    with pytest.raises(EmbedrlError, match="over the limit"):
        load_image(tmp_path / "big.png", max_pixels=10_000)


def test_frames_given_as_a_string_are_refused_not_read_letter_by_letter(img_dir):
    from embedrl.data.corpus import read_corpus

    corpus = _write(img_dir / "corpus.jsonl", [{"id": "v", "frames": "red.png"}])
    with pytest.raises(EmbedrlError, match=r"corpus\.jsonl:1: 'frames' must be a list of frame paths, not a string; "
                                           r'write \["red.png"\]'):
        read_corpus(corpus)
    corpus = _write(img_dir / "corpus.jsonl", [{"id": "v", "frames": ["red.png", "blue.png"]}])
    assert read_corpus(corpus).items[0].frames == [str(img_dir / "red.png"), str(img_dir / "blue.png")]

    row = {"qry": "a video", "pos_text": "x"}
    for bad, message in [({"qry_frames": "red.png"}, "'qry_frames' must be a list of frame paths, not a string"),
                         ({"neg_frames": ["red.png", "blue.png"]}, "'neg_frames' must hold one list of frame paths "
                                                                   "per hard negative")]:
        path = _write(img_dir / "pairs.jsonl", [{**row, **bad}])
        with pytest.raises(EmbedrlError, match=rf"pairs\.jsonl:1: {message}"):
            read_pairs(path)
    path = _write(img_dir / "pairs.jsonl", [{**row, "neg_frames": [["red.png", "blue.png"]]}])
    assert read_pairs(path)[0][0].negs[0].frames == [str(img_dir / "red.png"), str(img_dir / "blue.png")]


@pytest.mark.parametrize("field, value, message", [
    ("qry", 7, "'qry' must be a string, not a number (7)"),
    ("pos_text", ["a"], "'pos_text' must be a string, not a list"),
    ("neg_image_path", 5, "'neg_image_path' must be a file path (a string), not a number (5)"),
    ("qry_image_path", {"p": 1}, "'qry_image_path' must be a file path (a string), not an object"),
    ("qry_tcot", 5, "'qry_tcot' must be a string, not a number"),
])
def test_pairs_fields_of_the_wrong_json_type_name_the_line_and_field(img_dir, field, value, message):
    path = _write(img_dir / "pairs.jsonl", [{"qry": "a", "pos_text": "b"}, {"qry": "a", "pos_text": "b", field: value}])
    with pytest.raises(EmbedrlError, match=rf"pairs\.jsonl:2: {re.escape(message)}"):
        read_pairs(path)
    pairs, skipped = read_pairs(path, skip_bad=True)
    assert len(pairs) == 1 and skipped[0].startswith(f"{path}:2: {message}")
