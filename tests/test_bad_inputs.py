"""The bad-input probe, kept: hostile inputs against the CLI, the index, evaluation, training configs and the demo.

Each case is an input, the command (run in-process through `embedrl.cli.main`) or library call it goes to,
the outcome class a user should get, and what the message must name:
  - clear error: exit status 1 and one line on stderr, `embedrl: error: ...`, naming the file, row or key;
  - skipped and reported: the run goes on without the bad part, and says which part and why;
  - refused: a usage error (exit status 2, one line) or a demo upload refused with its reason.
What actually happened is classified the same way, plus `traceback` (an exception escaped) and `silent`
(the run went on as if nothing were wrong); each case asserts its class, and the session ends with the
suite's summary line (tests/conftest.py prints it from `OUTCOMES`).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest
from PIL import Image

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError

ERROR, SKIPPED, REFUSED = "clear error", "skipped and reported", "refused"
OUTCOMES: dict[str, str] = {}  # case id -> the class observed


class World:
    """The files cases point at, made once: presets, bad files, a small index, a small evaluation set."""

    def __init__(self, root: Path, clip: Path, synth: Path):
        self.root, self.clip, self.synth = root, clip, synth
        self.d = root / "bad"
        self._n = count()

    def f(self, name: str) -> str:
        return str(self.d / name)

    @property
    def out(self) -> str:
        """A new output path each time it is read."""
        return str(self.root / "out" / f"o{next(self._n)}")

    @property
    def fresh_index(self) -> str:
        """A copy of the small index each time it is read (for cases that change it)."""
        path = self.root / "indexes" / f"i{next(self._n)}"
        shutil.copytree(self.root / "index", path)
        return str(path)

    @property
    def fresh_results(self) -> str:
        """A copy of the evaluation output folder each time it is read."""
        path = self.root / "results" / f"r{next(self._n)}"
        shutil.copytree(self.root / "eval_out", path)
        return str(path)


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def _rows(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _make_files(w: World) -> None:
    d = w.d
    for color in ("red", "green", "blue"):
        Image.new("RGB", (32, 32), color).save(_write(d / "img" / f"{color}.png", b""))
    _write(d / "img" / "corrupt.png", b"\x89PNG\r\n\x1a\nnot really a png")
    ok = [{"id": "a", "text": "a red square"}, {"id": "b", "text": "a blue circle"},
          {"id": "c", "image": "img/red.png"}]
    new = {"id": "n", "text": "a new item"}
    corpora = {
        "corpus_ok.jsonl": _rows(*ok),
        "corpus_more.jsonl": _rows({"id": "d", "text": "a green star"}, {"id": "e", "image": "img/blue.png"}),
        "corpus_latin1.jsonl": b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n',
        "corpus_malformed.jsonl": _rows(ok[0], '{"id": "b", "text": "x"'),
        "corpus_array.jsonl": _rows(ok[0], "[1, 2]"),
        "corpus_image_int.jsonl": _rows({"id": "a", "image": 123}),
        "corpus_text_int.jsonl": _rows({"id": "a", "text": 12345}),
        "corpus_text_list.jsonl": _rows({"id": "a", "text": ["a", "b"]}),
        "corpus_frames_str.jsonl": _rows({"id": "a", "frames": "img/red.png"}),
        "corpus_frames_ints.jsonl": _rows({"id": "a", "frames": [1, 2]}),
        "corpus_instruction_int.jsonl": _rows({"id": "a", "text": "x", "instruction": 5}),
        "corpus_id_object.jsonl": _rows({"id": {"k": 1}, "text": "x"}),
        "corpus_id_bool.jsonl": _rows({"id": True, "text": "x"}),
        "corpus_no_content.jsonl": _rows({"id": "a"}),
        "corpus_dup_ids.jsonl": _rows({"id": "a", "text": "x"}, {"id": "a", "text": "y"}),
        "corpus_empty.jsonl": "",
        "corpus_blank.jsonl": "\n\n   \n",
        "corpus_unknown_field_typo.jsonl": _rows({"id": "a", "txt": "typo"}),
        "corpus_all_corrupt.jsonl": _rows({"id": "x", "image": "img/corrupt.png"}, {"id": "y", "image": "img/gone.png"}),
        "corpus_one_corrupt.jsonl": _rows(new, {"id": "x", "image": "img/corrupt.png"}),
        "corpus_one_missing.jsonl": _rows(new, {"id": "y", "image": "img/gone.png"}),
        "corpus_frames_missing.jsonl": _rows(new, {"id": "v", "frames": ["img/red.png", "img/gone.png"]}),
        "corpus_dup_of_index.jsonl": _rows({"id": "a", "text": "a red square, again"}, {"id": "z", "text": "new"}),
    }
    for name, content in corpora.items():
        _write(d / name, content)
    (d / "empty_folder").mkdir()
    _write(d / "corrupt_folder" / "x.png", b"\x89PNG\r\n\x1a\nnot really a png")
    _write(d / "a_file.txt", "not a folder")

    pair = {"qry": "a red square", "pos_text": "", "pos_image_path": "img/red.png"}
    pairs = {
        "pairs_latin1.jsonl": _rows(pair).encode() + b'{"qry": "caf\xe9", "pos_text": "x"}\n' + _rows(pair).encode(),
        "pairs_malformed.jsonl": _rows(pair, '{"qry": ', pair),
        "pairs_qry_int.jsonl": _rows(pair, {**pair, "qry": 7}),
        "pairs_pos_text_list.jsonl": _rows(pair, {**pair, "pos_text": ["x"]}),
        "pairs_neg_image_int.jsonl": _rows(pair, {**pair, "neg_image_path": 5}),
        "pairs_qry_image_object.jsonl": _rows(pair, {**pair, "qry_image_path": {"p": 1}}),
        "pairs_qry_tcot_int.jsonl": _rows(pair, {**pair, "qry_tcot": 5}),
        "pairs_neg_text_int.jsonl": _rows(pair, {**pair, "neg_text": [1, 2]}),
        "pairs_neg_frames_flat.jsonl": _rows(pair, {**pair, "neg_frames": ["img/red.png", "img/blue.png"]}),
        "pairs_qry_frames_str.jsonl": _rows(pair, {**pair, "qry_frames": "img/red.png"}),
        "pairs_no_qry.jsonl": _rows(pair, {"pos_text": "x"}),
        "pairs_no_pos.jsonl": _rows(pair, {"qry": "x"}),
        "pairs_missing_image.jsonl": _rows(pair, {**pair, "pos_image_path": "img/gone.png"}),
        "pairs_corrupt_image.jsonl": _rows(pair, {**pair, "pos_image_path": "img/corrupt.png"}),
        "pairs_empty.jsonl": "",
        "pairs_neg_tcot_count.jsonl": _rows(pair, {**pair, "neg_text": ["a", "b"], "neg_tcot": ["x"]}),
        "pairs_dataset_object.jsonl": _rows(pair, {**pair, "dataset": {"name": "x"}}),
        "pairs_all_bad.jsonl": _rows({"qry": 1, "pos_text": "x"}, {"pos_text": "x"}),
    }
    for name, content in pairs.items():
        _write(d / name, content)

    _write(d / "config_latin1.yaml", b"model: caf\xe9\n")
    _write(d / "config_invalid.yaml", "model: [unclosed\n")
    _write(d / "config_list.yaml", "- model\n- data\n")
    _write(d / "config_unknown_key.yaml", "modle: x\n")
    _write(d / "config_lora_maybe.yaml", "lora: maybe\n")

    # a small evaluation set (image rows) and registries, good and bad
    rows = [{"qry_inst": "Find the image.", "qry_text": "", "qry_img_path": "img/red.png", "tgt_inst": "",
             "tgt_text": [""], "tgt_img_path": ["img/red.png", "img/blue.png"]},
            {"qry_inst": "", "qry_text": "a blue one", "tgt_text": [""], "tgt_img_path": ["img/blue.png", "img/red.png"]}]
    spec = {"name": "Toy", "modality": "image", "category": "I-RET", "reader": "image_rows", "scope": "local",
            "metric": "hit@1"}
    evals = {
        "Toy.jsonl": _rows(*rows),
        "Toy_latin1.jsonl": _rows(rows[0]).encode() + b'{"qry_text": "caf\xe9", "tgt_text": ["x"]}\n',
        "Toy_malformed.jsonl": _rows(rows[0], "{oops"),
        "Toy_img_int.jsonl": _rows(rows[0], {**rows[1], "qry_img_path": 5}),
        "Toy_rel.jsonl": _rows(rows[0], {**rows[1], "tgt_rel": ["high", 0]}),
        "Toy_no_cands.jsonl": _rows(rows[0], {"qry_text": "x", "tgt_text": [], "tgt_img_path": []}),
        "Toy_lengths.jsonl": _rows(rows[0], {"qry_text": "x", "tgt_text": ["a", "b", "c"],
                                             "tgt_img_path": ["img/red.png", "img/blue.png"]}),
        "Toy_missing_media.jsonl": _rows(rows[0], {**rows[1], "tgt_img_path": ["img/gone.png", "img/red.png"]}),
    }
    for name, content in evals.items():
        _write(d / name, content)

    def registry(name: str, *entries) -> None:
        _write(d / name, json.dumps({"datasets": list(entries)}))  # JSON is YAML

    registry("registry.yaml", {**spec, "path": "Toy.jsonl"})
    for bad in ("latin1", "malformed", "img_int", "rel", "no_cands", "lengths", "missing_media"):
        registry(f"rows_{bad}.yaml", {**spec, "path": f"Toy_{bad}.jsonl"})
    registry("registry_two.yaml", {**spec, "path": "Toy.jsonl"}, {**spec, "name": "Toy2", "path": "Toy.jsonl"})
    registry("registry_modality.yaml", {**spec, "modality": "audio", "path": "Toy.jsonl"})
    registry("registry_dupes.yaml", {**spec, "path": "Toy.jsonl"}, {**spec, "path": "Toy.jsonl"})
    registry("registry_reader.yaml", {**spec, "reader": "csv_rows", "path": "Toy.jsonl"})
    registry("registry_missing_field.yaml", {k: v for k, v in spec.items() if k != "metric"} | {"path": "Toy.jsonl"})
    _write(d / "registry_latin1.yaml", b"datasets:\n  - name: caf\xe9\n")
    _write(d / "registry_invalid.yaml", "datasets: [\n")
    _write(d / "registry_empty.yaml", "datasets: []\n")
    beir = d / "beir" / "Doc"
    _write(beir / "corpus.jsonl", _rows({"_id": "d1", "text": "a page"}, {"_id": "d2", "text": "another page"}))
    _write(beir / "queries.jsonl", _rows({"_id": "q1", "text": "which page"}))
    _write(beir / "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\tlots\n")
    _write(d / "beir" / "Cols" / "corpus.jsonl", _rows({"_id": "d1", "text": "a page"}))
    _write(d / "beir" / "Cols" / "queries.jsonl", _rows({"_id": "q1", "text": "which page"}))
    _write(d / "beir" / "Cols" / "qrels.tsv", "q1 d1 1\n")
    _write(d / "beir" / "Unknown" / "corpus.jsonl", _rows({"_id": "d1", "text": "a page"}))
    _write(d / "beir" / "Unknown" / "queries.jsonl", _rows({"_id": "q1", "text": "which page"}))
    _write(d / "beir" / "Unknown" / "qrels.tsv", "q1\td9\t1\n")
    doc = {"name": "Doc", "modality": "visdoc", "category": "ViDoRe-V1", "reader": "beir", "scope": "global",
           "metric": "ndcg_linear@5"}
    for name in ("Doc", "Cols", "Unknown"):
        registry(f"registry_beir_{name}.yaml", {**doc, "path": f"beir/{name}"})

    # results in the leaderboard format
    results = {"metadata": {"model_name": "m", "registry": str(d / "registry_two.yaml")},
               "metrics": {"image": {"Toy": {"hit@1": 0.5}, "Toy2": {"hit@1": 0.25}}}}
    _write(d / "results_ok.json", json.dumps(results))
    _write(d / "results_percent.json", json.dumps({**results, "metrics": {"image": {"Toy": {"hit@1": 50.0},
                                                                                    "Toy2": {"hit@1": 0.25}}}}))
    _write(d / "results_nan.json", json.dumps({**results, "metrics": {"image": {"Toy": {"hit@1": float("nan")},
                                                                                "Toy2": {"hit@1": 0.25}}}}))
    _write(d / "results_typo.json", json.dumps({**results, "metrics": {"image": {"Toyy": {"hit@1": 0.5},
                                                                                 "Toy2": {"hit@1": 0.25}}}}))
    _write(d / "results_no_metric.json", json.dumps({**results, "metrics": {"image": {"Toy": {"recall@5": 0.5},
                                                                                      "Toy2": {"hit@1": 0.25}}}}))
    _write(d / "results_negative.json", json.dumps({**results, "metrics": {"image": {"Toy": {"hit@1": -0.5},
                                                                                     "Toy2": {"hit@1": 0.25}}}}))
    _write(d / "results_metadata_str.json", json.dumps({"metadata": "a string", "metrics": {}}))
    _write(d / "results_latin1.json", b'{"metadata": {"model_name": "caf\xe9"}, "metrics": {}}')
    _write(d / "results_invalid.json", '{"metrics": ')
    _write(d / "results_list.json", "[1, 2]")
    _write(d / "results_no_metrics.json", json.dumps({"metadata": {}}))

    _write(d / "upload_text.png", "#!/bin/sh\necho hi\n")
    _write(d / "upload.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>")
    _write(d / "upload_empty.png", b"")
    Image.effect_noise((200, 200), 64).convert("RGB").save(_write(d / "upload_cut.png", b""))
    (d / "upload_cut.png").write_bytes((d / "upload_cut.png").read_bytes()[:400])
    _write(d / "upload_bomb.png", _png_header_only(100_000, 100_000))
    Image.effect_noise((600, 600), 64).convert("RGB").save(_write(d / "upload_big.png", b""))
    _write(d / "vectors.npy", b"not numpy")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip_dir, synth_tiny_dir):
    import torch

    from embedrl.index.build import build_index
    from embedrl.models.base import load_embedder

    w = World(tmp_path_factory.mktemp("probe"), tiny_clip_dir, synth_tiny_dir)
    _make_files(w)
    clip = load_embedder(str(tiny_clip_dir))
    build_index(clip, w.d / "corpus_ok.jsonl", w.root / "index", distributed=False)
    assert main(["eval", "mmeb", "--model", str(tiny_clip_dir), "--data-root", str(w.d), "--registry",
                 w.f("registry.yaml"), "--out", str(w.root / "eval_out"), "--no-report"]) == 0
    with torch.no_grad():
        next(clip.module.parameters()).add_(0.05)
    clip.save_pretrained(w.root / "other_clip")
    return w


# ---------------------------------------------------------------- the cases

@dataclass
class Case:
    id: str
    run: Callable[[World], object]  # returns what a skipped-and-reported run reported (text), or raises
    outcome: str
    expect: str  # what the message (or report) must name; {w.d} etc. are filled in


def fill(text: str, w: World) -> str:
    """`text` with each `{w.name}` replaced by the world's attribute (other braces are left alone)."""
    return re.sub(r"\{w\.(\w+)\}", lambda m: str(getattr(w, m.group(1))), text)


