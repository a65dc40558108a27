"""How much can evidence help this embedder at all? Raw input vs the oracle's and the annotator's T-CoTs.

The synthetic benchmark's `oracle.jsonl` holds, per eval query, a T-CoT built from the
details that separate the gold candidate from its hard negatives: the evidence a perfect
query-side reasoner would write. Scoring an embedder with those T-CoTs (candidates raw)
gives the ceiling that SFT and EG-RL reasoners are chasing on the query side.

The generic annotator's T-CoTs (what T-CoT SFT imitates) on both sides bound what an SFT
reasoner can give the embedder: if they do not beat raw input, no SFT reasoner will.

    python -m embedrl.lab.diagnostics.oracle_ceiling --embedder runs/quickstart/embedder --data runs/quickstart/synth
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from embedrl.core.errors import EmbedrlError
from embedrl.core.tcot import TCoT, parse_tcot
from embedrl.data.readers import read_task
from embedrl.eval.mmeb import evaluate_task, load_specs
from embedrl.lab.diagnostics.heldout import annotator_tcots, media_key
from embedrl.lab.synth.benchmark import read_meta
from embedrl.models.base import load_embedder


class OracleQueries:
    """Stands where a Reasoner would: returns the oracle's query T-CoTs of one eval set, in query order."""

    def __init__(self, tcots: list[TCoT]):
        self.tcots = tcots

    def generate(self, items, role="query", **_):
        if role != "query" or len(items) > len(self.tcots):
            raise EmbedrlError("the oracle only has T-CoTs for the eval queries")
        return self.tcots[:len(items)]


class Annotator:
    """Stands where a Reasoner would: the generic annotator's T-CoT of each eval item (either role)."""

    def __init__(self, tcots: dict):
        self.tcots = tcots

    def generate(self, items, role="query", **_):
        missing = [i for i in items if media_key(i.text, i.image, i.frames) not in self.tcots]
        if missing:
            raise EmbedrlError(f"{len(missing)} item(s) are not in this benchmark's eval sets (seed/size mismatch?)")
        return [self.tcots[media_key(i.text, i.image, i.frames)] for i in items]


def read_oracle(data: Path) -> dict[str, list[TCoT]]:
    by_set: dict[str, list[TCoT]] = {}
    with open(data / "oracle.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["split"] == "eval":
                by_set.setdefault(row["dataset"], []).append(parse_tcot(row["qry_tcot"]))
    return by_set


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", required=True, help="embedder directory (or open_clip:ARCH)")
    parser.add_argument("--data", default="runs/synth", help="synthetic benchmark folder (has oracle.jsonl)")
    parser.add_argument("--queries", type=int, default=100, help="first N queries of each set")
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not (data / "oracle.jsonl").is_file():
        raise SystemExit(f"{data} has no oracle.jsonl: point --data at a synthetic benchmark (embedrl data synth)")
    embedder, oracle = load_embedder(args.embedder), read_oracle(data)
    meta = read_meta(data) or {}
    annotator = Annotator(annotator_tcots(meta.get("seed", 0), meta.get("size", "small")))
    rows: dict[str, dict[str, float]] = {"raw": {}, "oracle query T-CoT": {}, "annotator T-CoT, both sides": {}}
    for spec in load_specs(data / "registry.yaml"):
        task = read_task(spec, data).head(args.queries)
        for name, reasoner, mode in (("raw", None, "none"), ("oracle query T-CoT", OracleQueries(oracle[spec.name]), "query"),
                                     ("annotator T-CoT, both sides", annotator, "both")):
            score, _, _ = evaluate_task(embedder, task, reasoner, mode, 64, ks=(1,))
            rows[name][spec.name] = 100 * score["hit@1"]
    for scores in rows.values():
        scores["overall"] = sum(scores.values()) / len(scores)
    sets = list(rows["raw"])
    print("| input | " + " | ".join(sets) + " |\n" + "|---" * (len(sets) + 1) + "|")
    for name, scores in rows.items():
        print(f"| {name} | " + " | ".join(f"{scores[s]:.1f}" for s in sets) + " |")
    return rows


if __name__ == "__main__":
    main()
