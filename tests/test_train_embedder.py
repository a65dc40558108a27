"""Contrastive Embedder training: GradCache equivalence, cross-process negatives, resume, LoRA, bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch
from faults import kill_when
from PIL import Image, ImageDraw

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import parse_tcot
from embedrl.data.pairs import read_pairs
from embedrl.models.base import load_embedder
from embedrl.train.data import DatasetBatchSampler, PairCollator, PairDataset, check_tcot_coverage
from embedrl.train.embedder import ContrastiveModel, EmbedderTrainer, build_config
from embedrl.train.losses import InfoNCELoss, contrastive_logits

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """48 caption->image pairs over two datasets, one hard negative each, T-CoT annotations."""
    root = tmp_path_factory.mktemp("pairs")
    rows = []
    for i in range(48):
        color, shape = COLORS[i % 6], ["circle", "square"][(i // 6) % 2]
        img = Image.new("RGB", (112, 112), "white")
        draw = ImageDraw.Draw(img)
        box = (10 + i % 5 * 8, 20, 70 + i % 5 * 8, 80)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color)
        img.save(root / f"{i}.png")
        rows.append({"qry": f"a {color} {shape}", "pos_text": "", "pos_image_path": f"{i}.png",
                     "neg_image_path": f"{(i + 1) % 48}.png", "dataset": "t2i" if i % 2 else "i2t",
                     "qry_tcot": f'<thinking>{{"text_keywords": ["{color}"]}}</thinking>'
                                 f"<rethink>colour matters</rethink><answer>{shape}</answer>"})
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _trainer(spec, pairs, chunk, tmp_path):
    torch.manual_seed(0)
    embedder = load_embedder(str(spec))
    config = build_config(None, [f"model={spec}", "train_data=unused", f"output_dir={tmp_path}",
                                 f"gradcache_chunk_size={chunk}", "use_cpu=true"])
    trainer = EmbedderTrainer(model=ContrastiveModel(embedder, 0.05, False), args=config,
                              train_dataset=PairDataset(pairs),
                              data_collator=PairCollator(embedder, 1, True, chunk), loss_fn=InfoNCELoss())
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


@pytest.mark.parametrize("preset", ["tiny_clip_dir", "tiny_vlm_embedder_dir"])
def test_gradcache_equals_full_batch(preset, pairs_file, tmp_path, request):
    spec = request.getfixturevalue(preset)
    pairs, _ = read_pairs(pairs_file)
    results = []
    for chunk in (0, 5):  # 12 queries + 24 targets in chunks of 5, vs one pass
        trainer = _trainer(spec, pairs, chunk, tmp_path)
        loss = trainer.training_step(trainer.model, trainer.data_collator(pairs[:12]))
        results.append((loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                                      if p.grad is not None}))
    (loss_full, grads_full), (loss_gc, grads_gc) = results
    assert abs(loss_full - loss_gc) < 1e-4
    assert grads_full.keys() == grads_gc.keys() and len(grads_full) > 10
    for name in grads_full:
        assert torch.allclose(grads_full[name], grads_gc[name], atol=1e-4), name


def _distributed_worker(rank, world, port, queue):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(rank)
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(3 + rank, 8), dim=-1).requires_grad_()  # 0 or 1 hard negative
    q2t, labels, t2q, _ = contrastive_logits(q, t, n_pos=3, scale=10.0)
    loss = InfoNCELoss()(q, t, 3, 10.0)
    loss.backward()
    # numpy copies: torch tensors would be shared by file descriptor, gone once this process exits
    queue.put((rank, tuple(q2t.shape), labels.tolist(), tuple(t2q.shape),
               *(x.detach().numpy().copy() for x in (q, t, q.grad, t.grad))))
    dist.destroy_process_group()


def test_cross_process_negatives_cover_the_global_batch_with_gradient():
    """2 gloo processes: logits span both processes' candidates; gradients match one big batch."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_distributed_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, *rest = queue.get(timeout=120)
        results[rank] = rest[:3] + [torch.from_numpy(a) for a in rest[3:]]
    for p in procs:
        p.join(30)
    # rank 0 has 3 positives + 0 negatives, rank 1 has 3 positives + 1 negative: 7 global candidates
    for rank, offset in ((0, 0), (1, 3)):
        q2t_shape, labels, t2q_shape = results[rank][:3]
        assert q2t_shape == (3, 7) and t2q_shape == (3, 6)
        assert labels == [offset, offset + 1, offset + 2]
    # Reference: one process holding the global batch, loss = sum of the two local losses.
    qs = [results[r][3].clone().requires_grad_() for r in (0, 1)]
    ts = [results[r][4].clone().requires_grad_() for r in (0, 1)]
    cands = torch.cat([ts[0][:3], ts[1][:3], ts[1][3:]])
    all_q, all_p = torch.cat(qs), torch.cat([ts[0][:3], ts[1][:3]])
    total = 0
    for r in (0, 1):
        labels = torch.arange(3) + 3 * r
        total = total + (torch.nn.functional.cross_entropy(10 * qs[r] @ cands.T, labels)
                         + torch.nn.functional.cross_entropy(10 * ts[r][:3] @ all_q.T, labels)) / 2
    total.backward()
    for r in (0, 1):
        assert torch.allclose(results[r][5], qs[r].grad, atol=1e-5)
        assert torch.allclose(results[r][6], ts[r].grad, atol=1e-5)
    assert results[0][6].abs().sum() > 0 and all_p.shape == (6, 8)