def cli(*argv: str, report: Callable[[World, str, list[str]], str] | None = None):
    """A command line (`{w.name}` filled in from the world); `report(w, output, args)` reads what the run
    reported, for skipped-and-reported cases (default: its output)."""
    def run(w: World):
        args = [fill(a, w) for a in argv]
        code = main(args)
        return ("cli", code, args, report)
    return run


def build_report(w: World, output: str, args: list[str]) -> str:
    """What an index build or add reported: its output and the index's build_report.json."""
    folder = args[args.index("--out") + 1] if "--out" in args else args[2]
    return output + (Path(folder) / "build_report.json").read_text()


TRAIN = ["train", "embedder", "model={w.clip}", "output_dir={w.out}", "max_steps=1", "use_cpu=true"]
TRAIN_OK = [*TRAIN, "train_data={w.d}/pairs_latin1.jsonl"]
BUILD = ["index", "build", "--model", "{w.clip}", "--out", "{w.out}"]
EVAL = ["eval", "mmeb", "--model", "{w.clip}", "--data-root", "{w.d}", "--out", "{w.out}", "--no-report"]
EGRL = ["train", "eg-rl", "reasoner=r", "embedder=e", "train_data={w.synth}/train/pairs.jsonl", "data_root={w.synth}",
        "output_dir={w.out}", "use_cpu=true"]
