"""Words for synthetic scenes: captions with paraphrases, questions, referring expressions, edits.

Every phrase is drawn from templates and synonym lists, so the same scene reads differently
from caption to caption ("a large red circle on the left" / "on the left there is a big
crimson disc") and text matching is not trivially exact. Choices come from a `style` seed:
rendering a one-detail variant of a scene with the same style changes only the words of
that detail, which is what makes caption hard negatives hard.

Functions return the text and, per object, the surface words used for each attribute, so
the oracle evidence can name exactly the words that discriminate.
"""

from __future__ import annotations

import random
import re

from embedrl.lab.synth.scenes import Obj, Scene

COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"), "green": ("green", "emerald", "grass-green"),
    "blue": ("blue", "azure", "cobalt"), "yellow": ("yellow", "golden", "lemon"),
    "purple": ("purple", "violet", "plum"), "orange": ("orange", "amber", "tangerine"),
    "pink": ("pink", "rose", "salmon-pink"), "cyan": ("cyan", "turquoise", "teal"),
}
SHAPE_WORDS = {
    "circle": ("circle", "disc", "round dot"), "square": ("square", "box", "block"),
    "triangle": ("triangle", "three-sided shape", "wedge"), "star": ("star", "five-pointed star", "starlet"),
    "diamond": ("diamond", "rhombus", "lozenge"), "hexagon": ("hexagon", "six-sided shape", "hex tile"),
    "cross": ("cross", "plus sign", "plus shape"), "ring": ("ring", "hoop", "circle outline"),
}
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
                 "diamond": "diamonds", "hexagon": "hexagons", "cross": "crosses", "ring": "rings"}
