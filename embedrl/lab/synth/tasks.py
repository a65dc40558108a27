"""Synthetic tasks mirroring MMEB-V2 categories, the generic T-CoT annotator and the oracle evidence.

Each task is a builder `fn(ctx) -> Example | None`: one query, its gold candidate, hard
negatives that differ from the gold in exactly one detail (with that detail recorded), other
distractors the task naturally has, and the *oracle evidence* -- the keywords / boxes / key
frames that actually tell the gold from its hard negatives (for analysis only).

The *generic annotator* (`annotate`) writes the T-CoT a teacher VLM would: it looks at one
side only (text: its content words; image: the 1-2 most salient objects and their boxes;
image with a question, expression or edit: the objects the text is about, as a teacher that reads
the text finds them; video: the most salient moving object and a few key frames) and never at the
negatives, so its evidence is often incomplete for discrimination -- the gap EG-RL is meant to close.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from embedrl.core.tcot import TCoT
from embedrl.lab.synth import text as T
from embedrl.lab.synth.scenes import (
    COLOURS,
    NUM_FRAMES,
    SHAPES,
    SIZES,
    Scene,
    alternatives,
    crop_region,
    object_box,
    salience_order,
    sample_scene,
    variant,
)

STATIC_ATTRIBUTES = ("colour", "shape", "size", "position")


@dataclass(frozen=True)
class Side:
    """A query or candidate before it is written: text and/or a scene (image, crop or video)."""

    text: str = ""
    scene: Scene | None = None
    crop: tuple[int, int, int, int] | None = None  # px window of `scene` (grounding candidates)
    focus: int | None = None  # the object a crop is centred on
    about: tuple[int, ...] = ()  # the objects of `scene` that `text` names (image + text queries)
    # composed queries: the scene the edit asks for, where `about` is described as it is after the change
    # (what the target must show), boxed where it is in `scene`
    edited: Scene | None = None

    @property
    def key(self) -> tuple:
        return (self.text, self.scene.id if self.scene else None, self.crop)


@dataclass
class Example:
    query: Side
    gold: Side
    hard: list[tuple[Side, dict]]  # (candidate, how it differs from the gold)
    qry_ev: dict
    pos_ev: dict
    gold_scene: Scene | None = None  # the scene the gold shows or describes
    others: list[Side] = field(default_factory=list)  # task distractors (not one-detail)


@dataclass
class Ctx:
    rng: random.Random
    n_hard: int
    scenes: dict[str, Scene] = field(default_factory=dict)

    def keep(self, scene: Scene) -> str:
        self.scenes.setdefault(scene.id, scene)
        return scene.id


def evidence(keywords=(), boxes=(), frames=()) -> dict:
    """Evidence in the T-CoT thinking-JSON keys, de-duplicated, empty keys left out."""
    out: dict = {}
    kws = list(dict.fromkeys(k for k in keywords if k))
    bxs = [list(b) for b in dict.fromkeys(tuple(b) for b in boxes)]
    if kws:
        out["text_keywords"] = kws
    if bxs:
        out["bbox_2d"] = bxs
    if frames:
        out["key_frames"] = sorted(set(frames))
    return out


def evidence_tcot(ev: dict, answer: str, rethink: str) -> TCoT:
    return TCoT(keywords=list(ev.get("text_keywords", [])), boxes=[list(b) for b in ev.get("bbox_2d", [])],
                key_frames=list(ev.get("key_frames", [])), rethink=rethink, answer=answer)


def _diff(d: dict, scene: Scene | None) -> dict:
    return {**d, "scene": scene.id if scene else None}


def _hard_variants(ctx: Ctx, scene: Scene, pools: list[tuple[str, ...]], objects=None) -> list[tuple[Scene, dict]]:
    """One one-detail variant per attribute pool (falling back to any attribute), all distinct."""
    out, avoid = [], {scene.id}
    for pool in pools:
        got = variant(scene, ctx.rng, pool, objects, avoid) or variant(scene, ctx.rng, STATIC_ATTRIBUTES, objects, avoid)
        if got is None:
            continue
        avoid.add(got[0].id)
        ctx.keep(got[0])
        out.append(got)
    return out


def _attribute_pools(ctx: Ctx, attrs=STATIC_ATTRIBUTES) -> list[tuple[str, ...]]:
    order = list(attrs)
    ctx.rng.shuffle(order)
    return [(order[k % len(order)],) for k in range(ctx.n_hard)]


def _scene_keywords(words: list[dict], diffs: list[dict]) -> list[str]:
    """The caption words naming each differing detail, plus the object's shape word."""
    out = []
    for d in diffs:
        w = words[d["object"]]
        out += [w.get(d["attribute"], ""), w["shape"]]
    return out


