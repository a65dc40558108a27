"""Hard-negative mining and the held-out quick check, on the synthetic benchmark."""

import json

from embedrl.cli import main
from embedrl.core.io import read_jsonl
from embedrl.data.pairs import read_pairs
from embedrl.models.base import load_embedder


def _as_list(v):
    return [] if v in (None, "") else (v if isinstance(v, list) else [v])


def _target(row):
    return (row.get("pos_text") or "", row.get("pos_image_path") or "", json.dumps(row.get("pos_frames") or None))


def _negatives(row):
    texts, images, frames = (_as_list(row.get(f)) for f in ("neg_text", "neg_image_path", "neg_frames"))
    n = max(len(texts), len(images), len(frames))
    at = lambda xs, i: xs[i] if i < len(xs) else None  # noqa: E731
    return [(at(texts, i) or "", at(images, i) or "", json.dumps(at(frames, i) or None)) for i in range(n)]


def test_mine_negatives_adds_same_dataset_negatives_and_skips_false_ones(tiny_clip_dir, synth_tiny_dir, tmp_path,
                                                                         capsys):
    pairs_path = synth_tiny_dir / "train" / "pairs.jsonl"
    before = pairs_path.read_bytes()
    out = synth_tiny_dir.parent / "mined.jsonl"  # beside the benchmark, so relative paths still resolve
    assert main(["data", "mine-negatives", "--model", str(tiny_clip_dir), "--pairs", str(pairs_path),
                 "--out", str(out), "--root", str(synth_tiny_dir), "-k", "2", "--margin", "0.0"]) == 0
    assert "mined negatives" in capsys.readouterr().out
    assert pairs_path.read_bytes() == before  # the input is left as it is
    original, mined = read_jsonl(pairs_path), read_jsonl(out)
    assert len(original) == len(mined)
    targets_by_dataset = {}
    for row in original:
        targets_by_dataset.setdefault(row["dataset"], set()).add(_target(row))
    added = 0
    for old, new in zip(original, mined):
        n_old = len(_negatives(old))
        for neg in _negatives(new)[n_old:]:
            added += 1
            assert neg in targets_by_dataset[old["dataset"]]  # a positive of the same dataset
            assert neg != _target(old)  # never the pair's own positive
        assert len(_negatives(new)) - n_old <= 2
    assert added > len(original)  # most pairs got negatives
    pairs, skipped = read_pairs(out, root=synth_tiny_dir)
    assert len(pairs) == len(original) and not skipped
    # a mined negative brings its T-CoT annotation (it was some pair's annotated positive)
    pos_tcot = {_target(row): row["pos_tcot"] for row in original}
    for old, new, pair in zip(original, mined, pairs):
        assert len(pair.neg_tcots) == len(pair.negs)
        assert new["neg_tcot"][:len(old["neg_tcot"])] == old["neg_tcot"]
        for neg, tcot in list(zip(_negatives(new), new["neg_tcot"]))[len(_negatives(old)):]:
            assert tcot == pos_tcot[neg]

    # with a huge margin every candidate counts as a likely false negative: nothing is mined
    strict = tmp_path / "strict.jsonl"
    assert main(["data", "mine-negatives", "--model", str(tiny_clip_dir), "--pairs", str(pairs_path),
                 "--out", str(strict), "--root", str(synth_tiny_dir), "--margin", "5"]) == 0
    assert read_jsonl(strict) == original


def test_eval_quick_prints_hit1_per_set(tiny_clip_dir, synth_tiny_dir, tmp_path, capsys):
    out = tmp_path / "quick.json"
    assert main(["-q", "eval", "quick", "--model", str(tiny_clip_dir), "--data", str(synth_tiny_dir),
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    scores = json.loads(out.read_text())
    assert set(scores) == {"Synth-T2I", "Synth-I2T", "Synth-VQA", "Synth-Grounding", "Synth-Composed",
                           "Synth-CLS", "Synth-VideoRet", "overall"}
    assert all(0 <= v <= 100 for v in scores.values())
    assert abs(scores["overall"] - sum(v for k, v in scores.items() if k != "overall") / 7) < 1e-9
    for name in scores:
        assert name in printed
    # the same numbers as the full harness computes
    from embedrl.eval.mmeb import evaluate

    run = evaluate(load_embedder(str(tiny_clip_dir)), synth_tiny_dir / "registry.yaml", synth_tiny_dir,
                   tmp_path / "full", datasets=["Synth-VQA"])
    assert abs(100 * run.results["metrics"]["image"]["Synth-VQA"]["hit@1"] - scores["Synth-VQA"]) < 1e-6