SIZE_WORDS = {"large": ("large", "big", "huge"), "small": ("small", "little", "tiny")}
POSITION_WORDS = {
    "left": ("on the left", "at the left side", "to the left"),
    "right": ("on the right", "at the right side", "to the right"),
    "top": ("at the top", "near the top edge", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom edge", "in the lower part"),
    "center": ("in the center", "in the middle", "at the centre"),
}
MOVE_WORDS = {
    "left": ("to the left side", "over to the left"), "right": ("to the right side", "over to the right"),
    "top": ("to the top", "up to the top edge"), "bottom": ("to the bottom", "down to the bottom edge"),
    "center": ("to the center", "into the middle"),
}
MOTION_WORDS = {
    "left": ("moving left", "sliding to the left", "drifting leftwards"),
    "right": ("moving right", "sliding to the right", "drifting rightwards"),
    "up": ("moving up", "rising", "sliding upwards"),
    "down": ("moving down", "falling", "sliding downwards"),
}
STILL_WORDS = ("that stays still", "at rest", "not moving")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
NOUNS = ("object", "shape", "thing")

_NP = ("{art} {size} {colour} {shape} {pos}", "{art} {size} {shape} in {colour} {pos}",
       "{art} {size} {colour} {shape} placed {pos}")
_CLAUSE = ("{Pos} there is {art} {size} {colour} {shape}", "{Art} {size} {colour} {shape} sits {pos}",
           "{Pos} we see {art} {size} {shape} coloured {colour}")
_OPENINGS = {False: ("", "A picture of ", "The scene shows ", "An image with ", "We can see "),
             True: ("", "A clip of ", "The video shows ", "A short clip with ", "We can see ")}

STOPWORDS = frozenset(
    "a an the there is are on at in of to with and we can see this that it its be by for from into "
    "over up down near sits placed coloured show shows scene picture image which what how many where "
    "does do you any as same part side edge just next object shape thing".split())


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def words_for(obj: Obj, picks: dict[str, int], video: bool = False, still: bool = True) -> dict[str, str]:
    """Surface words for each attribute of `obj`, given per-attribute synonym picks."""
    words = {"colour": COLOUR_WORDS[obj.colour][picks["colour"] % 3],
             "shape": SHAPE_WORDS[obj.shape][picks["shape"] % 3],
             "size": SIZE_WORDS[obj.size][picks["size"] % 3],
             "position": POSITION_WORDS[obj.position][picks["position"] % 3]}
    if video and obj.motion:
        words["motion"] = MOTION_WORDS[obj.motion][picks["motion"] % 3]
    elif video and still:
        words["motion"] = STILL_WORDS[picks["motion"] % 3]
    return words


def _fill(template: str, w: dict[str, str]) -> str:
    art = article(w["size"])  # every template puts the article right before the size word
    text = template.format(art=art, Art=_cap(art), size=w["size"], colour=w["colour"], shape=w["shape"],
                           pos=w["position"], Pos=_cap(w["position"]))
    if "motion" in w:
        text += " " + w["motion"]
    return text


def caption(scene: Scene, style: int) -> tuple[str, list[dict[str, str]]]:
    """A caption naming every object (and its motion in a video); words used per object."""
    rng = random.Random(style)
    sentences = rng.random() < 0.4
    opening = rng.choice(_OPENINGS[scene.video])
    still = rng.random() < 0.5
    phrases, used = [], []
    for obj in scene.objects:
        template = rng.randrange(3)
        picks = {a: rng.randrange(6) for a in ("colour", "shape", "size", "position", "motion")}
        w = words_for(obj, picks, scene.video, still)
        used.append(w)
        phrases.append(_fill((_CLAUSE if sentences else _NP)[template], w))
    if sentences:
        return ". ".join(_cap(p) for p in phrases) + ".", used
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return _cap(opening + body) + ".", used


def canonical(obj: Obj, with_article: bool = True) -> str:
    """'a large red circle': how answers and annotators name an object."""
    text = obj.describe()
    return f"{article(text)} {text}" if with_article else text


# ------------------------------------------------------------------ referring expressions

_REF_SETS = (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape"),
             ("shape", "position"), ("colour", "shape", "position"), ("size", "colour", "shape", "position"))
_REF_SETS_NO_SHAPE = (("colour",), ("size", "colour"), ("position",), ("colour", "position"),
                      ("size", "position"))
_REF_SETS_NO_COLOUR = (("shape",), ("size", "shape"), ("shape", "position"), ("position",),
                       ("size", "shape", "position"))


def unique_sets(scene: Scene, index: int, sets) -> list[tuple[str, ...]]:
    target = scene.objects[index]
    return [s for s in sets
            if sum(all(o.get(a) == target.get(a) for a in s) for o in scene.objects) == 1]


def refer(scene: Scene, index: int, rng: random.Random, sets=_REF_SETS) -> tuple[str, dict[str, str]]:
    """'the red circle on the left': a phrase naming object `index` uniquely in `scene`.

    Without 'shape' in the chosen attribute set a noun (object/shape/thing) stands in.
    """
    options = unique_sets(scene, index, sets) or [("size", "colour", "shape", "position")]
    chosen = rng.choice(options)
    obj = scene.objects[index]
    picks = {a: rng.randrange(6) for a in ("colour", "shape", "size", "position", "motion")}
    all_words = words_for(obj, picks)
    words = {a: all_words[a] for a in chosen}
    parts = [words[a] for a in ("size", "colour") if a in chosen]
    parts.append(words.get("shape") or NOUNS[picks["motion"] % 3])
    if "position" in chosen:
        parts.append(words["position"])
    return "the " + " ".join(parts), words


def refer_excluding(scene: Scene, index: int, rng: random.Random, exclude: str) -> tuple[str, dict[str, str]]:
    sets = _REF_SETS_NO_SHAPE if exclude == "shape" else _REF_SETS_NO_COLOUR
    return refer(scene, index, rng, sets)


# ------------------------------------------------------------------ edits (composed queries)

def edit_text(scene: Scene, index: int, attribute: str, value, rng: random.Random) -> tuple[str, dict[str, str]]:
    """How a user asks for one change: 'make the red circle blue', 'move the star to the top'."""
    ref, words = refer(scene, index, rng)
    obj = scene.objects[index]
    k = rng.randrange(6)
    if attribute == "colour":
        new = COLOUR_WORDS[value][k % 3]
        text = (f"make {ref} {new}", f"change the colour of {ref} to {new}", f"paint {ref} {new}")[k % 3]
    elif attribute == "shape":
        new = SHAPE_WORDS[value][k % 3]
        text = (f"turn {ref} into {article(new)} {new}", f"replace {ref} with {article(new)} {new} of the same colour",
                f"swap {ref} for {article(new)} {new}")[k % 3]
    elif attribute == "size":
        bigger = value == "large" and obj.size == "small"
        new = ("bigger", "larger", "enlarged")[k % 3] if bigger else ("smaller", "tiny", "shrunk")[k % 3]
        text = (f"make {ref} {new}", f"resize {ref} so it is {new}", f"show {ref} {new}")[k % 3]
    elif attribute == "position":
        new = MOVE_WORDS[value][k % 2]
        text = (f"move {ref} {new}", f"shift {ref} {new}", f"put {ref} {new}")[k % 3]
    else:
        raise ValueError(attribute)
    return text, {**words, "new": new}


# ------------------------------------------------------------------ questions

def question_about(kind: str, scene: Scene, index: int | None, rng: random.Random, extra=None) -> tuple[str, list[str]]:
    """A VQA question of `kind` and the words in it that identify what is asked about."""
    k = rng.randrange(6)
    if kind == "what":
        pos = POSITION_WORDS[scene.objects[index].position][k % 3]
        return (f"What is {pos}?", f"Which object can be seen {pos}?", f"Describe the shape {pos}.")[k % 3], [pos]
    if kind in ("colour", "shape"):
        ref, words = refer_excluding(scene, index, rng, kind)
        if kind == "colour":
            q = (f"What colour is {ref}?", f"Which colour does {ref} have?", f"Tell me the colour of {ref}.")[k % 3]
        else:
            q = (f"What shape is {ref}?", f"Which kind of shape is {ref}?", f"Name the form of {ref}.")[k % 3]
        return q, list(words.values())
    if kind == "count":
        what, value = extra  # ("all", None) | ("colour", "red") | ("shape", "star")
        if what == "colour":
            w = COLOUR_WORDS[value][k % 3]
            return (f"How many {w} objects are there?", f"Count the {w} shapes.", f"How many things are {w}?")[k % 3], [w]
        if what == "shape":
            w = SHAPE_PLURALS[value]
            return (f"How many {w} are there?", f"Count the {w} in the picture.", f"How many {w} can you see?")[k % 3], [w]
        return ("How many objects are there?", "How many shapes can you see?", "Count the objects in the picture.")[k % 3], ["how many"]
    if kind == "relation":
        direction, anchor = extra
        ref, words = refer(scene, anchor, rng)
        rel = {"left": ("just left of", "directly to the left of"), "right": ("just right of", "directly to the right of"),
               "up": ("just above", "directly above"), "down": ("just below", "directly below")}[direction][k % 2]
        return (f"What is {rel} {ref}?", f"Which object is {rel} {ref}?")[k % 2], [rel, *words.values()]
    raise ValueError(kind)


# ------------------------------------------------------------------ keywords

_TOKEN = re.compile(r"[a-z][a-z0-9-]*")


def content_words(text: str, limit: int = 8) -> list[str]:
    """Distinct non-stopwords in order, at most `limit` (a generic annotator's text keywords)."""
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if tok not in STOPWORDS and tok not in out:
            out.append(tok)
            if len(out) == limit:
                break
    return out
