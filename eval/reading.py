"""Does a reasoner read its text? The referring expressions of a synthetic benchmark's Grounding set.

Each held-out Grounding query is a picture and a phrase naming one of its objects in synonyms
("the lemon hexagon at the centre"). Asked with the warm-up's refer prompt, a reasoner that reads
the phrase names that object (its colour and shape); one that only looks names the picture's most
salient object, which the caption prompt's first object measures in the same run. The referred
object comes from the generic annotator (benchmark version 3), rebuilt from the generator.

    python eval/reading.py --data runs/synth_heldout --reasoner runs/ablation_warm/warmup [--reasoner ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm.auto import tqdm

from embedrl.data.synth import annotator_tcots, media_key, read_meta
from embedrl.errors import EmbedrlError
from embedrl.eval.mmeb import load_specs
from embedrl.eval.readers import read_task
from embedrl.models.reasoner import load_reasoner
from embedrl.train.reasoner_warmup import CAPTION_PROMPT, REFER_PROMPT, warmup_messages


def first_object(reasoner, queries, prompt: str | None, batch_size: int = 16) -> list[str]:
    """The first object each greedy answer names (refer prompt with the query's phrase, or the caption prompt)."""
    tok, out = reasoner.processor.tokenizer, []
    for s in tqdm(range(0, len(queries), batch_size), desc="generating", unit="batch", disable=None):
        batch = queries[s:s + batch_size]
        texts = [reasoner.processor.apply_chat_template(
            warmup_messages(prompt.format(expr=q.text) if prompt else CAPTION_PROMPT),
            tokenize=False, add_generation_prompt=True) for q in batch]
        enc = reasoner.processor(text=texts, images=[q.load_image() for q in batch], padding=True,
                                 padding_side="left", return_tensors="pt")
        with torch.inference_mode():
            ids = reasoner.model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
        out += [d.split(";")[0] for d in tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="synthetic benchmark directory (version 3 or later)")
    p.add_argument("--reasoner", action="append", required=True, help="reasoner directory (repeat to compare)")
    p.add_argument("--queries", type=int, default=160, help="Grounding queries to ask (default 160)")
    args = p.parse_args(argv)
    meta = read_meta(Path(args.data)) or {}
    if meta.get("version", 0) < 3:
        raise EmbedrlError(f"{args.data} is not a synthetic benchmark of version 3 or later: its annotator does not name the "
                           "referred object; regenerate it with `embedrl data synth --overwrite`")
    spec = {s.name: s for s in load_specs(Path(args.data) / "registry.yaml")}["Synth-Grounding"]
    queries = read_task(spec, Path(args.data)).queries[:args.queries]
    ann = annotator_tcots(seed=meta["seed"], size=meta["size"])
    gold = [ann[media_key(q.text, q.image, q.frames)].keywords[-1] for q in queries]  # "yellow hexagon"
    print("| reasoner | names the referred object (refer prompt) | its caption's first object is it |\n|---|---|---|")
    for path in args.reasoner:
        reasoner = load_reasoner(path, device="cpu")
        shares = [100 * sum(g in a for g, a in zip(gold, first_object(reasoner, queries, prompt))) / len(queries)
                  for prompt in (REFER_PROMPT, None)]
        print(f"| {path} | {shares[0]:.1f}% | {shares[1]:.1f}% |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
