"""The Reasoner (generation, sampling, the T-CoT cache) and T-CoT SFT on the tiny preset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from embedrl.cli import main
from embedrl.core.items import Item
from embedrl.core.tcot import TCoT
from embedrl.core.tcot_cache import TCoTCache
from embedrl.data.pairs import read_pairs
from embedrl.lab.synth.benchmark import generate_benchmark
from embedrl.models.prompts import PROMPT_VERSION, build_messages, modality_of
from embedrl.models.reasoner import Reasoner, load_reasoner
from embedrl.train.reasoner_sft import make_dataset, sft_examples

RECIPE = Path(__file__).resolve().parents[1] / "train" / "reasoner_sft_tiny.yaml"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "bench"
    generate_benchmark(out, seed=0, size="tiny")
    return out


@pytest.fixture(scope="module")
def pairs(bench):
    return read_pairs(bench / "train" / "pairs.jsonl", root=bench)[0]


@pytest.fixture(scope="module", params=["tiny_reasoner_dir", "tiny_qwen3vl_dir"], ids=["qwen2-vl", "qwen3-vl"])
def reasoner(request) -> Reasoner:
    """The reasoner tests run on a Qwen2-VL and a Qwen3-VL model alike."""
    return load_reasoner(request.getfixturevalue(request.param), device="cpu")


@pytest.fixture(scope="module")
def items(pairs) -> list[Item]:
    """One text, one image(+text) and one video item from the synthetic pairs."""
    by_modality = {}
    for p in pairs:
        for item in (p.query, p.pos):
            by_modality.setdefault(modality_of(item), item)
    return [by_modality["text"], by_modality["image"], by_modality["video"]]


def test_generate_text_image_video_both_roles(reasoner, items):
    assert [i.modality for i in items][::2] == ["text", "video"] and items[1].image is not None
    for role in ("query", "target"):
        out = reasoner.generate(items, role=role, max_new_tokens=8)
        assert len(out) == len(items)
        for tcot in out:  # a random model writes junk: parsed, never raised
            assert isinstance(tcot, TCoT) and isinstance(tcot.raw, str)
            assert tcot.valid or tcot.reason
    with pytest.raises(Exception, match="role"):
        reasoner.generate(items, role="candidate")


def test_prompts_differ_by_role_and_modality(items):
    prompts = {(role, modality_of(i)): build_messages(i, role)[0][0]["content"][-1]["text"]
               for role in ("query", "target") for i in items}
    assert len(set(prompts.values())) == 6
    messages, images = build_messages(items[2], "query")
    assert len(images) == len(items[2].frames) == sum(p["type"] == "image" for p in messages[0]["content"])
    assert "Frame 1:" in str(messages) and "key_frames" in str(messages)
    page = Item(image=items[1].image, instruction="Retrieve the document page that answers the question.")
    assert modality_of(page) == "document" and modality_of(Item(image=items[1].image)) == "image"


def test_embed_rl_prompt_set_fills_the_papers_prompts_media_first(items, pairs, tiny_reasoner_dir, tmp_path):
    from embedrl.models import paper_prompts as paper

    text, image, video = items
    messages, images = build_messages(video, "query", prompt_set="embed-rl")
    content = messages[0]["content"]
    assert [p["type"] for p in content] == ["image"] * len(video.frames) + ["text"]  # no frame labels
    question = " ".join(p for p in (video.instruction, video.text) if p)
    assert content[-1]["text"] == paper.PROMPT_VIDEO_WITHOUT_ANSWER.format(
        video=f"{len(video.frames)} frames sampled at 2.0 FPS", question=question)
    assert '{"key_frames": [1, 4, 8]}' in content[-1]["text"]  # the template's {{ }} are literal braces
    target = build_messages(image, "target", prompt_set="embed-rl")[0][0]["content"][-1]["text"]
    assert target.startswith("You are a visual reasoning assistant. Given a task description and a positive image")
    assert "POSITIVE IMAGE OUTPUT: image provided" in target
    retrieval = Item(text="a dog runs on a beach", instruction="Find a video that contains the following visual content:")
    assert build_messages(retrieval, "query", prompt_set="embed-rl")[0][0]["content"][-1]["text"] == \
        paper.PROMPT_VIDEO_RETRIEVAL_WITHOUT_ANSWER.format(question=f"{retrieval.instruction} {retrieval.text}")
    default, paper_set = (load_reasoner(tiny_reasoner_dir, device="cpu", prompt_set=s) for s in ("default", "embed-rl"))
    assert default.cache_key[2] == PROMPT_VERSION and paper_set.cache_key[2].startswith("embed-rl-")
    paper_set.save_pretrained(tmp_path / "saved")  # the set is recorded: SFT, EG-RL and generation keep it
    assert load_reasoner(tmp_path / "saved", device="cpu").prompt_set.name == "embed-rl"
    examples, _ = sft_examples(pairs[:4], prompt_set="embed-rl")
    assert examples[0]["prompt"] == build_messages(pairs[0].query, "query", load=False, prompt_set="embed-rl")[0]
    with pytest.raises(Exception, match="unknown prompt set 'nope'; known prompt sets: default, embed-rl"):
        load_reasoner(tiny_reasoner_dir, device="cpu", prompt_set="nope")


def test_batched_generation_keeps_input_order(reasoner, items):
    together = reasoner.generate(items, role="query", batch_size=3, max_new_tokens=6)
    alone = [reasoner.generate([i], role="query", batch_size=1, max_new_tokens=6)[0] for i in items]
    assert [t.raw for t in together] == [t.raw for t in alone]


def test_num_samples_returns_a_list_per_item(reasoner, items):
    torch.manual_seed(0)
    out = reasoner.generate(items[:2], role="target", num_samples=3, max_new_tokens=8, temperature=1.0)
    assert len(out) == 2 and all(len(s) == 3 and all(isinstance(t, TCoT) for t in s) for s in out)
    assert len({t.raw for t in out[0]}) > 1  # sampled, not three copies of the greedy output


def test_cache_key_and_t_cot_cache_hit_on_second_pass(tiny_reasoner_dir, items, tmp_path):
    reasoner = load_reasoner(tiny_reasoner_dir, device="cpu", cache=tmp_path / "tcot.sqlite", max_new_tokens=8)
    rid, rhash, version = reasoner.cache_key
    assert rid == str(Path(tiny_reasoner_dir).resolve()) and len(rhash) == 16 and version == PROMPT_VERSION
    calls = []
    reasoner.model.register_forward_hook(lambda *a: calls.append(1))
    first = reasoner.generate(items, role="target")
    assert calls and reasoner.generated_items == len(items)
    calls.clear()
    second = reasoner.generate(items, role="target")
    assert not calls and reasoner.generated_items == len(items)  # nothing generated
    assert reasoner.cache.stats() == {"hits": len(items), "misses": len(items)}
    assert all(a.same_content(b) and a.valid == b.valid for a, b in zip(first, second))
    # the other role is a different cache entry; sampled calls bypass the cache
    reasoner.generate(items[:1], role="query")
    reasoner.generate(items[:1], role="target", num_samples=2)
    assert reasoner.generated_items == len(items) + 2
    # another process (index build, evaluation) reads the same entries
    with TCoTCache(tmp_path / "tcot.sqlite") as cache:
        again = cache.get_or_generate(items, "target", reasoner)
    assert reasoner.generated_items == len(items) + 2 and [t.answer for t in again] == [t.answer for t in first]


def test_modalities_leave_other_items_raw_without_generating(tiny_reasoner_dir, items, pairs, tmp_path):
    from embedrl.core.errors import EmbedrlError

    reasoner = load_reasoner(tiny_reasoner_dir, device="cpu", cache=tmp_path / "tcot.sqlite", max_new_tokens=8,
                             modalities=["image", "video"])
    out = reasoner.generate(items, role="target")  # text, image, video
    assert out[0] is None and isinstance(out[1], TCoT) and isinstance(out[2], TCoT)
    assert reasoner.generated_items == 2  # the text item was never generated for
    sampled = reasoner.generate(items[:2], role="query", num_samples=2, max_new_tokens=4)
    assert sampled[0] == [None, None] and len(sampled[1]) == 2 and reasoner.generated_items == 3
    assert reasoner.generate(items[:1], role="query") == [None] and reasoner.generated_items == 3
    # SFT trains on what the reasoner will be asked for
    examples, skipped = sft_examples(pairs, modalities=("image", "video"))
    everything, _ = sft_examples(pairs)
    assert 0 < len(examples) < len(everything) and skipped["other modality"] == len(everything) - len(examples)
    with pytest.raises(EmbedrlError, match="subset of"):
        load_reasoner(tiny_reasoner_dir, device="cpu", modalities=["pictures"])


def test_sft_examples_prompt_matches_generation_and_loss_is_on_the_t_cot(reasoner, pairs):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    video_pair = next(p for p in pairs if p.pos.frames)
    examples, skipped = sft_examples([video_pair])
    assert len(examples) == 2 and not skipped  # a query and a target example
    ds = make_dataset(examples)
    collator = DataCollatorForVisionLanguageModeling(reasoner.processor, completion_only_loss=True)
    batch = collator([ds[1]])  # the target: the video
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    prompt_ids = reasoner.collate([video_pair.pos], "target")["input_ids"][0]
    n = len(prompt_ids)
    assert torch.equal(ids[:n], prompt_ids)  # SFT sees exactly the generation prompt
    assert (labels[:n] == -100).all() and (labels[n:] != -100).all()
    completion = reasoner.processor.tokenizer.decode(ids[n:], skip_special_tokens=True)
    assert completion.strip() == video_pair.pos_tcot


def _sft(bench, model, out, *overrides: str) -> dict:
    argv = ["-q", "train", "reasoner-sft", "--config", str(RECIPE), f"model={model}",
            f"train_data={bench / 'train' / 'pairs.jsonl'}", f"data_root={bench}", f"output_dir={out}",
            "save_strategy='no'", "disable_tqdm=true", "logging_steps=1", *overrides]
    assert main(argv) == 0
    return json.loads((Path(out) / "trainer_state.json").read_text())


@pytest.mark.parametrize("preset,lr", [("tiny_reasoner_dir", "5e-3"), ("tiny_qwen3vl_dir", "2e-2")])
def test_sft_reduces_loss_and_saves_a_loadable_reasoner(bench, preset, lr, items, tmp_path, request):
    start = request.getfixturevalue(preset)  # the narrower Qwen3-VL preset takes a larger step
    state = _sft(bench, start, tmp_path / "sft", "max_steps=6", f"learning_rate={lr}",
                 "per_device_train_batch_size=4", "max_train_pairs=24")
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2]) - 1.0, losses
    trained, base = load_reasoner(tmp_path / "sft", device="cpu"), load_reasoner(start, device="cpu")
    assert trained.cache_key[1] != base.cache_key[1]  # new weights: new cache entries
    out = trained.generate(items, role="query", max_new_tokens=8)
    assert len(out) == 3 and all(isinstance(t, TCoT) for t in out)


def test_sft_resumed_from_a_checkpoint_ends_with_the_uninterrupted_runs_weights(bench, tiny_reasoner_dir, tmp_path):
    # a Qwen2-VL checkpoint stores its weights under the original key names; resuming must load them
    # (the Trainer's own resume matched no key and went on from the starting weights)
    args = ("max_steps=4", "save_strategy=steps", "save_steps=2", "max_train_pairs=16",
            "per_device_train_batch_size=4", "learning_rate=5e-3")
    whole = _sft(bench, tiny_reasoner_dir, tmp_path / "whole", *args)
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    resumed = _sft(bench, tiny_reasoner_dir, tmp_path / "resumed", *args, "--resume")
    loss = {name: [h["loss"] for h in state["log_history"] if "loss" in h] for name, state in
            (("whole", whole), ("resumed", resumed))}
    assert loss["resumed"] == pytest.approx(loss["whole"], rel=1e-4), loss  # steps 3-4 as well as 1-2
    a, b = (load_reasoner(tmp_path / name, device="cpu").model.state_dict() for name in ("whole", "resumed"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_lora_sft_saves_adapters_that_load(bench, tiny_reasoner_dir, items, tmp_path):
    _sft(bench, tiny_reasoner_dir, tmp_path / "lora", "max_steps=2", "lora=true", "lora_r=4",
         "max_train_pairs=8", "per_device_train_batch_size=2")
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    trained = load_reasoner(tmp_path / "lora", device="cpu")
    assert trained.is_lora and len(trained.generate(items[:1], max_new_tokens=4)) == 1


def _valid_share(reasoner: Reasoner, held_out) -> float:
    tcots = (reasoner.generate([p.query for p in held_out], role="query", batch_size=16)
             + reasoner.generate([p.pos for p in held_out], role="target", batch_size=16))
    return sum(t.valid for t in tcots) / len(tcots)


@pytest.mark.slow
def test_sft_teaches_the_t_cot_format(bench, tiny_reasoner_dir, tmp_path):
    """Share of valid T-CoTs on held-out items (another seed): 0/42 before, 16/42 after 100 steps
    (measured on a loaded 2-core machine; the 100 steps took 1-5 minutes there)."""
    held_dir = tmp_path / "held"
    generate_benchmark(held_dir, seed=1, size="tiny")
    held_out = read_pairs(held_dir / "train" / "pairs.jsonl", root=held_dir)[0][::5]
    before = _valid_share(load_reasoner(tiny_reasoner_dir, device="cpu"), held_out)
    _sft(bench, tiny_reasoner_dir, tmp_path / "sft", "max_steps=100", "learning_rate=2e-3")
    after = _valid_share(load_reasoner(tmp_path / "sft", device="cpu"), held_out)
    assert after > before and after >= 0.2, (before, after)


WARMUP_RECIPE = RECIPE.parent / "reasoner_warmup_tiny.yaml"


def test_warmup_captions_name_every_object_most_salient_first(tmp_path):
    from embedrl.lab.synth.scenes import Scene, salience_order
    from embedrl.lab.warmup import render_scenes

    rows = render_scenes(tmp_path / "scenes", 6, seed=3)
    assert len(rows) == 6 and all(Path(r["image"]).is_file() for r in rows)
    assert render_scenes(tmp_path / "scenes", 6, seed=3) == rows  # reused, not re-rendered
    assert render_scenes(tmp_path / "other", 6, seed=4) != rows  # another stream, other scenes
    scene = Scene.from_dict({"video": False, "bg": {"colour": [250, 250, 250], "texture": "plain", "shade": 0,
                                                    "spacing": 8, "phase": 0},
                             "objects": [{"shape": "circle", "colour": "red", "size": "small", "position": "left"},
                                         {"shape": "square", "colour": "blue", "size": "large", "position": "top"}]})
    from embedrl.lab.warmup import caption

    parts = caption(scene).split("; ")
    assert [p.split(" ")[:3] for p in parts] == [scene.objects[i].describe().split() for i in salience_order(scene)]
    assert parts[0].startswith("large blue square")


def test_warmup_refer_examples_name_the_one_object_their_phrase_picks_out(tmp_path):
    """`tasks: [caption, refer]`: each scene also teaches reading a phrase in the benchmark's synonyms."""
    from embedrl.lab.synth.text import COLOUR_WORDS, SHAPE_WORDS
    from embedrl.lab.warmup import (
        ReasonerWarmupConfig,
        object_words,
        refer_rows,
        render_scenes,
        sample_scenes,
        warmup_examples,
    )

    rows = render_scenes(tmp_path / "scenes", 40, seed=2)
    scenes = sample_scenes(40, seed=2)
    refer = refer_rows(rows, seed=2)
    assert [r["image"] for r in refer] == [r["image"] for r in rows]
    synonyms_used = 0
    for r, scene in zip(refer, scenes):
        phrase = r["prompt"].split("Which object is ")[1].split("?")[0]
        named = [i for i in range(len(scene.objects)) if object_words(scene, i) == r["answer"]]
        assert len(named) == 1, r  # the answer is one object of the picture
        obj = scene.objects[named[0]]
        # the phrase names it in some synonym of its colour or shape, or by size / position only
        synonyms_used += any(w in phrase for w in (*COLOUR_WORDS[obj.colour][1:], *SHAPE_WORDS[obj.shape][1:]))
    assert synonyms_used >= 10  # the text must be read, not matched word for word
    both = warmup_examples(rows, ["caption", "refer"], seed=2)
    assert len(both) == 80 and len(warmup_examples(rows)) == 40
    assert both[40]["prompt"][0]["content"][1]["text"] == refer[0]["prompt"]
    with pytest.raises(ValueError, match="tasks must be"):
        ReasonerWarmupConfig(model="m", output_dir=str(tmp_path / "o"), tasks=["captions"], use_cpu=True)


