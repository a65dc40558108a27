"""The built-in text the tiny presets' tokenizer is trained on.

A few thousand short lines in the register the offline default speaks: captions of
coloured shapes (size, position, motion, counts), retrieval instructions, questions with
short answers, and T-CoT outputs with JSON keywords, boxes and key frames. The corpus is
generated from a fixed RNG, independent of the preset seed, so every tiny preset shares one
vocabulary and the tokenizer files are identical from run to run.
"""

from __future__ import annotations

import json
import random

COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown",
           "black", "white", "gray", "grey", "cyan", "magenta", "teal", "navy")
SHAPES = ("circle", "square", "triangle", "rectangle", "star", "diamond", "hexagon",
          "ellipse", "oval", "cross", "ring", "pentagon", "heart", "disc", "box", "shape", "object")
SIZES = ("small", "large", "medium", "tiny", "big", "huge", "little", "medium-sized")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center", "middle",
             "top", "bottom", "left", "right", "upper left", "lower right", "upper right", "lower left")
RELATIONS = ("to the left of", "to the right of", "above", "below", "next to", "near",
             "far from", "on top of", "under", "beside")
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "slides to the left",
           "slides to the right", "rises", "falls", "stays still", "drifts across the frame",
           "moves from left to right", "moves from top to bottom", "bounces", "grows", "shrinks")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
INSTRUCTIONS = (
    "Represent the given image for retrieval.",
    "Represent the given image with the following question:",
    "Find an image that matches the given caption.",
    "Find a caption that describes the given image.",
    "Retrieve the video that matches the description.",
    "Select the region described by the referring expression.",
    "Modify the image as described and find the result.",
    "Classify the image.",
    "Answer the question about the image.",
    "Describe the image in one sentence.",
    "Describe the video.",
    "Think about the evidence, then answer.",
    "Represent the given text for retrieval.",
    "Represent the user's input.",
    "You are a helpful assistant.",
)
RETHINKS = (
    "The keywords name the colour and the shape of the main object.",
    "The box covers the object that the caption mentions.",
    "The key frames show the object while it moves.",
    "The count of objects decides the answer.",
    "Only one detail differs from the other candidates.",
    "The position of the object matters for retrieval.",
    "The evidence points at the largest object in the image.",
    "The relation between the two objects is the key detail.",
)


def _a(rng: random.Random, words: tuple[str, ...]) -> str:
    return rng.choice(words)


def _box(rng: random.Random) -> list[int]:
    x1, y1 = rng.randint(0, 900), rng.randint(0, 900)
    return [x1, y1, rng.randint(x1 + 10, 1000), rng.randint(y1 + 10, 1000)]


def _caption(rng: random.Random) -> str:
    c, s, z, p = _a(rng, COLOURS), _a(rng, SHAPES), _a(rng, SIZES), _a(rng, POSITIONS)
    c2, s2 = _a(rng, COLOURS), _a(rng, SHAPES)
    n = rng.randint(2, 9)
    templates = (
        f"A {z} {c} {s} in the {p} of the image.",
        f"There is a {c} {s} at the {p}.",
        f"The image shows a {z} {c} {s} {_a(rng, RELATIONS)} a {c2} {s2}.",
        f"{n} {c} {s}s on a white background.",
        f"There are {_a(rng, NUMBERS)} shapes: a {c} {s} and a {c2} {s2}.",
        f"The {c} {s} {_a(rng, MOTIONS)}.",
        f"In the video, a {z} {c} {s} {_a(rng, MOTIONS)} while a {c2} {s2} {_a(rng, MOTIONS)}.",
        f"Change the {c} {s} to {c2}.",
        f"Make the {s} {_a(rng, SIZES)} and move it to the {p}.",
        f"the {c} {s} {_a(rng, RELATIONS)} the {c2} {s2}",
        f"A picture of {n} objects, the biggest is a {c} {s}.",
    )
    return rng.choice(templates)


def _question(rng: random.Random) -> str:
    c, s, p = _a(rng, COLOURS), _a(rng, SHAPES), _a(rng, POSITIONS)
    pairs = (
        (f"What color is the {s}?", c),
        (f"What shape is in the {p}?", s),
        (f"How many {c} shapes are there?", str(rng.randint(0, 9))),
        (f"How many {s}s are in the image?", _a(rng, NUMBERS)),
        (f"Is the {c} {s} {_a(rng, RELATIONS)} the other shape?", rng.choice(("yes", "no"))),
        (f"Where is the {c} {s}?", p),
        (f"Which way does the {c} {s} move?", rng.choice(("left", "right", "up", "down"))),
    )
    q, a = rng.choice(pairs)
    return f"Question: {q} Answer: {a}"


def _tcot(rng: random.Random) -> str:
    c, s = _a(rng, COLOURS), _a(rng, SHAPES)
    evidence: dict = {}
    kind = rng.randint(0, 3)
    if kind in (0, 3):
        evidence["text_keywords"] = rng.sample([c, s, _a(rng, SIZES), _a(rng, POSITIONS)], k=rng.randint(1, 3))
    if kind in (1, 3):
        evidence["bbox_2d"] = _box(rng) if rng.random() < 0.6 else [_box(rng) for _ in range(rng.randint(2, 3))]
    if kind == 2:
        evidence["key_frames"] = sorted(rng.sample(range(1, 17), k=rng.randint(1, 4)))
    return (f"<thinking>{json.dumps(evidence)}</thinking>"
            f"<rethink>{_a(rng, RETHINKS)}</rethink><answer>{_caption(rng) if rng.random() < 0.5 else f'{c} {s}'}</answer>")


def corpus(n: int = 3000) -> list[str]:
    """Return `n` lines of the built-in corpus (always the same lines for the same `n`)."""
    rng = random.Random(20240213)
    makers = (_caption, _caption, _question, _tcot, _tcot)
    lines = [rng.choice(makers)(rng) for _ in range(n)]
    lines += list(INSTRUCTIONS) + [json.dumps(list(range(i, i + 10))) for i in range(0, 1001, 10)]
    return lines
