"""Synthetic scenes for the offline benchmark: coloured shapes on a light background, 112x112.

A `Scene` is plain frozen data (objects with colour, shape, size, position, optional motion,
and a background), so it has a stable content id, can be varied in exactly one detail
(`variant`), compared with another scene (`scene_diff`) and rendered by a pure function of
itself: the same scene always gives the same pixels and the same PNG bytes.

Layout: each object sits in its own slot (left, right, top, bottom, center), sized so that
objects never overlap; a position therefore names one object unambiguously. Video scenes
(8 frames) use smaller objects; 1-2 of them move by +-`MOTION_AMPLITUDE` px around their slot
(passing through it at mid-clip), the rest stay still.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, replace
from functools import cached_property

from PIL import Image, ImageDraw

CANVAS = 112
NUM_FRAMES = 8
CROP_SIDE = 40
MOTION_AMPLITUDE = 8
BOX_SCALE = 1000

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (30, 150, 60), "blue": (40, 80, 220), "yellow": (228, 196, 20),
    "purple": (140, 60, 180), "orange": (245, 135, 20), "pink": (236, 104, 176), "cyan": (20, 180, 196),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "ring")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
MOTIONS = ("left", "right", "up", "down")
ATTRIBUTES = ("colour", "shape", "size", "position", "motion")
BACKGROUNDS = ((250, 250, 250), (236, 236, 236), (246, 239, 224), (228, 236, 245), (232, 243, 230))
TEXTURES = ("plain", "stripes", "grid", "dots", "gradient")

_SLOTS = {
    False: {"left": (20, 56), "right": (92, 56), "top": (56, 20), "bottom": (56, 92), "center": (56, 56)},
    True: {"left": (18, 56), "right": (94, 56), "top": (56, 18), "bottom": (56, 94), "center": (56, 56)},
}
_RADIUS = {False: {"small": 9, "large": 15}, True: {"small": 7, "large": 11}}
_DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    position: str
    motion: str | None = None  # video only: left/right/up/down; None = still
    jitter: tuple[int, int, int] = (0, 0, 0)  # dx, dy, dr in px; variants keep it

    def get(self, attribute: str):
        return getattr(self, attribute)

    def describe(self) -> str:
        """Canonical words, e.g. 'large red circle'."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Background:
    colour: tuple[int, int, int]
    texture: str
    shade: int  # how much darker the texture is than the background
    spacing: int
    phase: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    bg: Background
    video: bool = False

    def to_dict(self) -> dict:
        objects = []
        for o in self.objects:
            d = {"shape": o.shape, "colour": o.colour, "size": o.size, "position": o.position}
            if self.video:
                d["motion"] = o.motion
            d["jitter"] = list(o.jitter)
            objects.append(d)
        bg = {"colour": list(self.bg.colour), "texture": self.bg.texture, "shade": self.bg.shade,
              "spacing": self.bg.spacing, "phase": self.bg.phase}
        return {"video": self.video, "bg": bg, "objects": objects}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        bg = d["bg"]
        return cls(
            objects=tuple(Obj(o["shape"], o["colour"], o["size"], o["position"], o.get("motion"),
                              tuple(o.get("jitter", (0, 0, 0)))) for o in d["objects"]),
            bg=Background(tuple(bg["colour"]), bg["texture"], bg["shade"], bg["spacing"], bg["phase"]),
            video=bool(d.get("video")))

    @cached_property
    def id(self) -> str:
        """Content id: equal scenes share it (and so share their image file)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return ("v" if self.video else "s") + hashlib.sha1(blob.encode()).hexdigest()[:15]

    def with_attr(self, index: int, attribute: str, value) -> Scene:
        objects = list(self.objects)
        objects[index] = replace(objects[index], **{attribute: value})
        return replace(self, objects=tuple(objects))

    def movers(self) -> list[int]:
        return [i for i, o in enumerate(self.objects) if o.motion]


# ------------------------------------------------------------------ sampling and variants

def sample_background(rng: random.Random) -> Background:
    return Background(colour=rng.choice(BACKGROUNDS), texture=rng.choice(TEXTURES),
                      shade=rng.randint(8, 18), spacing=rng.randint(6, 12), phase=rng.randint(0, 11))


def sample_object(rng: random.Random, position: str, video: bool = False) -> Obj:
    jitter = (0, 0, 0) if video else (rng.randint(-2, 2), rng.randint(-2, 2), rng.randint(-1, 1))
    return Obj(shape=rng.choice(SHAPES), colour=rng.choice(sorted(COLOURS)), size=rng.choice(SIZES),
               position=position, jitter=jitter)


def sample_scene(rng: random.Random, n_objects: int | None = None, video: bool = False,
                 n_movers: int | None = None) -> Scene:
    """2-5 objects (video: 2-3, of which 1-2 move), each in its own slot."""
    n = n_objects or (rng.randint(2, 3) if video else rng.randint(2, 5))
    objects = [sample_object(rng, p, video) for p in rng.sample(POSITIONS, n)]
    if video:
        for i in rng.sample(range(n), min(n, n_movers or rng.randint(1, 2))):
            objects[i] = replace(objects[i], motion=rng.choice(MOTIONS))
    return Scene(objects=tuple(objects), bg=sample_background(rng), video=video)


def alternatives(scene: Scene, index: int, attribute: str) -> list:
    """The values `attribute` of object `index` can change to, keeping the scene valid."""
    obj = scene.objects[index]
    if attribute == "colour":
        return [c for c in sorted(COLOURS) if c != obj.colour]
    if attribute == "shape":
        return [s for s in SHAPES if s != obj.shape]
    if attribute == "size":
        return [s for s in SIZES if s != obj.size]
    if attribute == "position":
        used = {o.position for o in scene.objects}
        return [p for p in POSITIONS if p not in used]
    if attribute == "motion":
        return [m for m in MOTIONS if m != obj.motion] if obj.motion else []
    raise ValueError(f"unknown attribute {attribute!r}")


def variant(scene: Scene, rng: random.Random, attributes=("colour", "shape", "size", "position"),
            objects: list[int] | None = None, avoid: set[str] | None = None) -> tuple[Scene, dict] | None:
    """A copy of `scene` differing in exactly one detail of one object, and that detail.

    `avoid` holds scene ids not to return (the gold, earlier variants). None if impossible.
    """
    avoid = avoid or set()
    options = [(i, a, v) for i in (range(len(scene.objects)) if objects is None else objects)
               for a in attributes for v in alternatives(scene, i, a)]
    rng.shuffle(options)
    for i, a, v in options:
        new = scene.with_attr(i, a, v)
        if new.id not in avoid and new.id != scene.id:
            return new, {"object": i, "attribute": a, "gold": scene.objects[i].get(a), "neg": v}
    return None


def scene_diff(a: Scene, b: Scene) -> list[tuple[int, str]]:
    """(object index, attribute) pairs where two scenes differ; ('*', what) for layout changes."""
    if a.bg != b.bg:
        return [(-1, "background")]
    if a.video != b.video or len(a.objects) != len(b.objects):
        return [(-1, "layout")]
    out = [(i, attr) for i, (x, y) in enumerate(zip(a.objects, b.objects, strict=True))
           for attr in ATTRIBUTES if x.get(attr) != y.get(attr)]
    out += [(i, "jitter") for i, (x, y) in enumerate(zip(a.objects, b.objects, strict=True)) if x.jitter != y.jitter]
    return out


# ------------------------------------------------------------------ geometry

def centre(scene: Scene, index: int, frame: int | None = None) -> tuple[float, float, float]:
    """(cx, cy, radius) in px; for a moving object at 0-based `frame` (None: mid-clip, the slot)."""
    obj = scene.objects[index]
    sx, sy = _SLOTS[scene.video][obj.position]
    dx, dy, dr = obj.jitter
    cx, cy, r = sx + dx, sy + dy, _RADIUS[scene.video][obj.size] + dr
    if obj.motion and frame is not None:
        t = -1.0 + 2.0 * frame / (NUM_FRAMES - 1)
        ux, uy = _DIRECTIONS[obj.motion]
        cx, cy = cx + ux * MOTION_AMPLITUDE * t, cy + uy * MOTION_AMPLITUDE * t
    return cx, cy, r


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    def ring(n: int, radius: float, start: float) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(start + 2 * math.pi * k / n),
                 cy + radius * math.sin(start + 2 * math.pi * k / n)) for k in range(n)]

    if shape in ("circle", "ring"):
        return None
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return ring(3, r, -math.pi / 2)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, 0.45 * r, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "cross":
        a, b = 0.3 * r, 0.9 * r
        return [(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy - a), (cx + b, cy - a), (cx + b, cy + a),
                (cx + a, cy + a), (cx + a, cy + b), (cx - a, cy + b), (cx - a, cy + a), (cx - b, cy + a),
                (cx - b, cy - a), (cx - a, cy - a)]
    raise ValueError(f"unknown shape {shape!r}")


def pixel_box(scene: Scene, index: int, frame: int | None = None) -> tuple[float, float, float, float]:
    """The object's tight bounding box in px (unclamped)."""
    cx, cy, r = centre(scene, index, frame)
    pts = _polygon(scene.objects[index].shape, cx, cy, r)
    if pts is None:
        return cx - r, cy - r, cx + r, cy + r
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def to_scale(box: tuple[float, float, float, float], region: tuple[int, int, int, int] | None = None) -> list[int]:
    """A px box to the 0-1000 scale of `region` (default: the whole canvas); clamped, never empty."""
    ox, oy, x2r, y2r = region or (0, 0, CANVAS, CANVAS)
    w, h = x2r - ox, y2r - oy
    x1 = min(max(math.floor((box[0] - ox) / w * BOX_SCALE), 0), BOX_SCALE - 1)
    y1 = min(max(math.floor((box[1] - oy) / h * BOX_SCALE), 0), BOX_SCALE - 1)
    x2 = min(max(math.ceil((box[2] - ox) / w * BOX_SCALE), x1 + 1), BOX_SCALE)
    y2 = min(max(math.ceil((box[3] - oy) / h * BOX_SCALE), y1 + 1), BOX_SCALE)
    return [x1, y1, x2, y2]