def test_batches_come_from_one_dataset_each_with_weights():
    groups = {"a": list(range(0, 10)), "b": list(range(10, 40))}
    batches = list(DatasetBatchSampler(groups, 4, seed=1))
    assert len(batches) == 3 + 8
    assert all(set(b) <= set(groups["a"]) or set(b) <= set(groups["b"]) for b in batches)
    assert batches == list(DatasetBatchSampler(groups, 4, seed=1))  # deterministic for a seed
    only_a = list(DatasetBatchSampler(groups, 4, weights={"a": 1.0}, seed=1))
    assert all(set(b) <= set(groups["a"]) for b in only_a)
    with pytest.raises(EmbedrlError, match="unknown datasets"):
        DatasetBatchSampler(groups, 4, weights={"c": 1.0})


def test_hard_negatives_are_conditioned_on_their_own_tcots(tiny_clip_dir, caplog):
    """With use_tcot, a positive with evidence against bare negatives is a shortcut; negatives get theirs."""
    from embedrl.core.items import Pair

    tcot = '<thinking>{"text_keywords": ["%s"]}</thinking><rethink>r</rethink><answer>%s</answer>'
    pair = Pair(query=Item(text="a red circle"), pos=Item(text="red circle"), negs=[Item(text="blue circle")],
                qry_tcot=tcot % ("red", "red"), pos_tcot=tcot % ("red", "red"), neg_tcots=[tcot % ("blue", "blue")])
    embedder = load_embedder(str(tiny_clip_dir))
    batch = PairCollator(embedder, hard_negatives=1, use_tcot=True)([pair])
    expected = embedder.collate([pair.pos, pair.negs[0]], [parse_tcot(pair.pos_tcot), parse_tcot(pair.neg_tcots[0])])
    assert torch.equal(batch["target_chunks"][0]["input_ids"], expected["input_ids"])
    with caplog.at_level("WARNING", logger="embedrl.train.data"):
        check_tcot_coverage([pair], hard_negatives=1)
        assert not caplog.records
        pair.neg_tcots = []
        check_tcot_coverage([pair], hard_negatives=1)
    assert "1 of 1 hard negatives have no T-CoT" in caplog.text


def _cli_args(spec, pairs_file, out, *extra):
    return [f"model={spec}", f"train_data={pairs_file}", f"output_dir={out}", "per_device_train_batch_size=8",
            "learning_rate=1e-3", "logging_steps=5", "use_cpu=true", "dataloader_num_workers=0", *extra]


def test_train_clip_improves_retrieval_and_saves_a_loadable_model(tiny_clip_dir, pairs_file, tmp_path):
    pairs, _ = read_pairs(pairs_file)

    captions = sorted({p.query.text for p in pairs})  # 12 distinct captions, 4 images each

    def accuracy(embedder):  # image -> caption, chance 1/12
        images = embedder.encode([p.pos for p in pairs])
        texts = embedder.encode([Item(text=c) for c in captions])
        predicted = (images @ texts.T).argmax(1).tolist()
        return sum(captions[j] == p.query.text for j, p in zip(predicted, pairs)) / len(pairs)

    before = accuracy(load_embedder(str(tiny_clip_dir)))
    assert main(["train", "embedder", *_cli_args(tiny_clip_dir, pairs_file, tmp_path, "max_steps=60",
                                                  "save_steps=1000", "temperature=0.05")]) == 0
    trained = load_embedder(str(tmp_path))
    assert accuracy(trained) > max(before, 1 / 12) + 0.25


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_clip_dir, pairs_file, tmp_path):
    steps = ["max_steps=24", "save_steps=4", "save_total_limit=20"]
    def command(out):  # both runs in fresh processes, so torch settings of other tests cannot differ
        return [sys.executable, "-m", "embedrl", "train", "embedder", *_cli_args(tiny_clip_dir, pairs_file, out, *steps)]

    reference = tmp_path / "reference"
    subprocess.run(command(reference), check=True, capture_output=True, timeout=300)
    out = tmp_path / "killed"
    cmd = command(out)
    assert kill_when(cmd, out / "checkpoint-8" / "trainer_state.json") == -9
    assert not (out / "checkpoint-24").exists()

    result = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Continuing training from checkpoint" in result.stderr or "resuming from" in result.stderr
    state = json.loads((out / "checkpoint-24" / "trainer_state.json").read_text())
    assert state["global_step"] == 24
    assert load_embedder(str(out)).fingerprint() == load_embedder(str(reference)).fingerprint()