# ------------------------------------------------------------------ builders

def build_t2i(ctx: Ctx, query_is_text: bool = True) -> Example:
    s = sample_scene(ctx.rng)
    ctx.keep(s)
    style = ctx.rng.randrange(1 << 30)
    text, words = T.caption(s, style)
    variants = _hard_variants(ctx, s, _attribute_pools(ctx))
    diffs = [d for _, d in variants]
    text_ev = evidence(_scene_keywords(words, diffs))
    image_ev = evidence(boxes=[object_box(s, d["object"]) for d in diffs])
    if query_is_text:
        hard = [(Side(scene=v), _diff(d, v)) for v, d in variants]
        return Example(Side(text=text), Side(scene=s), hard, text_ev, image_ev, s)
    hard = [(Side(text=T.caption(v, style)[0]), _diff(d, v)) for v, d in variants]
    return Example(Side(scene=s), Side(text=text), hard, image_ev, text_ev, s)


def build_i2t(ctx: Ctx) -> Example:
    return build_t2i(ctx, query_is_text=False)


def _object_variants(ctx: Ctx, obj, index: int) -> list[tuple[str, dict]]:
    """Answer-text variants of one object: size flipped, two other colours, two other shapes."""
    changes = [("size", s) for s in SIZES if s != obj.size]
    changes += [("colour", c) for c in ctx.rng.sample([c for c in sorted(COLOURS) if c != obj.colour], 2)]
    changes += [("shape", x) for x in ctx.rng.sample([x for x in SHAPES if x != obj.shape], 2)]
    return [(T.canonical(replace(obj, **{a: v})), {"object": index, "attribute": a, "gold": obj.get(a), "neg": v})
            for a, v in changes]


def _value_answers(ctx: Ctx, attribute: str, gold: str, values, k: int = 5) -> list[tuple[str, dict]]:
    others = ctx.rng.sample([v for v in values if v != gold], k)
    return [(v, {"object": None, "attribute": attribute, "gold": gold, "neg": v}) for v in others]


def _neighbour(scene: Scene, anchor: int, direction: str) -> int | None:
    """The nearest object in `direction` from `anchor` in the same row (left/right) or column (up/down)."""
    line = ("left", "center", "right") if direction in ("left", "right") else ("top", "center", "bottom")
    pos = scene.objects[anchor].position
    if pos not in line:
        return None
    step = -1 if direction in ("left", "up") else 1
    where = {o.position: i for i, o in enumerate(scene.objects)}
    k = line.index(pos) + step
    while 0 <= k < len(line):
        if line[k] in where:
            return where[line[k]]
        k += step
    return None


def build_vqa(ctx: Ctx) -> Example | None:
    rng = ctx.rng
    s = sample_scene(rng)
    ctx.keep(s)
    kind = rng.choice(("what", "colour", "shape", "count", "relation"))
    index = rng.randrange(len(s.objects))
    obj = s.objects[index]
    about = (index,)  # the objects the question names
    if kind == "relation":
        options = [(d, a) for a in range(len(s.objects)) for d in ("left", "right", "up", "down")
                   if _neighbour(s, a, d) is not None]
        if not options:
            return None
        direction, anchor = rng.choice(options)
        index = _neighbour(s, anchor, direction)
        obj = s.objects[index]
        question, qwords = T.question_about("relation", s, None, rng, (direction, anchor))
        about = (anchor, index)
    elif kind == "count":
        what = rng.choice(("all", "colour", "shape"))
        present = rng.random() < 0.75
        if what == "colour":
            value = rng.choice([o.colour for o in s.objects] if present else sorted(COLOURS))
            counted = [i for i, o in enumerate(s.objects) if o.colour == value]
        elif what == "shape":
            value = rng.choice([o.shape for o in s.objects] if present else SHAPES)
            counted = [i for i, o in enumerate(s.objects) if o.shape == value]
        else:
            value, counted = None, list(range(len(s.objects)))
        question, qwords = T.question_about("count", s, None, rng, (what, value))
        numbers = T.NUMBER_WORDS[1:7] if what == "all" else T.NUMBER_WORDS[0:6]
        answer = T.NUMBER_WORDS[len(counted)]
        hard = _value_answers(ctx, "count", answer, numbers)
        ev_q = evidence(qwords, [object_box(s, i) for i in counted])
        return Example(Side(text=question, scene=s, about=tuple(counted)), Side(text=answer),
                       [(Side(text=a), _diff(d, None)) for a, d in hard], ev_q, evidence([answer]), s)
    else:
        question, qwords = T.question_about(kind, s, index, rng)
    if kind in ("colour", "shape"):
        answer = obj.colour if kind == "colour" else obj.shape
        values = sorted(COLOURS) if kind == "colour" else SHAPES
        hard = [(a, {**d, "object": index}) for a, d in _value_answers(ctx, kind, answer, values)]
        pos_words = [answer]
    else:  # what / relation: the answer names the object
        answer = T.canonical(obj)
        hard = _object_variants(ctx, obj, index)
        rng.shuffle(hard)
        pos_words = [obj.size, obj.colour, obj.shape]
    return Example(Side(text=question, scene=s, about=about), Side(text=answer),
                   [(Side(text=a), _diff(d, None)) for a, d in hard],
                   evidence(qwords, [object_box(s, i) for i in about]), evidence(pos_words), s)


