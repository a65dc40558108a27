"""MMEB-train read as published (parquet subsets, images extracted or still zipped), embedder training from
a `data` entry, and `data annotate` with a local teacher (the tiny reasoner) and an OpenAI-compatible one."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from published import COLORS, hub_repo, json_reply, png, zip_folder

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item, MediaRef
from embedrl.core.tcot import parse_tcot
from embedrl.core.tcot_cache import TCoTCache
from embedrl.data.annotate import ChatEndpointTeacher, annotate_pairs, evidence_fits
from embedrl.data.mmeb_train import check_mmeb_train, read_mmeb_train
from embedrl.data.pairs import read_pairs

IMG = "<|image_1|>"


@pytest.fixture(scope="module")
def mmeb_train(tmp_path_factory) -> Path:
    """Two subsets: OK-VQA with images unzipped under images/, CIRR with images only in images_zip/CIRR.zip
    and no neg_* columns (as CIRR's card lists)."""
    root = tmp_path_factory.mktemp("mmeb_train") / "MMEB-train"
    names = list(COLORS)
    for name, color in COLORS.items():
        png(root / "images" / "OK-VQA" / "Train" / f"{name}.jpg", color)
        png(root / "src" / "CIRR" / "Train" / f"{name}.jpg", color)
    zip_folder(root / "src", root / "images_zip" / "CIRR.zip")
    shutil.rmtree(root / "src")
    okvqa = [{"qry": f"{IMG} Represent the given image with the following question: what colour is it?",
              "qry_image_path": f"images/OK-VQA/Train/{n}.jpg", "pos_text": n, "pos_image_path": "",
              "neg_text": names[(i + 1) % len(names)], "neg_image_path": ""} for i, n in enumerate(names)]
    cirr = [{"qry": f"{IMG} Given an image, find a similar everyday image with the described changes: make it {m}",
             "qry_image_path": f"images/CIRR/Train/{n}.jpg", "pos_text": f"{IMG} Represent the given image.",
             "pos_image_path": f"images/CIRR/Train/{m}.jpg"} for n, m in zip(names, names[1:] + names[:1])]
    hub_repo(root, {"OK-VQA": {"original": okvqa, "diverse_instruction": okvqa},
                    "CIRR": {"original": cirr, "diverse_instruction": cirr}})
    return root


def test_pairs_from_parquet_with_negatives_and_zipped_images(mmeb_train):
    pairs, skipped = read_mmeb_train({"mmeb_train": str(mmeb_train), "subsets": ["OK-VQA", "CIRR"]})
    assert not skipped and len(pairs) == 10
    vqa, cirr = pairs[0], pairs[5]
    assert vqa.dataset == "OK-VQA" and vqa.query.text.startswith("Represent the given image")  # placeholder gone
    assert vqa.query.image == str(mmeb_train / "images" / "OK-VQA" / "Train" / "red.jpg")
    assert vqa.pos.text == "red" and [n.text for n in vqa.negs] == ["green"]
    assert cirr.dataset == "CIRR" and not cirr.negs
    assert isinstance(cirr.pos.image, MediaRef) and str(cirr.pos.image).endswith("CIRR.zip!CIRR/Train/green.jpg")
    assert cirr.pos.load_image().size == (32, 32)
    capped, _ = read_mmeb_train({"mmeb_train": str(mmeb_train), "subsets": ["CIRR"], "num_sample_per_subset": 2,
                                 "split": "diverse_instruction"})
    assert len(capped) == 2
    with pytest.raises(EmbedrlError, match="split 'train'"):
        read_mmeb_train({"mmeb_train": str(mmeb_train), "split": "train"})
    with pytest.raises(EmbedrlError, match="unknown: subset"):
        read_mmeb_train({"mmeb_train": str(mmeb_train), "subset": ["CIRR"]})


def test_data_check_mmeb_train_lists_exactly_what_is_missing(mmeb_train, tmp_path, capsys):
    root = tmp_path / "MMEB-train"
    shutil.copytree(mmeb_train, root)
    assert main(["data", "check", "mmeb-train", "--root", str(root), "--datasets", "OK-VQA", "CIRR"]) == 0
    (root / "images" / "OK-VQA" / "Train" / "blue.jpg").unlink()
    (root / "images_zip" / "CIRR.zip").unlink()
    states = {s.name: s for s in check_mmeb_train(root, ["OK-VQA", "CIRR", "VisDial"])}
    assert states["OK-VQA"].state == "partial" and "images missing for 1 references" in states["OK-VQA"].detail
    assert states["CIRR"].state == "missing" and "images_zip/CIRR.zip" in states["CIRR"].commands[0]
    assert states["VisDial"].state == "missing" and '--include "VisDial/*"' in states["VisDial"].commands[0]
    capsys.readouterr()
    assert main(["data", "check", "mmeb-train", "--root", str(root), "--datasets", "OK-VQA", "CIRR"]) == 1
    out = capsys.readouterr().out
    assert "0 present, 1 partial, 1 missing" in out and "hf download TIGER-Lab/MMEB-train" in out


def test_train_embedder_reads_mmeb_train_from_a_data_entry(tiny_clip_dir, mmeb_train, tmp_path):
    data = json.dumps({"mmeb_train": str(mmeb_train), "subsets": ["OK-VQA", "CIRR"], "split": "original"})
    argv = ["train", "embedder", f"model={tiny_clip_dir}", f"data={data}", f"output_dir={tmp_path}",
            "max_steps=2", "per_device_train_batch_size=4", "use_cpu=true", "save_strategy='no'",
            "dataset_weights={OK-VQA: 1.0, CIRR: 3.0}", "report_to=none"]
    assert main(argv) == 0
    assert (tmp_path / "embedrl.json").is_file()
    assert main(["train", "embedder", f"model={tiny_clip_dir}", f"output_dir={tmp_path / 'x'}"]) == 1


# ---------------------------------------------------------------- annotate

def test_evidence_must_fit_the_item():
    text, image = Item(text="a red square on the left"), Item(image="x.png")
    fits = evidence_fits
    assert fits(parse_tcot('<thinking>{"text_keywords": ["red", "left"]}</thinking><rethink>r</rethink>'
                           '<answer>a</answer>'), text) is None
    assert fits(parse_tcot('<thinking>{"text_keywords": ["blue"]}</thinking><rethink>r</rethink><answer>a</answer>'),
                text).startswith("keywords")
    assert fits(parse_tcot('<thinking>{"bbox_2d": [10, 10, 500, 500]}</thinking><rethink>r</rethink>'
                           '<answer>a</answer>'), text).startswith("evidence")  # boxes on a text
    assert "outside 0-1000" in fits(parse_tcot('<thinking>{"bbox_2d": [10, 10, 1200, 500]}</thinking>'
                                               '<rethink>r</rethink><answer>a</answer>'), image)
    assert fits(parse_tcot('<thinking>{"bbox_2d": [100, 100, 900, 500]}</thinking><rethink>r</rethink>'
                           '<answer>a</answer>'), image) is None
    assert fits(parse_tcot('<thinking>{"key_frames": [2, 9]}</thinking><rethink>r</rethink><answer>a</answer>'),
                Item(frames=["a.png"] * 8)).startswith("evidence")
    assert fits(parse_tcot("no structure at all"), text).startswith("structure")


def test_annotate_with_the_tiny_reasoner_resumes_without_generating_again(tiny_reasoner_dir, mmeb_train, tmp_path):
    from embedrl.models.reasoner import load_reasoner

    pairs, _ = read_mmeb_train({"mmeb_train": str(mmeb_train), "subsets": ["OK-VQA", "CIRR"]})
    teacher = load_reasoner(tiny_reasoner_dir, device="cpu", prompt_set="embed-rl", max_new_tokens=16)
    with TCoTCache(tmp_path / "cache.sqlite") as cache:
        with pytest.raises(RuntimeError, match="crash_after"):
            annotate_pairs(pairs, teacher, tmp_path / "out.jsonl", cache, batch_size=4, crash_after=1)
        first = teacher.generated_items
        # each distinct item once per role: the first chunk's 4 queries and 5 distinct targets (4 positives,
        # 4 negatives, which are the other pairs' answers)
        assert first == 4 + 5 and not (tmp_path / "out.jsonl").exists()
        report = annotate_pairs(pairs, teacher, tmp_path / "out.jsonl", cache, batch_size=4)
        distinct = {("query", p.query.content_hash()) for p in pairs} | {
            ("target", i.content_hash()) for p in pairs for i in (p.pos, *p.negs)}
        assert teacher.generated_items == len(distinct)  # the rerun generated only what the crash left
        again = teacher.generated_items
        annotate_pairs(pairs, teacher, tmp_path / "out2.jsonl", cache, batch_size=4)
        assert teacher.generated_items == again  # everything cached
    assert report["pairs"] == 10 and report["kept"] + report["dropped"] == 10
    assert report["teacher"][2].startswith("embed-rl-")  # the paper's prompts
    # the random tiny model writes no well-formed T-CoT: every drop is counted with its reason
    dropped = sum(report["not_fitting"]["query"].values()) + sum(report["not_fitting"]["positive"].values())
    assert dropped >= report["dropped"] > 0 and json.loads((tmp_path / "out.report.json").read_text()) == report


class _Teacher(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that answers like a teacher: keywords from the question's colour word
    (present in the text), a box for images; the word "purple" makes it name a keyword the text lacks."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        parts = body["messages"][0]["content"]
        prompt = " ".join(p.get("text", "") for p in parts)
        has_image = any(p["type"] == "image_url" for p in parts)
        word = next((c for c in COLORS if c in prompt), "purple")
        evidence = {"bbox_2d": [100, 100, 600, 700]} if has_image else {"text_keywords": [word]}
        text = f"<thinking>{json.dumps(evidence)}</thinking><rethink>It is {word}.</rethink><answer>{word}</answer>"
        json_reply(self, {"choices": [{"message": {"role": "assistant", "content": text}}]})

    def log_message(self, *args):
        pass


def test_annotate_through_an_endpoint_writes_pairs_that_reasoner_sft_reads(mmeb_train, tiny_reasoner_dir, tmp_path,
                                                                           capsys):
    server = HTTPServer(("127.0.0.1", 0), _Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        out = tmp_path / "annotated.jsonl"
        assert main(["data", "annotate", "--mmeb-train", str(mmeb_train), "--subsets", "OK-VQA", "CIRR",
                     "--endpoint", url, "--endpoint-model", "teacher-vl", "--out", str(out),
                     "--cache", str(tmp_path / "cache.sqlite"), "--batch-size", "3"]) == 0
        served = len(_Teacher.requests)
        assert main(["data", "annotate", "--mmeb-train", str(mmeb_train), "--subsets", "OK-VQA", "CIRR",
                     "--endpoint", url, "--endpoint-model", "teacher-vl", "--out", str(tmp_path / "again.jsonl"),
                     "--cache", str(tmp_path / "cache.sqlite")]) == 0
        assert len(_Teacher.requests) == served  # a rerun asks the teacher nothing
    finally:
        server.shutdown()
    first = _Teacher.requests[0]
    assert first["model"] == "teacher-vl" and first["temperature"] == 0.0
    assert first["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    report = json.loads(out.with_suffix(".report.json").read_text())
    # CIRR queries ("make it <colour>") and OK-VQA queries have images: boxes fit; the OK-VQA positives are
    # colour words: their keyword is in the text; each OK-VQA negative is another colour word: fits too
    assert report["kept"] == 10 and report["negatives_with_tcot"] == 5
    pairs, _ = read_pairs(out)
    assert pairs[0].qry_tcot and pairs[0].pos_tcot and pairs[0].neg_tcots[0]
    assert parse_tcot(pairs[5].pos_tcot).boxes and Path(pairs[5].pos.image).is_file()  # copied out of the zip
    assert main(["-q", "train", "reasoner-sft", "--config", "train/reasoner_sft_tiny.yaml",
                 f"model={tiny_reasoner_dir}", f"train_data={out}", f"data_root={tmp_path}", f"output_dir={tmp_path / 'sft'}",
                 "max_steps=1", "per_device_train_batch_size=2", "save_strategy='no'", "disable_tqdm=true"]) == 0


def test_endpoint_teacher_errors_name_the_endpoint():
    teacher = ChatEndpointTeacher("http://127.0.0.1:9", "m", timeout=2)
    with pytest.raises(EmbedrlError, match=r"teacher endpoint http://127.0.0.1:9 \(m\) failed"):
        teacher.generate([Item(text="x")])