SFT = ["train", "reasoner-sft", "model=m", "train_data=t.jsonl", "output_dir={w.out}", "use_cpu=true"]

CASES: list[Case] = []


def case(id: str, run, outcome: str, expect: str) -> None:
    CASES.append(Case(id, run, outcome, expect))


# corpora, each through `index build` and `index add`
CORPUS_ERRORS = {
    "corpus_latin1": ("{w.d}/corpus_latin1.jsonl:2: not UTF-8 text (byte 0xe9)"),
    "corpus_malformed": "{w.d}/corpus_malformed.jsonl:2: malformed JSON",
    "corpus_array": "{w.d}/corpus_array.jsonl:2: expected a JSON object, got list",
    "corpus_image_int": "{w.d}/corpus_image_int.jsonl:1: 'image' must be a file path (a string), not a number",
    "corpus_text_int": "{w.d}/corpus_text_int.jsonl:1: 'text' must be a string, not a number (12345)",
    "corpus_text_list": "{w.d}/corpus_text_list.jsonl:1: 'text' must be a string, not a list",
    "corpus_frames_str": "{w.d}/corpus_frames_str.jsonl:1: 'frames' must be a list of frame paths, not a string",
    "corpus_frames_ints": "{w.d}/corpus_frames_ints.jsonl:1: 'frames' must be a list of frame paths (strings)",
    "corpus_instruction_int": "{w.d}/corpus_instruction_int.jsonl:1: 'instruction' must be a string",
    "corpus_id_object": "{w.d}/corpus_id_object.jsonl:1: 'id' must be a string or a number, not an object",
    "corpus_id_bool": "{w.d}/corpus_id_bool.jsonl:1: 'id' must be a string or a number, not a boolean",
    "corpus_no_content": "{w.d}/corpus_no_content.jsonl:1: item has no text, image or frames",
    "corpus_dup_ids": "{w.d}/corpus_dup_ids.jsonl: duplicate item id 'a'",
    "corpus_empty": "corpus {w.d}/corpus_empty.jsonl holds no items",
    "corpus_blank": "corpus {w.d}/corpus_blank.jsonl holds no items",
    "corpus_unknown_field_typo": "{w.d}/corpus_unknown_field_typo.jsonl:1: item has no text, image or frames",
}
for name, message in CORPUS_ERRORS.items():
    case(f"index-build-{name}", cli(*BUILD, "--corpus", f"{{w.d}}/{name}.jsonl"), ERROR, message)
    case(f"index-add-{name}", cli("index", "add", "{w.fresh_index}", "--corpus", f"{{w.d}}/{name}.jsonl"), ERROR,
         message)

case("index-build-all-corrupt", cli(*BUILD, "--corpus", "{w.d}/corpus_all_corrupt.jsonl"), ERROR,
     "no item of the corpus could be encoded (see")
for name, item in (("one_corrupt", "cannot read image {w.d}/img/corrupt.png"),
                   ("one_missing", "image not found: {w.d}/img/gone.png"),
                   ("frames_missing", "image not found: {w.d}/img/gone.png")):
    case(f"index-build-{name}", cli(*BUILD, "--corpus", f"{{w.d}}/corpus_{name}.jsonl", report=build_report), SKIPPED,
         item)
    case(f"index-add-{name}", cli("index", "add", "{w.fresh_index}", "--corpus", f"{{w.d}}/corpus_{name}.jsonl",
                                  report=build_report), SKIPPED, item)