def build_grounding(ctx: Ctx) -> Example:
    rng = ctx.rng
    s = sample_scene(rng)
    ctx.keep(s)
    index = rng.randrange(len(s.objects))
    expr, words = T.refer(s, index, rng)
    region = crop_region(s, index)
    variants = _hard_variants(ctx, s, _attribute_pools(ctx, ("colour", "shape", "size")), objects=[index])
    hard = [(Side(scene=v, crop=region, focus=index), _diff(d, v)) for v, d in variants]
    others = [Side(scene=s, crop=crop_region(s, j), focus=j) for j in range(len(s.objects)) if j != index]
    obj = s.objects[index]
    pos_ev = evidence([obj.get(d["attribute"]) for _, d in variants], [object_box(s, index, region)])
    return Example(Side(text=expr, scene=s, about=(index,)), Side(scene=s, crop=region, focus=index), hard,
                   evidence(list(words.values()), [object_box(s, index)]), pos_ev, s, others)


def build_composed(ctx: Ctx) -> Example:
    rng = ctx.rng
    s = sample_scene(rng)
    ctx.keep(s)
    gold, change = variant(s, rng, STATIC_ATTRIBUTES)
    ctx.keep(gold)
    i, attr, new = change["object"], change["attribute"], change["neg"]
    text, words = T.edit_text(s, i, attr, new, rng)
    hard = [(Side(scene=s), _diff({"object": i, "attribute": attr, "gold": new, "neg": change["gold"]}, s))]
    alt = [v for v in alternatives(s, i, attr) if v != new]
    if alt:
        v = rng.choice(alt)
        other = s.with_attr(i, attr, v)
        ctx.keep(other)
        hard.append((Side(scene=other), _diff({"object": i, "attribute": attr, "gold": new, "neg": v}, other)))
    rest = [j for j in range(len(gold.objects)) if j != i]
    avoid = {gold.id} | {h.scene.id for h, _ in hard}
    while len(hard) < ctx.n_hard:
        got = variant(gold, rng, STATIC_ATTRIBUTES, rest, avoid)
        if got is None:
            break
        ctx.keep(got[0])
        avoid.add(got[0].id)
        hard.append((Side(scene=got[0]), _diff(got[1], got[0])))
    rng.shuffle(hard)
    qry_ev = evidence(list(words.values()), [object_box(s, i)])
    pos_ev = evidence([str(new)], [object_box(gold, i)])
    return Example(Side(text=text, scene=s, about=(i,), edited=gold), Side(scene=gold), hard, qry_ev, pos_ev, gold)


def build_cls(ctx: Ctx) -> Example:
    rng = ctx.rng
    n = rng.randint(3, 5)
    k = rng.randint(2, n)
    major = rng.choice(SHAPES)
    shapes = [major] * k + rng.sample([x for x in SHAPES if x != major], n - k)
    rng.shuffle(shapes)
    base = sample_scene(rng, n_objects=n)
    s = base
    for j, shape in enumerate(shapes):
        s = s.with_attr(j, "shape", shape)
    ctx.keep(s)
    present = [x for x in dict.fromkeys(shapes) if x != major]
    absent = [x for x in SHAPES if x != major and x not in present]
    rng.shuffle(absent)
    hard = [(Side(text=T.SHAPE_PLURALS[x]), _diff({"object": None, "attribute": "shape", "gold": major, "neg": x}, None))
            for x in present + absent]
    qry_ev = evidence([major], [object_box(s, j) for j, x in enumerate(shapes) if x == major])
    return Example(Side(scene=s), Side(text=T.SHAPE_PLURALS[major]), hard, qry_ev,
                   evidence([T.SHAPE_PLURALS[major]]), s)


