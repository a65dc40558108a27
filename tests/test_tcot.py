"""T-CoT parsing never raises, round-trips through render, and evidence materialises safely."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from embedrl.core.items import Item
from embedrl.core.tcot import (
    MAX_BOXES,
    MAX_KEYWORDS,
    TCoT,
    check_evidence,
    materialize,
    parse_tcot,
    render_tcot,
)

GOOD = ('<thinking>{"text_keywords": ["red", "circle"], "bbox_2d": [100, 200, 500, 600]}</thinking>'
        "<rethink>The red circle is the subject.</rethink><answer>a red circle</answer>")


def test_parse_complete_output():
    t = parse_tcot(GOOD)
    assert t.valid, t.reason
    assert t.keywords == ["red", "circle"]
    assert t.boxes == [[100, 200, 500, 600]]
    assert t.rethink == "The red circle is the subject."
    assert t.answer == "a red circle"


def test_parse_list_of_boxes_and_key_frames_and_surrounding_text():
    t = parse_tcot('Sure! <thinking>{"bbox_2d": [[0,0,10,10],[5,5,900,1000]], "key_frames": [1, 4, 4, 7]}'
                   "</thinking><rethink>r</rethink><answer>a</answer> trailing")
    assert t.valid, t.reason
    assert t.boxes == [[0, 0, 10, 10], [5, 5, 900, 1000]]
    assert t.key_frames == [1, 4, 7]  # duplicates dropped, order kept


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    (None, "empty"),
    ("<thinking>{\"text_keywords\": [\"a\"]}", "not closed"),
    ("<thinking>{bad json}</thinking><rethink>r</rethink><answer>a</answer>", "not valid JSON"),
    ("<thinking>[1, 2]</thinking><rethink>r</rethink><answer>a</answer>", "not an object"),
    ('<thinking>{"bbox_2d": [0, 0, 2000, 10]}</thinking><rethink>r</rethink><answer>a</answer>', "outside"),
    ('<thinking>{"bbox_2d": [500, 0, 100, 10]}</thinking><rethink>r</rethink><answer>a</answer>', "inverted"),
    ('<thinking>{"bbox_2d": [0, 0, NaN, 10]}</thinking><rethink>r</rethink><answer>a</answer>', "4 numbers"),
    ('<thinking>{"key_frames": [0, 2]}</thinking><rethink>r</rethink><answer>a</answer>', "1-based"),
    ('<thinking>{"key_frames": [true]}</thinking><rethink>r</rethink><answer>a</answer>', "1-based"),
    ('<thinking>{"text_keywords": [1]}</thinking><rethink>r</rethink><answer>a</answer>', "not a string"),
    ('<thinking>{}</thinking><rethink>r</rethink>', "<answer> block missing"),
])
def test_broken_outputs_are_invalid_with_a_reason(text, reason):
    t = parse_tcot(text)
    assert not t.valid
    assert reason in t.reason


def test_broken_output_keeps_what_it_could_read():
    t = parse_tcot('<thinking>{"text_keywords": ["blue"], "bbox_2d": [[0,0,100,100],[9,9,1,1]]}</thinking>'
                   "<rethink>x</rethink>")
    assert not t.valid
    assert t.keywords == ["blue"] and t.boxes == [[0, 0, 100, 100]]


def test_huge_lists_are_capped():
    kw = [f"w{i}" for i in range(1000)]
    boxes = [[0, 0, 10, 10]] * 100
    t = parse_tcot(f'<thinking>{json.dumps({"text_keywords": kw, "bbox_2d": boxes})}</thinking>'
                   "<rethink>r</rethink><answer>a</answer>")
    assert not t.valid and "more than" in t.reason
    assert len(t.keywords) == MAX_KEYWORDS and len(t.boxes) == MAX_BOXES


def test_deeply_nested_json_does_not_raise():
    t = parse_tcot("<thinking>" + "[" * 100000 + "]" * 100000 + "</thinking><rethink></rethink><answer></answer>")
    assert not t.valid


def test_non_ascii_round_trips():
    t = TCoT(keywords=["красный", "円", "🙂"], answer="赤い円", rethink="ça va")
    assert parse_tcot(render_tcot(t)).same_content(t)


# --- property-based: parse never raises, render/parse round-trips --------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).map(lambda s: s.strip()).filter(
    lambda s: "<" not in s)
_coord = st.integers(0, 1000) | st.floats(0, 1000, allow_nan=False, allow_infinity=False)


@st.composite
def _box(draw):
    x1, x2 = sorted(draw(st.lists(st.integers(0, 1000), min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(st.integers(0, 1000), min_size=2, max_size=2, unique=True)))
    return [x1, y1, x2, y2]


_tcot = st.builds(
    TCoT,
    keywords=st.lists(_text.filter(bool), max_size=MAX_KEYWORDS),
    boxes=st.lists(_box(), max_size=MAX_BOXES),
    key_frames=st.lists(st.integers(1, 64), max_size=16, unique=True),
    rethink=_text,
    answer=_text,
)


@settings(max_examples=300, deadline=None)
@given(_tcot)
def test_render_then_parse_round_trips(t):
    back = parse_tcot(render_tcot(t))
    assert back.valid, back.reason
    assert back.same_content(t)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_parse_never_raises_on_arbitrary_text(s):
    t = parse_tcot(s)
    assert isinstance(t, TCoT)
    assert t.valid or t.reason


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=5) | st.dictionaries(
                        st.sampled_from(["text_keywords", "bbox_2d", "key_frames", "x"]), c, max_size=4),
                    max_leaves=30))
def test_parse_never_raises_on_arbitrary_json_evidence(evidence):
    t = parse_tcot(f"<thinking>{json.dumps(evidence)}</thinking><rethink>r</rethink><answer>a</answer>")
    reparsed = parse_tcot(render_tcot(t))  # whatever was kept renders to a valid T-CoT
    assert reparsed.valid and reparsed.same_content(t)


# --- evidence -----------------------------------------------------------------------------------

def test_materialize_crops_clamps_and_skips(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (200, 100), "white").save(path)
    item = Item(image=str(path))
    t = TCoT(boxes=[[0, 0, 500, 500],      # 100x50 crop
                    [0, 0, 20, 1000],      # 4 px wide: too thin
                    [0, 0, 1000, 100],     # 200x10: aspect 20, kept
                    [900, 900, 1000, 1000]])  # 20x10 kept
    ev = materialize(item, t)
    assert [c.size for c in ev.crops] == [(100, 50), (200, 10), (20, 10)]
    assert len(ev.skipped) == 1 and "side under" in ev.skipped[0]


def test_materialize_aspect_ratio_limit(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (2000, 20), "white").save(path)
    ev = materialize(Item(image=str(path)), TCoT(boxes=[[0, 0, 1000, 1000], [0, 0, 300, 1000]]))
    assert [c.size for c in ev.crops] == [(600, 20)]  # the 2000x20 full-width box has aspect 100
    assert len(ev.skipped) == 1 and "aspect" in ev.skipped[0]


def test_key_frames_select_frames_and_skip_out_of_range():
    item = Item(frames=[f"f{i}.png" for i in range(1, 9)])
    ev = materialize(item, TCoT(key_frames=[1, 8, 9]))
    assert ev.frames == ["f1.png", "f8.png"]
    assert check_evidence(TCoT(key_frames=[9]), item) is not None
    assert check_evidence(TCoT(key_frames=[2, 8]), item) is None
    assert check_evidence(TCoT(boxes=[[0, 0, 10, 10]]), Item(text="x")) is not None


def test_materialize_without_tcot_is_empty():
    ev = materialize(Item(text="a"), None)
    assert ev.crops == [] and ev.frames == []