case("index-add-all-corrupt", cli("index", "add", "{w.fresh_index}", "--corpus", "{w.d}/corpus_all_corrupt.jsonl",
                                  report=build_report), SKIPPED, "cannot read image {w.d}/img/corrupt.png")
case("index-add-duplicate-ids", cli("index", "add", "{w.fresh_index}", "--corpus", "{w.d}/corpus_dup_of_index.jsonl"),
     ERROR, "1 item id(s) are already in")
case("index-add-duplicate-ids-skip", cli("index", "add", "{w.fresh_index}", "--corpus",
                                         "{w.d}/corpus_dup_of_index.jsonl", "--duplicates", "skip",
                                         report=build_report), SKIPPED, '"reason": "id already in the index"')
case("index-add-same-corpus-again", cli("index", "add", "{w.fresh_index}", "--corpus", "{w.d}/corpus_ok.jsonl"),
     ERROR, "3 item id(s) are already in")
case("index-build-empty-folder", cli(*BUILD, "--corpus", "{w.d}/empty_folder"), ERROR,
     "corpus {w.d}/empty_folder holds no items")
case("index-build-corrupt-folder", cli(*BUILD, "--corpus", "{w.d}/corrupt_folder"), ERROR,
     "no item of the corpus could be encoded")
case("index-build-corpus-missing", cli(*BUILD, "--corpus", "{w.d}/nowhere.jsonl"), ERROR,
     "corpus not found: {w.d}/nowhere.jsonl")
case("index-build-corpus-unknown-set", cli(*BUILD, "--corpus", "{w.d}/registry.yaml:Nope"), ERROR,
     "no dataset named 'Nope'")
case("index-build-corpus-type-bogus", cli(*BUILD, "--corpus", "{w.d}/corpus_ok.jsonl", "--corpus-type", "csv"),
     REFUSED, "invalid choice: 'csv'")
case("index-build-corpus-type-mismatch", cli(*BUILD, "--corpus", "{w.d}/corpus_ok.jsonl", "--corpus-type", "images"),
     ERROR, "corpus folder not found: {w.d}/corpus_ok.jsonl")
for name, model, message in (("missing", "/nonexistent/model", "embedder not found: /nonexistent/model (no such directory"),
                             ("relative-missing", "./no/such/model", "embedder not found: ./no/such/model"),
                             ("is-a-file", "{w.d}/a_file.txt", "{w.d}/a_file.txt is a file"),
                             ("empty-folder", "{w.d}/empty_folder", "cannot load embedder '{w.d}/empty_folder'")):
    case(f"index-build-model-{name}", cli("index", "build", "--model", model, "--corpus", "{w.d}/corpus_ok.jsonl",
                                          "--out", "{w.out}"), ERROR, message)
case("index-build-reasoner-missing", cli(*BUILD, "--corpus", "{w.d}/corpus_ok.jsonl", "--reasoner", "/nonexistent/r"),
     ERROR, "reasoner '/nonexistent/r' is not a model directory")
case("index-build-tcot-modalities-bogus", cli(*BUILD, "--corpus", "{w.d}/corpus_ok.jsonl", "--reasoner", "{w.clip}",
                                              "--tcot-modalities", "audio"), ERROR, "not ['audio']")
for flag, value, message in (("--batch-size", "0", "batch size must be at least 1, not 0"),
                             ("--batch-size", "-4", "batch size must be at least 1, not -4"),
                             ("--shard-size", "0", "shard size must be at least 1"),
                             ("--factory", "IVF,Nope", "invalid FAISS factory string 'IVF,Nope'"),
                             ("--factory", "IVF256,Flat", "at least 256 vectors"),
                             ("--batch-size", "many", "invalid int value: 'many'"),
                             ("--gpu", None, "--gpu needs faiss-gpu")):
    extra = [flag] + ([value] if value is not None else [])
    outcome = REFUSED if value == "many" else ERROR
    case(f"index-build{flag}-{value}", cli(*BUILD, "--corpus", "{w.d}/corpus_ok.jsonl", *extra), outcome, message)
case("index-build-out-is-a-file", cli("index", "build", "--model", "{w.clip}", "--corpus", "{w.d}/corpus_ok.jsonl",
                                      "--out", "{w.d}/a_file.txt"), ERROR, "cannot create directory {w.d}/a_file.txt")
case("index-build-over-another-corpus", cli("index", "build", "--model", "{w.clip}", "--corpus",
                                            "{w.d}/corpus_more.jsonl", "--out", "{w.fresh_index}"), ERROR,
     "holds a build of another corpus or model (differs in: corpus, count); choose another --out or pass --overwrite")
case("index-add-no-index", cli("index", "add", "{w.d}/nowhere", "--corpus", "{w.d}/corpus_more.jsonl"), ERROR,
     "index directory not found: {w.d}/nowhere")
case("index-add-not-an-index", cli("index", "add", "{w.d}/empty_folder", "--corpus", "{w.d}/corpus_more.jsonl"), ERROR,
     "{w.d}/empty_folder is not a complete index: no manifest.json")
case("index-add-other-model", cli("index", "add", "{w.fresh_index}", "--corpus", "{w.d}/corpus_more.jsonl", "--model",
                                  "{w.root}/other_clip"), ERROR, "does not match the index")
case("index-add-duplicates-bogus", cli("index", "add", "{w.fresh_index}", "--corpus", "{w.d}/corpus_more.jsonl",
                                       "--duplicates", "merge"), REFUSED, "invalid choice: 'merge'")
case("index-add-batch-size-0", cli("index", "add", "{w.fresh_index}", "--corpus", "{w.d}/corpus_more.jsonl",
                                   "--batch-size", "0"), ERROR, "batch size must be at least 1, not 0")


def _break_index(damage: Callable[[Path], None]):
    def run(w: World):
        folder = Path(w.fresh_index)
        damage(folder)
        return cli("index", "search", str(folder), "--text", "red")(w)
    return run


def _manifest(folder: Path) -> Path:
    return folder / "manifest.json"


case("index-search-no-query", cli("index", "search", "{w.root}/index"), ERROR, "give a query: --text, --image")
case("index-search-k-abc", cli("index", "search", "{w.root}/index", "--text", "x", "-k", "abc"), REFUSED,
     "invalid int value: 'abc'")
case("index-search-k-0", cli("index", "search", "{w.root}/index", "--text", "x", "-k", "0"), ERROR,
     "-k 0: the number of hits must be at least 1")