def object_box(scene: Scene, index: int, region: tuple[int, int, int, int] | None = None) -> list[int]:
    """0-1000 box of an object (video: over all frames of the clip), relative to `region`."""
    if scene.objects[index].motion:
        boxes = [pixel_box(scene, index, f) for f in (0, NUM_FRAMES - 1)]
        box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    else:
        box = pixel_box(scene, index)
    return to_scale(box, region)


def crop_region(scene: Scene, index: int, side: int = CROP_SIDE) -> tuple[int, int, int, int]:
    """A `side` x `side` px window centred on the object, shifted to stay inside the canvas."""
    cx, cy, _ = centre(scene, index)
    x1 = min(max(round(cx - side / 2), 0), CANVAS - side)
    y1 = min(max(round(cy - side / 2), 0), CANVAS - side)
    return x1, y1, x1 + side, y1 + side


def salience_order(scene: Scene) -> list[int]:
    """Objects from most to least salient: larger first, then nearer the centre, then list order."""
    def key(i: int):
        cx, cy, r = centre(scene, i)
        return (-r, round(math.hypot(cx - CANVAS / 2, cy - CANVAS / 2), 3), i)
    return sorted(range(len(scene.objects)), key=key)


# ------------------------------------------------------------------ rendering

def _shade(colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(max(c - amount, 0) for c in colour)


def _draw_background(draw: ImageDraw.ImageDraw, bg: Background) -> None:
    ink, s, p = _shade(bg.colour, bg.shade), bg.spacing, bg.phase
    if bg.texture == "stripes":
        for k in range(-CANVAS, CANVAS, s):
            draw.line([(k + p, 0), (k + p + CANVAS, CANVAS)], fill=ink, width=1)
    elif bg.texture == "grid":
        for k in range(p % s, CANVAS, s):
            draw.line([(k, 0), (k, CANVAS)], fill=ink)
            draw.line([(0, k), (CANVAS, k)], fill=ink)
    elif bg.texture == "dots":
        for y in range(p % s, CANVAS, s):
            for x in range((p + y) % s, CANVAS, s):
                draw.point((x, y), fill=ink)
    elif bg.texture == "gradient":
        for y in range(CANVAS):
            draw.line([(0, y), (CANVAS, y)], fill=_shade(bg.colour, bg.shade * y // CANVAS))


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj, cx: float, cy: float, r: float) -> None:
    colour = COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif obj.shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(2, round(0.35 * r)))
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r), fill=colour)


def render(scene: Scene, frame: int | None = None) -> Image.Image:
    """The scene as a CANVAS x CANVAS RGB image (video: 0-based `frame`; still objects drawn first)."""
    img = Image.new("RGB", (CANVAS, CANVAS), scene.bg.colour)
    draw = ImageDraw.Draw(img)
    _draw_background(draw, scene.bg)
    order = sorted(range(len(scene.objects)), key=lambda i: (scene.objects[i].motion is not None, i))
    for i in order:
        _draw_object(draw, scene.objects[i], *centre(scene, i, frame))
    return img


def render_frames(scene: Scene) -> list[Image.Image]:
    return [render(scene, f) for f in range(NUM_FRAMES)]


def save_png(img: Image.Image, path) -> None:
    """PNG without metadata, so equal pixels give equal bytes."""
    img.save(path, format="PNG", compress_level=6)
