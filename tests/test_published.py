"""Readers of the published layouts on fixtures written here in each layout (tests/published.py):
items, pools and relevance against what the rows say, missed rows named by dataset, file and row."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import datasets
import pytest
from PIL import Image
from published import (
    COLORS,
    frames,
    hub_repo,
    image_rows,
    image_spec,
    page_features,
    png,
    zip_folder,
)

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import MediaRef, load_image
from embedrl.data.evalset import MissingData
from embedrl.data.readers import read_task
from embedrl.data.registry import DatasetSpec

IMG = "<|image_1|>"


def _cls_rows(root: Path) -> list[dict]:
    for name, color in COLORS.items():
        png(root / "image-tasks" / "Toy-CLS" / f"{name}.jpg", color)
    return [
        {"qry_inst": f"{IMG} Represent the given image for classification", "qry_text": "",
         "qry_img_path": "Toy-CLS/red.jpg", "tgt_inst": "", "tgt_text": ["red", "green", "blue"],
         "tgt_img_path": ["", "", ""]},
        {"qry_inst": f"{IMG} Represent the given image for classification", "qry_text": "",
         "qry_img_path": "Toy-CLS/gray.jpg", "tgt_inst": "", "tgt_text": ["gray", "blue", "red"],
         "tgt_img_path": ["", "", ""]},
    ]


def test_image_local_cls_items_pool_and_gold_first(tmp_path):
    image_rows({"Toy-CLS": _cls_rows(tmp_path)}, tmp_path)
    task = read_task(image_spec("Toy-CLS", "image_cls"), tmp_path)
    q = task.queries[0]
    assert q.instruction == "Represent the given image for classification" and q.text == ""  # placeholder gone
    assert q.image == str(tmp_path / "image-tasks" / "Toy-CLS" / "red.jpg")
    # candidates named by their text, each built once; no instruction on label candidates (as the harness)
    assert [c.text for c in task.candidates] == ["red", "green", "blue", "gray"]
    assert task.candidate_ids == ["red", "green", "blue", "gray"]
    assert all(c.instruction == "" for c in task.candidates)
    assert task.local_candidates == [[0, 1, 2], [3, 2, 0]]
    assert task.relevance == [{0: 1.0}, {3: 1.0}]  # the first candidate is the gold one


def test_image_t2i_global_pool_is_deduplicated_by_path(tmp_path):
    for name, color in COLORS.items():
        png(tmp_path / "image-tasks" / "Toy-T2I" / f"{name}.jpg", color)
    inst = "Retrieve an image that matches the given caption:"
    rows = [
        {"qry_inst": inst, "qry_text": "a red square", "qry_img_path": "", "tgt_inst": f"{IMG} Represent the image",
         "tgt_text": [""], "tgt_img_path": ["Toy-T2I/red.jpg", "Toy-T2I/green.jpg"]},
        {"qry_inst": inst, "qry_text": "a green square", "qry_img_path": "", "tgt_inst": f"{IMG} Represent the image",
         "tgt_text": [""], "tgt_img_path": ["Toy-T2I/green.jpg", "Toy-T2I/red.jpg", "Toy-T2I/blue.jpg"]},
    ]
    image_rows({"Toy-T2I": rows}, tmp_path)
    task = read_task(image_spec("Toy-T2I", "image_t2i", scope="global"), tmp_path)
    assert task.local_candidates is None  # global: ranked against the pool
    assert task.candidate_ids == ["Toy-T2I/red.jpg", "Toy-T2I/green.jpg", "Toy-T2I/blue.jpg"]
    assert [c.instruction for c in task.candidates] == ["Represent the image"] * 3
    assert all(c.text == "" for c in task.candidates)  # the first caption is empty: no captions
    assert task.relevance == [{0: 1.0}, {1: 1.0}]
    assert task.queries[1].text == "a green square" and task.queries[1].image is None


def test_image_i2i_vg_names_path_and_caption(tmp_path):
    png(tmp_path / "image-tasks" / "Toy-VG" / "scene.jpg", COLORS["red"])
    rows = [{"qry_inst": f"{IMG} Select the portion of the image that follows the language expressions.",
             "qry_text": "the left object", "qry_img_path": "Toy-VG/scene.jpg", "tgt_inst": f"{IMG} Represent it",
             "tgt_text": ['"left"', '"right"'], "tgt_img_path": ["Toy-VG/scene.jpg", "Toy-VG/scene.jpg"]}]
    image_rows({"Toy-VG": rows}, tmp_path)
    task = read_task(image_spec("Toy-VG", "image_i2i_vg"), tmp_path)
    # one picture, two targets: the caption is part of the name (RefCOCO-Matching)
    assert task.candidate_ids == ["Toy-VG/scene.jpg:left", "Toy-VG/scene.jpg:right"]
    assert [c.text for c in task.candidates] == ['"left"', '"right"']


def test_missing_image_and_malformed_row_are_missed_and_named(tmp_path):
    rows = _cls_rows(tmp_path)
    rows.append({**rows[0], "qry_img_path": "Toy-CLS/nowhere.jpg"})
    rows.append({**rows[0], "tgt_text": None})
    image_rows({"Toy-CLS": rows}, tmp_path)
    task = read_task(image_spec("Toy-CLS", "image_cls"), tmp_path)
    assert len(task.queries) == 2 and len(task.missed) == 2
    assert "Toy-CLS" in task.missed[0] and "row 2" in task.missed[0] and "nowhere.jpg" in task.missed[0]
    assert "MMEB_Test_Instruct" in task.missed[0]
    assert "row 3" in task.missed[1] and "malformed" in task.missed[1]
    assert task.absent == {"images": 1}


def test_every_image_absent_is_missing_data_and_no_repo_is_missing(tmp_path):
    rows = _cls_rows(tmp_path)
    image_rows({"Toy-CLS": rows}, tmp_path)
    shutil.rmtree(tmp_path / "image-tasks")
    with pytest.raises(MissingData):
        read_task(image_spec("Toy-CLS", "image_cls"), tmp_path)
    with pytest.raises(MissingData, match="hf/ziyjiang/MMEB_Test_Instruct"):
        read_task(image_spec("Toy-CLS", "image_cls"), tmp_path / "elsewhere")


def test_repo_without_readme_configs_is_read_by_file_names(tmp_path):
    rows = _cls_rows(tmp_path)
    hub_repo(tmp_path / "hf" / "ziyjiang" / "MMEB_Test_Instruct", {"Toy-CLS": {"test": rows}}, readme=False)
    assert len(read_task(image_spec("Toy-CLS", "image_cls"), tmp_path).queries) == 2


def test_images_still_under_the_archive_top_folder(tmp_path):
    rows = _cls_rows(tmp_path / "tmp")
    shutil.move(tmp_path / "tmp" / "image-tasks", tmp_path / "image-tasks" / "MMEB")  # before `mv MMEB/* .`
    image_rows({"Toy-CLS": rows}, tmp_path)
    task = read_task(image_spec("Toy-CLS", "image_cls"), tmp_path)
    assert "image-tasks/MMEB/Toy-CLS/red.jpg" in str(task.queries[0].image)


# ---------------------------------------------------------------- video

def _video_repo(root: Path) -> DatasetSpec:
    hub_repo(root / "hf" / "VLM2Vec" / "Toy-VRet", {"test_1k": {"test": [
        {"video_id": "v_red", "video": "v_red.mp4", "caption": "a red clip"},
        {"video_id": "v_green", "video": "v_green.mp4", "caption": "a green clip"},
        {"video_id": "v_red", "video": "v_red.mp4", "caption": "the red one again"},
    ]}})
    return DatasetSpec("Toy-VRet", "video", "V-RET", "msrvtt", "global", "hit@1", "hf/VLM2Vec/Toy-VRet",
                       media_root=["video-tasks/frames/video_ret/Toy-VRet",
                                   "video-tasks/frames/video_ret/data/ziyan/video_retrieval/Toy-VRet/frames"],
                       num_frames=8, extra={"subset": "test_1k", "split": "test",
                                            "query_instruction": "Find a video that contains the following visual content:",
                                            "target_instruction": "Understand the content of the provided video."})


def test_video_retrieval_with_frame_folders(tmp_path):
    spec = _video_repo(tmp_path)
    base = tmp_path / "video-tasks" / "frames" / "video_ret" / "Toy-VRet"
    frames(base / "v_red", COLORS["red"], 10)
    frames(base / "v_green", COLORS["green"], 5)  # fewer than 8 frames: all are kept
    task = read_task(spec, tmp_path)
    assert task.candidate_ids == ["v_red", "v_green"]  # de-duplicated by video id
    assert task.relevance == [{0: 1.0}, {1: 1.0}, {0: 1.0}]
    names = [Path(f).name for f in task.candidates[0].frames]
    # linspace(0, 9, 8) truncated = 0 1 2 3 5 6 7 9 over frame_0001..frame_0010
    assert names == [f"frame_{i:04d}.jpg" for i in (1, 2, 3, 4, 6, 7, 8, 10)]
    assert len(task.candidates[1].frames) == 5
    assert task.queries[0].text == "a red clip"
    assert task.queries[0].instruction == "Find a video that contains the following visual content:"
    assert task.candidates[0].instruction == "Understand the content of the provided video."


def test_video_frames_read_from_a_zip_and_a_tar_in_the_deep_layout(tmp_path):
    spec = _video_repo(tmp_path)
    src = tmp_path / "src"
    frames(src / "v_red", COLORS["red"], 10)
    frames(src / "v_green", COLORS["green"], 9)
    deep = "data/ziyan/video_retrieval/Toy-VRet/frames/"
    for kind in ("zip", "tar"):
        archive = tmp_path / "video-tasks" / "frames" / f"video_ret.{kind}"
        if kind == "zip":
            zip_folder(src, archive, prefix=deep)
        else:
            with tarfile.open(archive, "w") as t:
                t.add(src, arcname=deep.rstrip("/"))
        spec.extra["archives"] = [f"video-tasks/frames/video_ret.{kind}"]
        task = read_task(spec, tmp_path)
        red = task.candidates[0].frames
        assert all(isinstance(f, MediaRef) for f in red) and len(red) == 8
        assert str(red[-1]).endswith("v_red/frame_0010.jpg")
        pixels = load_image(red[0])
        assert pixels.size == (32, 32) and pixels.getpixel((0, 0)) == load_image(src / "v_red" / "frame_0001.jpg").getpixel((0, 0))
        archive.unlink()


def test_video_with_missing_frames_counts_those_queries_as_missed(tmp_path):
    spec = _video_repo(tmp_path)
    frames(tmp_path / "video-tasks" / "frames" / "video_ret" / "Toy-VRet" / "v_red", COLORS["red"], 8)
    task = read_task(spec, tmp_path)
    assert len(task.queries) == 2 and len(task.missed) == 1 and "v_green" in task.missed[0]
    assert task.absent == {"videos": 1}


def test_video_classification_pool_is_row_labels_then_the_label_list(tmp_path):
    hub_repo(tmp_path / "hf" / "VLM2Vec" / "Toy-CLS", {"default": {"test": [
        {"video_id": "a", "pos_text": "wave"}, {"video_id": "b", "pos_text": "jump"}]}})
    for vid, color in (("a", COLORS["red"]), ("b", COLORS["blue"])):
        frames(tmp_path / "frames" / vid, color, 3)
    spec = DatasetSpec("Toy-VCLS", "video", "V-CLS", "video_classification", "global", "hit@1", "hf/VLM2Vec/Toy-CLS",
                       media_root="frames", extra={"subset": "default", "split": "test",
                                                   "labels": ["clap", "jump", "wave", "run"],
                                                   "query_instruction": "Recognize the category of the video content."})
    task = read_task(spec, tmp_path)
    assert task.candidate_ids == ["wave", "jump", "clap", "run"]
    assert task.relevance == [{0: 1.0}, {1: 1.0}]
    assert task.queries[0].instruction == "Recognize the category of the video content."


def test_moment_retrieval_clips_and_momentseeker_multiple_positives(tmp_path):
    base = tmp_path / "mret"
    for clip, color in (("query", "red"), ("positive_0", "red"), ("negative_1", "blue"), ("negative_2", "gray")):
        frames(base / "vid1" / clip, COLORS[color], 4)
    hub_repo(tmp_path / "hf" / "VLM2Vec" / "Toy-MR", {"default": {"test": [
        {"query": "the red part", "video_path": "some/where/vid1.mp4"}]}})
    spec = DatasetSpec("Toy-MR", "video", "V-MRET", "moment_retrieval", "local", "hit@1", "hf/VLM2Vec/Toy-MR",
                       media_root="mret", extra={"subset": "default"})
    task = read_task(spec, tmp_path)
    assert task.candidate_ids == ["vid1/negative_1", "vid1/negative_2", "vid1/positive_0"]
    assert task.relevance == [{2: 1.0}] and len(task.queries[0].frames) == 4
    for clip, color in (("video_frames/a_b_c1", "red"), ("video_frames/a_b_c2", "green"), ("video_frames/a_b_c3", "blue")):
        frames(base / clip, COLORS[color], 2)
    hub_repo(tmp_path / "hf" / "VLM2Vec" / "Toy-MS", {"default": {"test": [
        {"query": "red or green", "input_frames": "", "positive_frames": [{"output_path": "a/b/c1.mp4"},
                                                                           {"output_path": "a/b/c2.mp4"}],
         "negative_frames": [{"output_path": "a/b/c3.mp4"}]}]}})
    spec = DatasetSpec("Toy-MS", "video", "V-MRET", "momentseeker", "local", "hit@1", "hf/VLM2Vec/Toy-MS",
                       media_root="mret", extra={"subset": "default", "query_instruction_text": "Find the clip:"})
    task = read_task(spec, tmp_path)
    assert task.relevance == [{0: 1.0, 1: 1.0}] and task.queries[0].instruction == "Find the clip:"


def test_video_qa_options_as_each_parser_writes_them(tmp_path):
    frames(tmp_path / "qa" / "vid", COLORS["red"], 2)
    hub_repo(tmp_path / "hf" / "VLM2Vec" / "Toy-QA", {"default": {"test": [
        {"question": "What colour?", "videoID": "vid", "options": ["A. red.", "B. blue.", "C. green.", "D. gray."],
         "answer": "A", "question_id": "1", "domain": "x", "sub_category": "y"}]}})
    spec = DatasetSpec("Toy-QA", "video", "V-QA", "videomme", "local", "hit@1", "hf/VLM2Vec/Toy-QA",
                       media_root="qa", extra={"subset": "default"})
    task = read_task(spec, tmp_path)
    assert [c.text for c in task.candidates] == ["red", "blue", "green", "gray"]
    assert task.candidate_ids[0] == "A. red." and task.relevance == [{0: 1.0}]
    assert task.queries[0].text == "What colour?\nA. red.\nB. blue.\nC. green.\nD. gray."


# ---------------------------------------------------------------- visual documents

def _visdoc(root: Path) -> DatasetSpec:
    pages = {cid: Image.open(png(root / "src" / f"{name}.png", COLORS[name])).convert("RGB")
             for cid, name in ((10, "red"), (11, "red"), (12, "blue"), (13, "green"))}
    hub_repo(root / "hf" / "vidore" / "toy_beir", {
        "corpus": {"test": [{"corpus-id": cid, "image": im} for cid, im in pages.items()]},
        "queries": {"test": [{"query-id": 1, "query": "the red page"}, {"query-id": 2, "query": "the blue page"},
                             {"query-id": 3, "query": "no judgement"}]},
        "qrels": {"test": [{"query-id": 1, "corpus-id": 11, "score": 1.0}, {"query-id": 1, "corpus-id": 10, "score": 2.0},
                           {"query-id": 1, "corpus-id": 13, "score": 0.0}, {"query-id": 1, "corpus-id": 10, "score": 1.0},
                           {"query-id": 2, "corpus-id": 12, "score": 1.0}]},
    }, features=page_features())
    return DatasetSpec("Toy-Doc", "visdoc", "ViDoRe-V1", "vidore", "global", "ndcg_linear@5", "hf/vidore/toy_beir",
                       extra={"split": "test", "query_instruction": "Find a document image that matches the given query:",
                              "target_instruction": "Understand the content of the provided document image."})


def test_visdoc_beir_graded_qrels_and_pages_inside_the_dataset(tmp_path):
    task = read_task(_visdoc(tmp_path), tmp_path)
    # positives first in query order (qrels order), then the rest of the corpus
    assert task.candidate_ids == ["11", "10", "12", "13"]
    # score 0 dropped, the repeated pair keeps its highest grade
    assert task.relevance == [{0: 1.0, 1: 2.0}, {2: 1.0}]
    assert any("1 queries without a relevant candidate" in n for n in task.notes)
    page = task.candidates[2].image
    assert isinstance(page, MediaRef) and load_image(page).getpixel((0, 0))[2] >= 200
    # a page the harness (or the images archive) left on disk is used instead
    png(tmp_path / "visdoc-tasks" / "Toy-Doc" / "12.png", COLORS["yellow"])
    assert read_task(_visdoc(tmp_path), tmp_path).candidates[2].image == str(tmp_path / "visdoc-tasks" / "Toy-Doc" / "12.png")


def test_visdoc_language_filter(tmp_path):
    spec = _visdoc(tmp_path)
    hub_repo(tmp_path / "hf" / "vidore" / "toy_beir", {"queries": {"test": [
        {"query-id": 1, "query": "the red page", "language": "english"},
        {"query-id": 2, "query": "la page bleue", "language": "french"}]}})
    spec.extra["language"] = "english"
    assert [q.text for q in read_task(spec, tmp_path).queries] == ["the red page"]


def test_corrupt_repository_file_names_it(tmp_path):
    folder = image_rows({"Toy-CLS": _cls_rows(tmp_path)}, tmp_path)
    (folder / "Toy-CLS" / "test-00000-of-00001.parquet").write_bytes(b"not parquet")
    datasets.disable_caching()
    try:
        with pytest.raises(EmbedrlError, match="MMEB_Test_Instruct"):
            read_task(image_spec("Toy-CLS", "image_cls"), tmp_path)
    finally:
        datasets.enable_caching()


# ---------------------------------------------------------------- data check, and the runner on missed rows

def _check_root(root: Path) -> list[DatasetSpec]:
    """Three published datasets: image (i2i), video (frames), visdoc; with the registry's media keys."""
    for name, color in COLORS.items():
        png(root / "image-tasks" / "Toy-I2I" / f"{name}.jpg", color)
    inst = f"{IMG} Find the same picture."
    image_rows({"Toy-I2I": [
        {"qry_inst": inst, "qry_text": "", "qry_img_path": "Toy-I2I/red.jpg", "tgt_inst": inst,
         "tgt_text": [""], "tgt_img_path": ["Toy-I2I/red.jpg", "Toy-I2I/green.jpg", "Toy-I2I/blue.jpg"]},
        {"qry_inst": inst, "qry_text": "", "qry_img_path": "Toy-I2I/green.jpg", "tgt_inst": inst,
         "tgt_text": [""], "tgt_img_path": ["Toy-I2I/gray.jpg", "Toy-I2I/green.jpg", "Toy-I2I/blue.jpg"]},
        {"qry_inst": inst, "qry_text": "", "qry_img_path": "Toy-I2I/yellow.jpg", "tgt_inst": inst,
         "tgt_text": [""], "tgt_img_path": ["Toy-I2I/yellow.jpg", "Toy-I2I/blue.jpg"]},
    ]}, root)
    image = image_spec("Toy-I2I", "image_i2i_vg")
    image.extra.update(media_archive="image-tasks/mmeb_v1.tar.gz", media_repo="TIGER-Lab/MMEB-V2",
                       media_extract="cd {root}/image-tasks && tar -xzf mmeb_v1.tar.gz && mv MMEB/* . && rmdir MMEB")
    video = _video_repo(root)
    video.extra.update(media_archive="video-tasks/frames/video_ret.tar.gz",
                       media_extract="tar -xzf {root}/video-tasks/frames/video_ret.tar.gz -C {root}/video-tasks/frames/video_ret")
    for vid, color in (("v_red", "red"), ("v_green", "green")):
        frames(root / "video-tasks" / "frames" / "video_ret" / "Toy-VRet" / vid, COLORS[color], 8)
    return [image, video, _visdoc(root)]