case("index-search-k-negative", cli("index", "search", "{w.root}/index", "--text", "x", "-k", "-3"), ERROR,
     "-k -3: the number of hits must be at least 1")
case("index-search-param-no-value", cli("index", "search", "{w.root}/index", "--text", "x", "--param", "nprobe"),
     ERROR, "--param 'nprobe': expected NAME=NUMBER")
case("index-search-param-not-number", cli("index", "search", "{w.root}/index", "--text", "x", "--param", "nprobe=lots"),
     ERROR, "--param 'nprobe=lots': expected NAME=NUMBER")
case("index-search-param-wrong-index", cli("index", "search", "{w.root}/index", "--text", "x", "--param",
                                           "efSearch=5"), ERROR, "cannot set search parameters 'efSearch=5'")
case("index-search-image-missing", cli("index", "search", "{w.root}/index", "--image", "{w.d}/img/gone.png"), ERROR,
     "image not found: {w.d}/img/gone.png")
case("index-search-image-corrupt", cli("index", "search", "{w.root}/index", "--image", "{w.d}/img/corrupt.png"),
     ERROR, "cannot read image {w.d}/img/corrupt.png")
case("index-search-frames-missing", cli("index", "search", "{w.root}/index", "--frames", "{w.d}/nowhere"), ERROR,
     "corpus folder not found: {w.d}/nowhere")
case("index-search-frames-empty", cli("index", "search", "{w.root}/index", "--frames", "{w.d}/empty_folder"), ERROR,
     "expected one folder of frames, found 0 videos")
case("index-search-no-index", cli("index", "search", "{w.d}/nowhere", "--text", "x"), ERROR,
     "index directory not found: {w.d}/nowhere")
case("index-search-corrupt-index-file", _break_index(lambda f: (f / "index.faiss").write_bytes(b"junk")), ERROR,
     "index.faiss is corrupt or unreadable")
case("index-search-index-file-gone", _break_index(lambda f: (f / "index.faiss").unlink()), ERROR,
     "index file missing")
case("index-search-store-gone", _break_index(lambda f: (f / "store.sqlite").unlink()), ERROR, "metadata store missing")
case("index-search-store-corrupt", _break_index(lambda f: (f / "store.sqlite").write_bytes(b"junk" * 300)), ERROR,
     "store.sqlite is unreadable")
case("index-search-manifest-latin1", _break_index(lambda f: _manifest(f).write_bytes(b'{"format": "caf\xe9"}')),
     ERROR, "manifest.json:1: not UTF-8 text (byte 0xe9)")
case("index-search-manifest-invalid", _break_index(lambda f: _manifest(f).write_text('{"format": ')), ERROR,
     "manifest.json: invalid JSON at line 1")
case("index-search-manifest-foreign", _break_index(lambda f: _manifest(f).write_text('{"format": 99}')), ERROR,
     "not an embedrl index manifest")
case("index-search-manifest-count", _break_index(lambda f: _manifest(f).write_text(
    _manifest(f).read_text().replace('"count": 3', '"count": 7'))), ERROR, "index file holds 3 vectors of dim 64, the "
     "manifest says 7")
case("index-info-no-index", cli("index", "info", "{w.d}/nowhere"), ERROR, "index directory not found: {w.d}/nowhere")
case("index-info-not-an-index", cli("index", "info", "{w.d}/empty_folder"), ERROR, "is not a complete index")

# training configs: the overrides of every training command, through the typed conversion
OVERRIDES = {
    "max_steps=abc": "config key max_steps must be a whole number, not 'abc'",
    "max_steps=1.5": "config key max_steps must be a whole number, not 1.5",
    "learning_rate=fast": "config key learning_rate must be a number, not 'fast'",
    "learning_rate=nan": "config key learning_rate must be a number, not 'nan'",
    "per_device_train_batch_size=0": "config key per_device_train_batch_size must be at least 1, not 0",
    "per_device_train_batch_size=-2": "config key per_device_train_batch_size must be at least 1, not -2",
    "gradient_accumulation_steps=0": "config key gradient_accumulation_steps must be at least 1, not 0",
    "num_train_epochs=lots": "config key num_train_epochs must be a number, not 'lots'",
    "seed=1.5": "config key seed must be a whole number, not 1.5",
    "report_to=[1, true]": "config key report_to[1] must be text, not True",
    "save_strategy=sometimes": "sometimes is not a valid SaveStrategy",
    "lr_scheduler_type=bumpy": "bumpy is not a valid SchedulerType",
    "no_such_key=1": "unknown config key(s)",
    "max_stpes=1": "max_stpes (did you mean max_steps?)",
    "max_steps": "override 'max_steps' is not of the form key=value",
    "=1": "override '=1' is not of the form key=value",
}
EMBEDDER_OVERRIDES = {
    "use_tcot=maybe": "config key use_tcot must be true or false, not 'maybe'",
    "lora=2": "config key lora must be true or false, not 2",
    "skip_bad=perhaps": "config key skip_bad must be true or false, not 'perhaps'",
    "hard_negatives=abc": "config key hard_negatives must be a whole number, not 'abc'",
    "hard_negatives=-1": "config key hard_negatives must be at least 0, not -1",
    "dataset_weights=[1,2]": "config key dataset_weights must be a mapping, e.g. {name: value}, not [1, 2]",
    "dataset_weights={a: heavy}": "config key dataset_weights['a'] must be a number, not 'heavy'",
    "temperature=cold": "config key temperature must be a number, not 'cold'",
    "temperature=0": "temperature must be positive",
    "tcot_dropout=some": "config key tcot_dropout must be a number, not 'some'",
    "gradcache_chunk_size=abc": "config key gradcache_chunk_size must be a whole number, not 'abc'",
    "lora_r=0": "config key lora_r must be at least 1, not 0",
}
for override, message in {**OVERRIDES, **EMBEDDER_OVERRIDES}.items():
    case(f"train-embedder-{override}", cli(*TRAIN, "train_data=t.jsonl", override), ERROR, message)
for override in ("max_steps=abc", "per_device_train_batch_size=0", "no_such_key=1"):
    case(f"train-sft-{override}", cli(*SFT, override), ERROR, OVERRIDES[override])
EGRL_OVERRIDES = {
    "outcome_form=best": "outcome_form must be one of",
    "outcome_failure=shrug": "outcome_failure must be one of",
    "target_view=sideways": "target_view must be one of",
    "candidate_tcots=some": "candidate_tcots must be one of",
    "format_weight=abc": "config key format_weight must be a number, not 'abc'",
    "num_generations=1": "config key num_generations must be at least 2, not 1",
    "outcome_negatives=several": "outcome negatives must be `batch`, `all`, `dataset` or a positive number of pairs",
    "tcot_mode_by_set={Synth-T2I: sideways}": "tcot_mode_by_set: modes must be one of",
    "max_completion_length=0": "config key max_completion_length must be at least 1, not 0",
}
for override, message in EGRL_OVERRIDES.items():
    case(f"train-eg-rl-{override}", cli(*EGRL, override), ERROR, message)