def test_vlm_lora_trains_adapters_only_and_reloads(tiny_vlm_embedder_dir, pairs_file, tmp_path):
    assert main(["train", "embedder", *_cli_args(tiny_vlm_embedder_dir, pairs_file, tmp_path, "max_steps=3",
                                                  "lora=true", "lora_r=4", "use_tcot=true")]) == 0
    assert (tmp_path / "adapter_config.json").is_file()
    trained, base = load_embedder(str(tmp_path)), load_embedder(str(tiny_vlm_embedder_dir))
    assert trained.is_lora
    pairs, _ = read_pairs(pairs_file)
    items = [p.query for p in pairs[:4]]
    assert not torch.allclose(trained.encode(items), base.encode(items), atol=1e-4)


def test_bad_pairs_line_names_file_and_line_or_is_skipped(tiny_clip_dir, pairs_file, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    lines = pairs_file.read_text().splitlines()
    lines[3] = json.dumps({"qry": "x", "pos_image_path": "missing.png"})
    bad.write_text("\n".join(lines) + "\n")
    for name in os.listdir(pairs_file.parent):
        if name.endswith(".png"):
            os.symlink(pairs_file.parent / name, tmp_path / name)
    args = _cli_args(tiny_clip_dir, bad, tmp_path / "out", "max_steps=1")
    assert main(["train", "embedder", *args]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:4" in err and "image not found" in err and "--skip-bad" in err
    assert main(["train", "embedder", "--skip-bad", *args]) == 0
    assert main(["train", "embedder", *args, "no_such_key=1"]) == 1
    assert "unknown config key" in capsys.readouterr().err


def test_resume_skips_and_removes_a_half_written_checkpoint(tmp_path):
    from embedrl.train.checkpoints import last_complete_checkpoint

    for step, complete in ((4, True), (8, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    assert not (tmp_path / "checkpoint-12").exists()
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_two_process_training_scores_each_query_against_the_global_batch(tiny_clip_dir, pairs_file, tmp_path):
    """A real 2-process run (torchrun, gloo on CPU): logits span both processes' candidates."""
    runs = {}
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                    "--master_port", str(29500 + procs + os.getpid() % 1000)]
        cmd = [*launcher, "-m", "embedrl", "train", "embedder",
               *_cli_args(tiny_clip_dir, pairs_file, out, "max_steps=2", "logging_steps=1",
                          "per_device_train_batch_size=4", "hard_negatives=1")]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("saved embedder") == 1  # printed by rank 0 only
        logged = [row for row in json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
                  if "candidates_per_query" in row]
        runs[procs] = {row["candidates_per_query"] for row in logged}
    assert runs[1] == {8}    # 4 positives + 4 hard negatives of one process
    assert runs[2] == {16}   # ... of both processes, gathered with gradient


def test_tcot_dropout_leaves_whole_sides_raw(tiny_clip_dir):
    """Dropout drops a side's T-CoTs for every item of the batch at once (never the positive alone)."""
    from embedrl.core.items import Pair

    tcot = '<thinking>{"text_keywords": ["%s"]}</thinking><rethink>r</rethink><answer>%s</answer>'
    pairs = [Pair(query=Item(text=f"q{i}"), pos=Item(text=f"p{i}"), negs=[Item(text=f"n{i}")],
                  qry_tcot=tcot % ("x", "x"), pos_tcot=tcot % ("y", "y"), neg_tcots=[tcot % ("z", "z")])
             for i in range(3)]
    embedder = load_embedder(str(tiny_clip_dir))
    raw_q = embedder.collate([p.query for p in pairs])["input_ids"]
    raw_t = embedder.collate([p.pos for p in pairs] + [p.negs[0] for p in pairs])["input_ids"]
    collator = PairCollator(embedder, hard_negatives=1, use_tcot=True, tcot_dropout=0.5)
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        batch = collator(pairs)
        q, t = batch["query_chunks"][0]["input_ids"], batch["target_chunks"][0]["input_ids"]
        q_raw = [torch.equal(a, b) for a, b in zip(q, raw_q)]
        t_raw = [torch.equal(a, b) for a, b in zip(t, raw_t)]
        assert len(set(q_raw)) == 1 and len(set(t_raw)) == 1  # all or nothing per side
        seen.add((q_raw[0], t_raw[0]))
    assert seen == {(True, True), (True, False), (False, True), (False, False)}
    always = PairCollator(embedder, hard_negatives=1, use_tcot=True)(pairs)
    assert not torch.equal(always["query_chunks"][0]["input_ids"], raw_q)


def test_tcot_negatives_pair_each_item_with_another_pairs_evidence(tiny_clip_dir):
    """Swapped-evidence candidates: the pair's own item with a batch partner's T-CoT, on both sides;
    none where the partner's T-CoT says the same, none on a side left raw."""
    from embedrl.core.items import Pair

    tcot = '<thinking>{"text_keywords": ["%s"]}</thinking><rethink>r</rethink><answer>%s</answer>'
    words = ["red", "blue", "blue"]  # pairs 1 and 2 share their evidence: no swap between them
    pairs = [Pair(query=Item(text=f"q{i}"), pos=Item(text=f"p{i}"), qry_tcot=tcot % (w, w), pos_tcot=tcot % (w, w))
             for i, w in enumerate(words)]
    embedder = load_embedder(str(tiny_clip_dir))
    batch = PairCollator(embedder, use_tcot=True, tcot_negatives=1)(pairs)
    # partners i -> i+1: (0, 1) and (2, 0) differ, (1, 2) do not
    swapped = [(pairs[0], pairs[1]), (pairs[2], pairs[0])]
    for side, item, key in (("query_chunks", "query", "qry_tcot"), ("target_chunks", "pos", "pos_tcot")):
        expected = embedder.collate([getattr(p, item) for p in pairs] + [getattr(p, item) for p, _ in swapped],
                                    [parse_tcot(getattr(p, key)) for p in pairs]
                                    + [parse_tcot(getattr(o, key)) for _, o in swapped])
        assert torch.equal(batch[side][0]["input_ids"], expected["input_ids"])
    assert batch["n_pos"] == 3
    raw = PairCollator(embedder, use_tcot=False, tcot_negatives=1)(pairs)
    assert raw["query_chunks"][0]["input_ids"].shape[0] == 3 and raw["target_chunks"][0]["input_ids"].shape[0] == 3


def test_query_side_negatives_are_candidates_for_targets_only():
    q = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)  # 3 queries + 2 query-side negatives
    t = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)  # 3 positives + 1 hard negative
    q2t, labels, t2q, _ = contrastive_logits(q, t, n_pos=3, scale=10.0)
    assert q2t.shape == (3, 4) and t2q.shape == (3, 5) and labels.tolist() == [0, 1, 2]
    assert torch.allclose(t2q[:, 3:], 10.0 * t[:3] @ q[3:].T)
    # a query-side negative that copies the right query makes the target -> query loss worse
    near = torch.cat([q[:3], q[:1]])
    assert InfoNCELoss()(near, t, 3, 10.0) > InfoNCELoss()(q[:3], t, 3, 10.0)


def test_embed_rl_training_saves_its_format_and_reloads_to_the_trained_vectors(tiny_qwen3vl_dir, pairs_file,
                                                                                tmp_path):
    """A bare Qwen3-VL trains in the embed-rl format (the default for VLMs embedrl trains); the saved
    model records it and embeds exactly as the trained one did, also without its embedrl.json."""
    from embedrl.train.embedder import training_format

    config = build_config(None, _cli_args(tiny_qwen3vl_dir, pairs_file, tmp_path, "max_steps=3", "use_tcot=true"))
    assert training_format(config.model, config.format) == "embed-rl"
    assert training_format(config.model, "gme") == "gme"
    pairs, _ = read_pairs(pairs_file)
    embedder = load_embedder(config.model, format="embed-rl")
    trainer = EmbedderTrainer(model=ContrastiveModel(embedder, config.temperature, False), args=config,
                              train_dataset=PairDataset(pairs), data_collator=PairCollator(embedder, 1, True),
                              loss_fn=InfoNCELoss())
    items = [p.query for p in pairs[:3]] + [p.pos for p in pairs[:3]]
    tcots = [parse_tcot(p.qry_tcot) for p in pairs[:3]] + [None] * 3
    before = embedder.encode(items, tcots)
    trainer.train()
    trainer.save_model(str(tmp_path))
    trained = embedder.encode(items, tcots)
    assert (trained - before).abs().max() > 1e-3
    assert json.loads((tmp_path / "embedrl.json").read_text())["format"] == "embed-rl"
    again = load_embedder(str(tmp_path))
    assert again.format.name == "embed-rl"
    assert (again.encode(items, tcots) - trained).abs().max() <= 1e-5
    (tmp_path / "embedrl.json").unlink()  # Embed-RL's own checkpoints have none: the config's emb_token_ids tells
    assert (load_embedder(str(tmp_path)).encode(items, tcots) - trained).abs().max() <= 1e-5
