"""Does a reasoner read its text? The referring expressions of a synthetic benchmark's Grounding set,
and the edits of its Composed set.

Each held-out Grounding query is a picture and a phrase naming one of its objects in synonyms
("the lemon hexagon at the centre"). Asked with the warm-up's refer prompt, a reasoner that reads
the phrase names that object (its colour and shape); one that only looks names the picture's most
salient object, which the caption prompt's first object measures in the same run. The referred
object comes from the generic annotator (benchmark version 3), rebuilt from the generator.

    python -m embedrl.lab.diagnostics.reading --data runs/synth_heldout --reasoner runs/ablation_warm/warmup [--reasoner ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm.auto import tqdm

from embedrl.core.errors import EmbedrlError
from embedrl.data.readers import read_task
from embedrl.eval.mmeb import load_specs
from embedrl.lab.diagnostics.heldout import annotator_tcots, media_key, word_changing_edits
from embedrl.lab.synth.benchmark import read_meta
from embedrl.lab.warmup import CAPTION_PROMPT, EDIT_PROMPT, REFER_PROMPT, warmup_messages
from embedrl.models.reasoner import load_reasoner


def first_object(reasoner, queries, prompts: list[str], batch_size: int = 16) -> list[str]:
    """The first object each greedy answer names, each query asked with its prompt."""
    tok, out = reasoner.processor.tokenizer, []
    for s in tqdm(range(0, len(queries), batch_size), desc="generating", unit="batch", disable=None):
        batch = queries[s:s + batch_size]
        texts = [reasoner.processor.apply_chat_template(warmup_messages(prompt), tokenize=False,
                                                        add_generation_prompt=True)
                 for prompt in prompts[s:s + batch_size]]
        enc = reasoner.processor(text=texts, images=[q.load_image() for q in batch], padding=True,
                                 padding_side="left", return_tensors="pt")
        with torch.inference_mode():
            ids = reasoner.model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
        out += [d.split(";")[0] for d in tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="synthetic benchmark directory (version 3 or later)")
    p.add_argument("--reasoner", action="append", required=True, help="reasoner directory (repeat to compare)")
    p.add_argument("--queries", type=int, default=160, help="Grounding and Composed queries to read, each (default 160)")
    args = p.parse_args(argv)
    meta = read_meta(Path(args.data)) or {}
    if meta.get("version", 0) < 3:
        raise EmbedrlError(f"{args.data} is not a synthetic benchmark of version 3 or later: its annotator does not name the "
                           "referred object; regenerate it with `embedrl data synth --overwrite`")
    specs = {s.name: s for s in load_specs(Path(args.data) / "registry.yaml")}
    queries = read_task(specs["Synth-Grounding"], Path(args.data)).queries[:args.queries]
    ann = annotator_tcots(seed=meta["seed"], size=meta["size"])
    gold = [ann[media_key(q.text, q.image, q.frames)].keywords[-1] for q in queries]  # "yellow hexagon"
    composed, before, after = zip(*word_changing_edits(args.data, args.queries))
    asked = {"refer": [REFER_PROMPT.format(expr=q.text) for q in queries], "caption": [CAPTION_PROMPT] * len(queries),
             "edit": [EDIT_PROMPT.format(edit=q.text) for q in composed]}
    print(f"{len(queries)} Grounding queries, {len(composed)} Composed queries whose edit changes a colour or shape\n")
    print("| reasoner | names the referred object (refer prompt) | its caption's first object is it "
          "| names the edit's result (edit prompt) | names the unchanged object |\n|---|---|---|---|---|")
    rows = {}
    for path in args.reasoner:
        reasoner = load_reasoner(path, device="cpu")
        shares = [100 * sum(g in a for g, a in zip(gold, first_object(reasoner, queries, asked[task]))) / len(queries)
                  for task in ("refer", "caption")]
        answers = first_object(reasoner, composed, asked["edit"])
        shares += [100 * sum(g in a for g, a in zip(words, answers)) / len(composed) for words in (after, before)]
        print(f"| {path} | " + " | ".join(f"{v:.1f}%" for v in shares) + " |", flush=True)
        rows[path] = dict(zip(("names the referred object", "caption's first object", "names the edit's result",
                               "names the unchanged object"), shares, strict=True))
    return rows


if __name__ == "__main__":
    main()