case("train-eg-rl-all-weights-zero", cli(*EGRL, "format_weight=0", "process_weight=0", "outcome_weight=0"), ERROR,
     "at least one of format_weight, process_weight, outcome_weight must be non-zero")
case("train-eg-rl-modalities-audio", cli(*EGRL, "modalities=[audio]"), ERROR, "not ['audio']")
case("train-embedder-no-model", cli("train", "embedder", "train_data=t.jsonl", "output_dir={w.out}"), ERROR,
     "set `model` and the training data")
for name, message in (("config_latin1", "config_latin1.yaml:1: not UTF-8 text (byte 0xe9)"),
                      ("config_invalid", "config_invalid.yaml: invalid YAML at line 2, column 1: expected ',' or ']'"),
                      ("config_list", "config_list.yaml: expected a mapping of key: value at the top level"),
                      ("config_unknown_key", "modle (did you mean model?)"),
                      ("config_lora_maybe", "config key lora must be true or false, not 'maybe' (set in {w.d}/"),
                      ("config_missing", "config file not found: {w.d}/config_missing.yaml")):
    case(f"train-embedder-{name}", cli("train", "embedder", "--config", f"{{w.d}}/{name}.yaml"), ERROR, message)

# training data: pairs files, after the model loads
PAIRS_ERRORS = {
    "pairs_latin1": "pairs_latin1.jsonl:2: not UTF-8 text (byte 0xe9)",
    "pairs_malformed": "pairs_malformed.jsonl:2: malformed JSON",
    "pairs_qry_int": "pairs_qry_int.jsonl:2: 'qry' must be a string, not a number (7)",
    "pairs_pos_text_list": "pairs_pos_text_list.jsonl:2: 'pos_text' must be a string, not a list",
    "pairs_neg_image_int": "pairs_neg_image_int.jsonl:2: 'neg_image_path' must be a file path (a string), not a number",
    "pairs_qry_image_object": "pairs_qry_image_object.jsonl:2: 'qry_image_path' must be a file path (a string)",
    "pairs_qry_tcot_int": "pairs_qry_tcot_int.jsonl:2: 'qry_tcot' must be a string, not a number",
    "pairs_neg_text_int": "pairs_neg_text_int.jsonl:2: 'neg_text' must be a string, not a number",
    "pairs_neg_frames_flat": "pairs_neg_frames_flat.jsonl:2: 'neg_frames' must hold one list of frame paths per hard",
    "pairs_qry_frames_str": "pairs_qry_frames_str.jsonl:2: 'qry_frames' must be a list of frame paths, not a string",
    "pairs_no_qry": "pairs_no_qry.jsonl:2: missing field 'qry'",
    "pairs_no_pos": "pairs_no_pos.jsonl:2: missing field 'pos_text'",
    "pairs_missing_image": "pairs_missing_image.jsonl:2: image not found: {w.d}/img/gone.png",
    "pairs_corrupt_image": "pairs_corrupt_image.jsonl:2: cannot read image {w.d}/img/corrupt.png",
    "pairs_neg_tcot_count": "pairs_neg_tcot_count.jsonl:2: 'neg_tcot' has 1 entries for 2 hard negatives",
    "pairs_dataset_object": "pairs_dataset_object.jsonl:2: 'dataset' must be a name (a string), not an object",
    "pairs_empty": "pairs_empty.jsonl: no usable pairs",
}
for name, message in PAIRS_ERRORS.items():
    case(f"train-embedder-{name}", cli(*TRAIN, f"train_data={{w.d}}/{name}.jsonl"), ERROR, message)
    if name not in ("pairs_empty",):
        def skipped(w: World, name: str = name):
            from embedrl.data.pairs import read_pairs

            pairs, lines = read_pairs(Path(w.d) / f"{name}.jsonl", skip_bad=True)
            return f"{len(pairs)} pairs kept; skipped: " + "\n".join(lines)
        case(f"read-pairs-skip-bad-{name}", skipped, SKIPPED, message.split(".jsonl:")[1] if ".jsonl:" in message
             else message)
case("train-embedder-skip-bad-runs-on", cli(*TRAIN_OK, "--skip-bad"), SKIPPED,
     "skipped 1 bad row(s) of the training data; first: {w.d}/pairs_latin1.jsonl:2: not UTF-8 text")
case("train-embedder-all-bad-with-skip-bad", cli(*TRAIN, "train_data={w.d}/pairs_all_bad.jsonl", "--skip-bad"), ERROR,
     "pairs_all_bad.jsonl: no usable pairs (2 skipped)")
case("train-embedder-train-data-missing", cli(*TRAIN, "train_data={w.d}/nowhere.jsonl"), ERROR,
     "file not found: {w.d}/nowhere.jsonl")
case("train-embedder-model-missing", cli("train", "embedder", "model=/nonexistent/m", "train_data=x.jsonl",
                                         "output_dir={w.out}", "use_cpu=true"), ERROR,
     "embedder not found: /nonexistent/m")
case("train-embedder-lora-on-clip", cli(*TRAIN_OK, "lora=true"), ERROR, "LoRA is supported for VLM embedders")

# evaluation: a row that cannot be used is a missed query (scored 0), named with its file and line, and the run goes on
for bad, message in (("latin1", "Toy_latin1.jsonl:2: not UTF-8 text (byte 0xe9)"),
                     ("malformed", "Toy_malformed.jsonl:2: malformed JSON"),
                     ("img_int", "Toy_img_int.jsonl:2: a media path must be a string, not a number (5)"),
                     ("rel", "Toy_rel.jsonl:2: tgt_rel must be a list of 2 numbers"),
                     ("no_cands", "Toy_no_cands.jsonl:2: no candidates"),
                     ("lengths", "Toy_lengths.jsonl:2: tgt_img_path has 2 entries but there are 3 candidates")):
    case(f"eval-mmeb-rows-{bad}", cli(*EVAL, "--registry", f"{{w.d}}/rows_{bad}.yaml"), SKIPPED, message)
case("eval-mmeb-missing-media", cli(*EVAL, "--registry", "{w.d}/rows_missing_media.yaml"), SKIPPED,
     "Toy_missing_media.jsonl:2: relevant candidate unusable: image img/gone.png not found ({w.d}/img/gone.png)")
case("eval-mmeb-dataset-files-missing", cli(*EVAL, "--registry", "{w.d}/registry_two.yaml", "--data-root",
                                            "{w.d}/empty_folder"), SKIPPED, "missing: Toy: missing {w.d}/empty_folder/Toy.jsonl")
