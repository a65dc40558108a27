"""Does a reasoner apply a composed query's edit? What its query T-CoTs name on the Composed set.

A held-out composed query is a picture and an edit ("replace the rhombus at the bottom with a box
of the same colour"); what it must match is the picture after the change. For each query whose
edit changes a colour or a shape, the reasoner's greedy query T-CoT (keywords and answer) is read
for the edited object as the change leaves it ("yellow square") and as the query's own picture
shows it ("yellow diamond": the unchanged picture is one of the query's hard negatives). A T-CoT
that names the latter, once usable, steers the embedder toward that negative.

    python -m embedrl.lab.diagnostics.composed_reading --data runs/synth_heldout --reasoner runs/ablation_warm/seed0/sft \\
        --reasoner runs/ablation_warm/seed0/eg_rl
"""

from __future__ import annotations

import argparse

from embedrl.core.tcot import usable_tcot
from embedrl.lab.diagnostics.heldout import word_changing_edits
from embedrl.models.reasoner import load_reasoner


def read_edits(reasoner, edits: list[tuple]) -> dict[str, float]:
    """Shares (%) of the (query, before, after) edits whose T-CoT is usable, names the result, names the unchanged object."""
    queries = [query for query, _, _ in edits]
    tcots = reasoner.generate(queries, role="query", use_tcot_cache=False)
    counts = {"usable": 0, "names the result": 0, "names the unchanged object": 0}
    for (query, before, after), tcot in zip(edits, tcots, strict=True):
        words = " ".join([*tcot.keywords, tcot.answer]) if tcot is not None else ""
        counts["usable"] += usable_tcot(tcot, query) is not None
        counts["names the result"] += after in words
        counts["names the unchanged object"] += before in words
    return {k: 100 * v / len(queries) for k, v in counts.items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="synthetic benchmark directory")
    p.add_argument("--reasoner", action="append", required=True, help="reasoner directory (repeat to compare)")
    p.add_argument("--queries", type=int, default=200, help="composed queries to read before keeping those "
                                                             "whose edit changes colour or shape (default 200)")
    args = p.parse_args(argv)
    edits = word_changing_edits(args.data, args.queries)
    print(f"{len(edits)} composed queries whose edit changes a colour or shape\n")
    print("| reasoner | usable | names the result | names the unchanged object |\n|---|---|---|---|")
    rows = {}
    for path in args.reasoner:
        rows[path] = read_edits(load_reasoner(path, device="cpu"), edits)
        print(f"| {path} | " + " | ".join(f"{v:.1f}%" for v in rows[path].values()) + " |", flush=True)
    return rows


if __name__ == "__main__":
    main()