def test_warmup_edit_examples_describe_the_object_as_the_change_leaves_it(tmp_path):
    """`tasks: [..., edit]`: a requested change of one object -> that object after the change, so the
    reasoner learns what a composed query's T-CoT must say (what the edit makes, not what it replaces)."""
    from embedrl.lab.warmup import (
        edit_rows,
        object_words,
        render_scenes,
        sample_scenes,
        warmup_examples,
    )

    rows = render_scenes(tmp_path / "scenes", 40, seed=2)
    edits = edit_rows(rows, seed=2)
    assert [r["image"] for r in edits] == [r["image"] for r in rows]
    for r, scene in zip(edits, sample_scenes(40, seed=2)):
        before = [object_words(scene, i) for i in range(len(scene.objects))]
        assert r["answer"] not in before, r  # the changed object, not any object of the picture as it is
        changed = [b for b in before if len(set(b.split()) ^ set(r["answer"].split())) <= 4]
        assert changed, r  # one object of the picture with one detail changed
        assert r["prompt"].startswith("The request: ")
    tasks = warmup_examples(rows, ["caption", "edit"], seed=2)
    assert len(tasks) == 80 and tasks[40]["completion"][0]["content"][0]["text"] == edits[0]["answer"]


def test_warmup_trains_on_scene_captions_and_sft_starts_from_it(bench, tiny_reasoner_dir, items, tmp_path):
    argv = ["-q", "train", "reasoner-warmup", "--config", str(WARMUP_RECIPE), f"model={tiny_reasoner_dir}",
            f"output_dir={tmp_path / 'warm'}", "scenes=16", "max_steps=3", "per_device_train_batch_size=4",
            "save_strategy='no'", "disable_tqdm=true", "logging_steps=1"]
    assert main(argv) == 0
    state = json.loads((tmp_path / "warm" / "trainer_state.json").read_text())
    assert len([h for h in state["log_history"] if "loss" in h]) == 3
    warm = load_reasoner(tmp_path / "warm", device="cpu")
    assert warm.cache_key[1] != load_reasoner(tiny_reasoner_dir, device="cpu").cache_key[1]
    assert len(warm.generate(items, role="target", max_new_tokens=8)) == 3
    _sft(bench, tmp_path / "warm", tmp_path / "sft", "max_steps=2", "max_train_pairs=4",
         "per_device_train_batch_size=2")
    assert load_reasoner(tmp_path / "sft", device="cpu").cache_key[1] != warm.cache_key[1]