def build_video(ctx: Ctx) -> Example:
    rng = ctx.rng
    s = sample_scene(rng, video=True)
    ctx.keep(s)
    style = rng.randrange(1 << 30)
    text, words = T.caption(s, style)
    pools = [("motion",), STATIC_ATTRIBUTES, ("motion", *STATIC_ATTRIBUTES)][: ctx.n_hard]
    variants = _hard_variants(ctx, s, pools)
    rng.shuffle(variants)
    diffs = [d for _, d in variants]
    frames = [f for d in diffs for f in ((1, NUM_FRAMES) if d["attribute"] == "motion" else (1,))]
    pos_ev = evidence([str(d["gold"]) for d in diffs], frames=frames)
    hard = [(Side(scene=v), _diff(d, v)) for v, d in variants]
    return Example(Side(text=text), Side(scene=s), hard, evidence(_scene_keywords(words, diffs)), pos_ev, s)


# ------------------------------------------------------------------ generic annotator

def _object_phrase(scene: Scene, i: int) -> str:
    o = scene.objects[i]
    pos = T.POSITION_WORDS[o.position][0]
    return f"{T.canonical(o)} {pos}" + (f" moving {o.motion}" if o.motion else "")


def annotate(side: Side) -> TCoT:
    """The T-CoT a generic teacher writes for one side, without seeing the other side."""
    keywords = T.content_words(side.text, 8) if side.text else []
    s = side.scene
    if s is None:
        answer = side.text if len(keywords) <= 3 else " ".join(keywords[:6])
        return TCoT(keywords=keywords, rethink=f"The text is about {', '.join(keywords[:4]) or 'nothing specific'}.",
                    answer=answer)
    if s.video:
        movers = [i for i in salience_order(s) if s.objects[i].motion] or salience_order(s)
        o = s.objects[movers[0]]
        return TCoT(keywords=keywords + [f"{o.colour} {o.shape}", f"moving {o.motion}"],
                    key_frames=[1, NUM_FRAMES // 2, NUM_FRAMES],
                    rethink=f"The clip shows {_object_phrase(s, movers[0])}.",
                    answer=f"{o.colour} {o.shape} moving {o.motion}")
    if side.crop is not None:
        o = s.objects[side.focus]
        return TCoT(keywords=[f"{o.colour} {o.shape}"], boxes=[object_box(s, side.focus, side.crop)],
                    rethink=f"The crop shows {T.canonical(o)}.", answer=T.canonical(o, with_article=False))
    top = list(side.about) or salience_order(s)[:2]
    described = side.edited or s  # an edit's T-CoT says what the change makes, not what it replaces
    phrases = " and ".join(_object_phrase(described, i) for i in top)
    rethink = (f"After the change the picture shows {phrases}." if side.edited else
               f"The text is about {phrases}." if side.about else f"The most prominent objects are {phrases}.")
    return TCoT(keywords=keywords[:6] + [f"{described.objects[i].colour} {described.objects[i].shape}" for i in top],
                boxes=[object_box(s, i) for i in top], rethink=rethink,
                answer="; ".join(described.objects[i].describe() for i in top))


# ------------------------------------------------------------------ task table

@dataclass(frozen=True)
class Task:
    name: str
    category: str
    modality: str  # image | video
    scope: str  # local | global
    n_cands: int  # candidates per eval query, gold included
    qry_inst: str
    tgt_inst: str
    build: Callable[[Ctx], Example | None]
    notes: str


IMAGE_INST = "Represent the given image."
TASKS: tuple[Task, ...] = (
    Task("Synth-T2I", "I-RET", "image", "local", 8, "Find the picture that matches this description.", IMAGE_INST,
         build_t2i, "caption -> image; hard negatives change one object detail"),
    Task("Synth-I2T", "I-RET", "image", "local", 8, "Find a caption that describes the given picture.", "",
         build_i2t, "image -> caption; hard negatives are captions of one-detail variants"),
    Task("Synth-VQA", "I-QA", "image", "local", 6, "Answer the question about the picture.", "",
         build_vqa, "attribute / count / relation questions; candidates are text answers"),
    Task("Synth-Grounding", "I-VG", "image", "local", 8,
         "Select the region of the picture that shows the object described.", "Represent the given cropped image.",
         build_grounding, "image + referring expression -> region crop; negatives: one-detail crops, other objects"),
    Task("Synth-Composed", "I-RET", "image", "local", 8, "Find the picture that results from this change.",
         IMAGE_INST, build_composed, "image + modification text -> target image"),
    Task("Synth-CLS", "I-CLS", "image", "local", 8, "Classify the picture by the shape that appears most often.", "",
         build_cls, "image -> most frequent shape; all 8 labels are candidates"),
    Task("Synth-VideoRet", "V-RET", "video", "global", 4, "Find the video that matches this description.",
         "Represent the given video.", build_video,
         "text -> 8-frame clip, ranked against the whole pool; hard negatives change motion or one detail"),
)
TASK_NAMES = tuple(t.name for t in TASKS)