def test_data_check_lists_exactly_the_pieces_removed(tmp_path, capsys):
    from embedrl.data.check import check_datasets, format_summary

    specs = _check_root(tmp_path)
    assert [s.state for s in check_datasets(specs, tmp_path)] == ["present"] * 3
    (tmp_path / "image-tasks" / "Toy-I2I" / "yellow.jpg").unlink()
    shutil.rmtree(tmp_path / "video-tasks" / "frames" / "video_ret" / "Toy-VRet" / "v_green")
    shutil.rmtree(tmp_path / "hf" / "vidore")
    image, video, doc = check_datasets(specs, tmp_path)
    assert image.state == "partial" and "images missing for 1 files" in image.detail
    assert "1 of 3 queries would count as missed" in image.detail
    assert image.commands[0].startswith("hf download TIGER-Lab/MMEB-V2") and "mmeb_v1.tar.gz" in image.commands[0]
    assert video.state == "partial" and "frames missing for 1 videos" in video.detail
    assert doc.state == "missing" and doc.commands == [
        f"hf download vidore/toy_beir --repo-type dataset --local-dir {tmp_path / 'hf' / 'vidore' / 'toy_beir'}"]
    (tmp_path / "video-tasks" / "frames" / "video_ret.tar.gz").write_bytes(b"")  # downloaded, not extracted
    shutil.rmtree(tmp_path / "video-tasks" / "frames" / "video_ret" / "Toy-VRet")
    video = check_datasets([specs[1]], tmp_path)[0]
    assert video.state == "missing" and video.commands == [
        f"tar -xzf {tmp_path}/video-tasks/frames/video_ret.tar.gz -C {tmp_path}/video-tasks/frames/video_ret"]
    summary = format_summary(check_datasets(specs, tmp_path))
    assert summary.startswith("0 present, 1 partial, 2 missing (of 3)") and "to fetch what is missing:" in summary


def test_eval_prints_the_summary_and_scores_missed_rows_as_misses(tiny_clip_dir, tmp_path, capsys):
    from embedrl.cli import main
    from embedrl.data.registry import dump_registry

    specs = _check_root(tmp_path / "data")
    (tmp_path / "data" / "image-tasks" / "Toy-I2I" / "yellow.jpg").unlink()
    registry = tmp_path / "registry.yaml"
    registry.write_text(dump_registry(specs[:1]))
    assert main(["eval", "mmeb", "--model", str(tiny_clip_dir), "--registry", str(registry), "--data-root",
                 str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--batch-size", "1", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert out.index("0 present, 1 partial, 0 missing") < out.index("computed 1")
    score = json.loads((tmp_path / "out" / "image" / "Toy-I2I_score.json").read_text())
    # q1: the gold is the query's own picture (rank 1); q2: a negative is (the gold is not first);
    # q3: its picture is gone -- a missed query, scored 0 and listed
    assert score["num_data"] == 3 and score["num_pred"] == 2
    assert score["hit@1"] == pytest.approx(1 / 3)
    assert score["missed"]["count"] == 1 and "yellow.jpg" in score["missed"]["first"][0]