def test_freeze_vision_trains_the_language_side_only(bench, tiny_reasoner_dir, tmp_path):
    from safetensors.torch import load_file

    _sft(bench, tiny_reasoner_dir, tmp_path / "sft", "max_steps=2", "max_train_pairs=4",
         "per_device_train_batch_size=2", "freeze_vision=true")
    before = load_file(Path(tiny_reasoner_dir) / "model.safetensors")
    after = load_file(tmp_path / "sft" / "model.safetensors")
    vision = [k for k in before if ".visual." in f".{k}"]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in vision)


def test_sft_keeps_the_checkpoint_whose_probe_t_cots_are_most_often_usable(bench, tiny_reasoner_dir, tmp_path):
    """`probe_data`: every saved checkpoint writes T-CoTs for the probe items; the saved reasoner is the
    checkpoint with the largest usable share (rotation keeps it), also across a resume."""
    from embedrl.core.errors import EmbedrlError
    from embedrl.train.reasoner_sft import PROBE_FILE, build_config

    out = tmp_path / "sft"
    args = ("save_strategy=steps", "save_steps=2", "save_total_limit=2", "max_train_pairs=16",
            "per_device_train_batch_size=4", "learning_rate=5e-3", f"probe_data={bench / 'train' / 'pairs.jsonl'}",
            f"probe_data_root={bench}", "probe_items=6", "probe_max_new_tokens=16")
    _sft(bench, tiny_reasoner_dir, out, "max_steps=4", *args)
    probe = json.loads((out / PROBE_FILE).read_text())
    assert [r["step"] for r in probe["checkpoints"]] == [2, 4] and probe["items"] == 6
    assert all(0 <= r["usable"] <= 1 for r in probe["checkpoints"])
    # as if step 2 had written the most usable T-CoTs: the resumed run must keep and save it
    probe["checkpoints"][0]["usable"] = 1.5
    (out / PROBE_FILE).write_text(json.dumps(probe))
    _sft(bench, tiny_reasoner_dir, out, "max_steps=8", *args, "--resume")
    probe = json.loads((out / PROBE_FILE).read_text())
    assert [r["step"] for r in probe["checkpoints"]] == [2, 4, 6, 8] and probe["chosen"]["step"] == 2
    # rotation (2 kept) keeps the best and the last, not the ones between
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-8"]
    saved = load_reasoner(out, device="cpu").model.state_dict()
    chosen = load_reasoner(out / "checkpoint-2", device="cpu").model.state_dict()
    assert all(torch.equal(saved[k], chosen[k]) for k in saved)
    with pytest.raises(EmbedrlError, match="save_strategy"):
        build_config(RECIPE, [f"model={tiny_reasoner_dir}", "train_data=x.jsonl", "probe_data=x.jsonl",
                                  "save_strategy=no"])