for name, message in (("beir_Doc", "qrels.tsv:2: score 'lots' is not a number"),
                      ("beir_Cols", "qrels.tsv:1: expected 3 tab-separated columns"),
                      ("beir_Unknown", "queries.jsonl:1: relevant candidate unusable: relevant candidate 'd9' is not in the pool")):
    case(f"eval-mmeb-{name}", cli(*EVAL, "--registry", f"{{w.d}}/registry_{name}.yaml"), ERROR, message)
for name, message in (("registry_latin1", "registry_latin1.yaml:2: not UTF-8 text"),
                      ("registry_invalid", "registry_invalid.yaml: invalid YAML at line 2"),
                      ("registry_empty", "registry_empty.yaml: expected a non-empty 'datasets:' list"),
                      ("registry_modality", "dataset Toy: modality 'audio' not in"),
                      ("registry_dupes", "registry_dupes.yaml: duplicate dataset names: Toy"),
                      ("registry_reader", "unknown reader 'csv_rows'"),
                      ("registry_missing_field", "registry_missing_field.yaml: datasets[0] (Toy)"),
                      ("registry_nowhere", "registry not found: {w.d}/registry_nowhere.yaml")):
    case(f"eval-mmeb-{name}", cli(*EVAL, "--registry", f"{{w.d}}/{name}.yaml"), ERROR, message)
case("eval-mmeb-registry-unknown-name", cli(*EVAL, "--registry", "mmeb_v3"), ERROR, "no registry 'mmeb_v3'")
case("eval-mmeb-data-root-missing", cli("eval", "mmeb", "--model", "{w.clip}", "--data-root", "/nonexistent",
                                        "--registry", "{w.d}/registry.yaml", "--out", "{w.out}"), ERROR,
     "data root /nonexistent is not a directory")
case("eval-mmeb-datasets-unknown", cli(*EVAL, "--registry", "{w.d}/registry.yaml", "--datasets", "Toyy"), ERROR,
     "unknown dataset(s): Toyy")
case("eval-mmeb-tcot-without-reasoner", cli(*EVAL, "--registry", "{w.d}/registry.yaml", "--tcot", "both"), ERROR,
     "--tcot both needs --reasoner")
case("eval-mmeb-reasoner-without-tcot", cli(*EVAL, "--registry", "{w.d}/registry.yaml", "--reasoner", "r"), ERROR,
     "--reasoner given but --tcot is none")
case("eval-mmeb-tcot-bogus", cli(*EVAL, "--registry", "{w.d}/registry.yaml", "--tcot", "sometimes"), REFUSED,
     "invalid choice: 'sometimes'")
case("eval-mmeb-tcot-set-bad", cli(*EVAL, "--registry", "{w.d}/registry.yaml", "--tcot-set", "Toy:target"), ERROR,
     "--tcot-set 'Toy:target' is not NAME=MODE")
case("eval-mmeb-tcot-set-unknown-set", cli(*EVAL, "--registry", "{w.d}/registry.yaml", "--reasoner", "{w.clip}",
                                           "--tcot-set", "Toyy=target"), ERROR,
     "per-set T-CoT modes name ['Toyy'], which this registry does not hold")
case("eval-mmeb-batch-size-0", cli(*EVAL, "--registry", "{w.d}/registry.yaml", "--batch-size", "0"), ERROR,
     "--batch-size must be at least 1")
case("eval-mmeb-other-model-same-out", cli("eval", "mmeb", "--model", "{w.root}/other_clip", "--data-root", "{w.d}",
                                           "--registry", "{w.d}/registry.yaml", "--out", "{w.fresh_results}"), ERROR,
     "holds scores of another run: Toy differs in model hash")
case("eval-mmeb-model-missing", cli("eval", "mmeb", "--model", "/nonexistent/m", "--data-root", "{w.d}", "--registry",
                                    "{w.d}/registry.yaml", "--out", "{w.out}"), ERROR, "embedder not found")


def report_of(name: str, expect_warning: bool = True):
    def run(w: World):
        import logging

        records: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())

        handler = Keep(level=logging.WARNING)
        logging.getLogger("embedrl.eval.report").addHandler(handler)
        try:
            code = main(["eval", "report", f"{w.d}/{name}.json", "--no-plot", "--no-baselines"])
        finally:
            logging.getLogger("embedrl.eval.report").removeHandler(handler)
        return ("cli", code, [], lambda w, out, args: out + "\n".join(records))
    return run


for name, message in (("results_percent", "Toy: hit@1 = 50 is outside 0-1"),
                      ("results_negative", "Toy: hit@1 = -0.5 is outside 0-1"),
                      ("results_nan", "Toy: hit@1 is NaN"),
                      ("results_typo", "Toyy: not a dataset of this registry (did you mean Toy?)"),
                      ("results_no_metric", "Toy: no number for its main metric 'hit@1' (it has: recall@5)")):
    case(f"eval-report-{name}", report_of(name), SKIPPED, message)
for name, message in (("results_metadata_str", "'metadata' must be a mapping"),
                      ("results_latin1", "results_latin1.json:1: not UTF-8 text (byte 0xe9)"),
                      ("results_invalid", "results_invalid.json: invalid JSON at line 1"),
                      ("results_list", "results_list.json: not a leaderboard-format result"),
                      ("results_no_metrics", "results_no_metrics.json: not a leaderboard-format result"),
                      ("results_nowhere", "file not found: {w.d}/results_nowhere.json")):
    case(f"eval-report-{name}", cli("eval", "report", f"{{w.d}}/{name}.json", "--no-plot"), ERROR, message)
case("eval-report-empty-folder", cli("eval", "report", "{w.d}/empty_folder", "--no-plot"), ERROR,
     "{w.d}/empty_folder: no results.json and no */*_score.json files")
case("eval-report-registry-unknown", cli("eval", "report", "{w.d}/results_ok.json", "--registry", "nope", "--no-plot"),
     ERROR, "no registry 'nope'")
case("eval-quick-no-registry", cli("eval", "quick", "--model", "{w.clip}", "--data", "{w.d}/empty_folder"), ERROR,
     "{w.d}/empty_folder has no registry.yaml")

