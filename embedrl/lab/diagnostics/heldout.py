"""What the generator knows of the held-out sets and the files do not show, rebuilt from it:
the generic annotator's T-CoT of every eval item and each composed query's edit. The
diagnostics beside this module read them; nothing here is read from disk but `meta.json`.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import TCoT
from embedrl.lab.synth.benchmark import eval_examples, read_meta
from embedrl.lab.synth.tasks import annotate


def media_key(text: str | None, image, frames) -> tuple[str, str, str]:
    """An eval item's identity across path roots: its text, image file name and clip folder name."""
    return (text or "", Path(str(image)).name if image else "", Path(str(frames[0])).parent.name if frames else "")


def annotator_tcots(seed: int = 0, size: str = "small") -> dict[tuple[str, str, str], TCoT]:
    """The generic annotator's T-CoT of every eval query and candidate of a benchmark, by `media_key`.

    What T-CoT SFT imitates, so scoring with these bounds what an SFT reasoner can give an
    embedder (`oracle_ceiling`). Rebuilt from the generator, nothing is read from disk."""
    out = {}
    for ex, media in eval_examples(seed, size):
        for side in [ex.query, ex.gold, *(s for s, _ in ex.hard), *ex.others]:
            out[media_key(side.text, media.image(side), media.frames(side))] = annotate(side)
    return out


def composed_edits(seed: int = 0, size: str = "small") -> dict[tuple[str, str, str], tuple[str, str]]:
    """Each held-out composed query's edited object as "colour shape", before and after the change,
    by the query's `media_key`; rebuilt from the generator (`composed_reading`)."""
    out = {}
    for ex, media in eval_examples(seed, size):
        if ex.query.edited is not None:
            (i,) = ex.query.about
            before, after = ex.query.scene.objects[i], ex.query.edited.objects[i]
            key = media_key(ex.query.text, media.image(ex.query), media.frames(ex.query))
            out[key] = (f"{before.colour} {before.shape}", f"{after.colour} {after.shape}")
    return out


def word_changing_edits(data: str | os.PathLike, max_queries: int | None = None) -> list[tuple[Item, str, str]]:
    """The first `max_queries` held-out composed queries of benchmark `data` whose edit changes the edited
    object's colour or shape, each with its words before and after (`reading`, `composed_reading`)."""
    from embedrl.data.readers import read_task
    from embedrl.eval.mmeb import load_specs

    meta = read_meta(Path(data))
    if meta is None:
        raise EmbedrlError(f"{data} is not a synthetic benchmark (no meta.json); make one with `embedrl data synth`")
    spec = {s.name: s for s in load_specs(Path(data) / "registry.yaml")}["Synth-Composed"]
    edits = composed_edits(seed=meta["seed"], size=meta["size"])
    out = []
    for query in read_task(spec, Path(data)).queries[:max_queries]:
        before, after = edits[media_key(query.text, query.image, query.frames)]
        if before != after:  # a size or position edit leaves the words as they were
            out.append((query, before, after))
    return out