# the demo: its command line, and uploads
DEMO = ["demo", "--index", "{w.root}/index"]
for extra, outcome, message in ((["--concurrency", "0"], ERROR, "--concurrency must be at least 1"),
                                (["--port", "70000"], ERROR, "--port 70000 is not a TCP port"),
                                (["--port", "http"], REFUSED, "invalid int value: 'http'"),
                                (["--max-upload-mb", "0"], ERROR, "--max-upload-mb and --max-pixels must be positive"),
                                (["--max-upload-mb", "nan"], ERROR, "--max-upload-mb and --max-pixels must be positive"),
                                (["--max-pixels", "0"], ERROR, "--max-upload-mb and --max-pixels must be positive"),
                                (["--host", "not-a-host.invalid"], ERROR, "cannot serve the demo on not-a-host.invalid")):
    case(f"demo{'-'.join(['', *extra])}", cli(*DEMO, *extra), outcome, message)
case("demo-index-missing", cli("demo", "--index", "{w.d}/nowhere"), ERROR, "index directory not found: {w.d}/nowhere")


def demo_on_a_busy_port(w: World):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        return cli(*DEMO, "--port", str(busy.getsockname()[1]))(w)


case("demo-port-in-use", demo_on_a_busy_port, ERROR, "Address already in use (pass --port with a free port)")


def upload(name: str, **limits):
    def run(w: World):
        from embedrl.demo.uploads import UploadLimits, check_image_upload

        check_image_upload(Path(w.d) / name, UploadLimits(**limits))
        return "accepted"
    return run


for name, limits, message in (("upload_text.png", {}, "not an image"), ("upload.svg", {}, "not an image"),
                              ("upload_empty.png", {}, "not an image"), ("upload_cut.png", {}, "could not be decoded"),
                              ("upload_bomb.png", {}, "megapixels"),
                              ("upload_big.png", {"max_upload_mb": 0.1}, "MB; the limit is 0.1 MB"),
                              ("upload_big.png", {"max_pixels": 100_000}, "600x600 pixels; the limit is 0.1"),
                              ("nowhere.png", {}, "could not be read")):
    case(f"demo-upload-{name}-{'-'.join(map(str, limits.values())) or 'default'}", upload(name, **limits), REFUSED,
         message)

# other commands
for name, argv, outcome, message in (
        ("presets-make-unknown", ("presets", "make", "tiny-giant", "--out", "{w.out}"), ERROR,
         "unknown preset 'tiny-giant'"),
        ("presets-make-out-is-a-file", ("presets", "make", "tiny-clip", "--out", "{w.d}/a_file.txt"), ERROR,
         "{w.d}/a_file.txt is a file"),
        ("presets-make-over-a-foreign-folder", ("presets", "make", "tiny-clip", "--out", "{w.d}/img"), ERROR,
         "{w.d}/img is not empty and was not made by `embedrl presets make`"),
        ("data-synth-size-bogus", ("data", "synth", "--out", "{w.out}", "--size", "huge"), REFUSED,
         "invalid choice: 'huge'"),
        ("data-mine-negatives-pairs-missing", ("data", "mine-negatives", "--model", "{w.clip}", "--pairs",
                                               "{w.d}/nowhere.jsonl", "--out", "{w.out}"), ERROR,
         "file not found: {w.d}/nowhere.jsonl"),
        ("data-mine-negatives-latin1", ("data", "mine-negatives", "--model", "{w.clip}", "--pairs",
                                        "{w.d}/pairs_latin1.jsonl", "--out", "{w.out}"), ERROR,
         "pairs_latin1.jsonl:2: not UTF-8 text"),
        ("bench-index-n-0", ("bench", "index", "--n", "0", "--no-autofaiss"), ERROR,
         "--n, --dim and --nq must be positive"),
        ("bench-index-vectors-not-numpy", ("bench", "index", "--vectors", "{w.d}/vectors.npy", "--no-autofaiss"),
         ERROR, "vectors.npy"),
        ("bench-faults-unknown-case", ("bench", "faults", "--cases", "index-rebuild"), REFUSED,
         "invalid choice: 'index-rebuild'"),
        ("eval-ablation-config-missing", ("eval", "ablation", "--config", "{w.d}/nowhere.yaml"), ERROR,
         "config file not found: {w.d}/nowhere.yaml"),
        ("no-such-command", ("index", "rebuild"), REFUSED, "invalid choice: 'rebuild'")):
    case(name, cli(*argv), outcome, message)


# ---------------------------------------------------------------- running a case

def _observe(case: Case, w: World, capsys) -> tuple[str, str]:
    """(the class of what happened, the message or report it gave)."""
    from embedrl.demo.uploads import UploadRejected

    capsys.readouterr()
    try:
        result = case.run(w)
    except SystemExit as e:  # argparse: a usage error
        err = capsys.readouterr().err.strip().splitlines()
        ok = e.code == 2 and len(err) == 1 and "error:" in err[0]
        return (REFUSED if ok else "unclear"), "\n".join(err)
    except UploadRejected as e:
        return REFUSED, str(e)
    except EmbedrlError as e:
        return ERROR, str(e)
    except Exception as e:  # noqa: BLE001 - what the probe looks for
        return "traceback", f"{type(e).__name__}: {e}"
    captured = capsys.readouterr()
    if not (isinstance(result, tuple) and result[0] == "cli"):
        return (SKIPPED if case.outcome == SKIPPED else "silent"), str(result)
    _, code, args, report = result
    if code == 1:
        lines = captured.err.strip().splitlines()
        ok = len(lines) == 1 and lines[0].startswith("embedrl: error: ")
        return (ERROR if ok else "unclear"), captured.err.strip()
    if code != 0:
        return "unclear", captured.err
    if case.outcome != SKIPPED:
        return "silent", captured.out[-500:] + captured.err[-500:]
    text = captured.out + captured.err
    return SKIPPED, report(w, text, args) if report is not None else text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, capsys, caplog):
    with caplog.at_level("WARNING"):
        observed, message = _observe(case, world, capsys)
    if observed == SKIPPED:
        message += "\n" + caplog.text
    if observed in (ERROR, REFUSED, SKIPPED) and fill(case.expect, world) not in message:
        observed = "unclear"  # it failed or skipped, but without naming what
    OUTCOMES[case.id] = observed
    assert observed == case.outcome, f"{case.id}: expected {case.outcome}, got {observed}: {message[-1500:]}"


def test_the_suite_is_large_and_its_ids_unique():
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)


def summary_line() -> str | None:
    """The suite's summary (conftest prints it): cases, each class observed, tracebacks, silent."""
    if not OUTCOMES:
        return None
    counts = {k: sum(v == k for v in OUTCOMES.values()) for k in (ERROR, SKIPPED, REFUSED, "traceback", "silent",
                                                                  "unclear")}
    return (f"bad-input suite: {len(OUTCOMES)} cases, {counts[ERROR]} clear errors, {counts[SKIPPED]} skipped and "
            f"reported, {counts[REFUSED]} refused; tracebacks = {counts['traceback']}, silent = {counts['silent']}, "
            f"unclear messages = {counts['unclear']}")
