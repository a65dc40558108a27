"""The speed benches that drive other commands: `bench gpu --dry-run` (every part on the CPU) and
`bench video-frames` (training time per dataset beside VideoRet Hit@1, per frames setting)."""

import json

from embedrl.cli import main


def test_bench_gpu_dry_run_exercises_every_part_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert main(["-q", "bench", "gpu", "--dry-run", "--arch", "ViT-B-32", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["device"].startswith("cpu")
    assert {r["modality"] for r in report["encode"]} == {"image", "text", "video", "image+tcot"}
    assert all(r["model"] == "ViT-B-32 (depth 1)" and r["device"] == "cpu" for r in report["encode"])
    flat, ivf = report["faiss"]
    assert flat["factory"] == "Flat" and ivf["factory"].startswith("IVF") and flat["cpu_qps"] > 0
    assert "faiss-gpu or a GPU missing" in flat["note"]  # no GPU here: the CPU side alone, said so
    (rl,) = report["rl"]  # without a GPU, no vLLM row
    assert rl["engine"] == "transformers" and rl["usable_share"] == 1.0 and rl["steps"] == 1
    printed = capsys.readouterr().out
    assert "a dry run" in printed and "GPU finds CPU top-k" in printed


def test_bench_video_frames_reports_time_share_and_hit_at_1_per_setting(synth_tiny_dir, tiny_clip_dir, tmp_path,
                                                                       capsys):
    out = tmp_path / "runs"
    args = ["-q", "bench", "video-frames", "--data", str(synth_tiny_dir), "--model", str(tiny_clip_dir),
            "--out", str(out), "--frames", "0", "2", "--seeds", "0", "1", "--json", str(tmp_path / "rows.json"),
            "max_steps=8", "per_device_train_batch_size=4", "warmup_steps=0"]
    assert main(args) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["train_frames"] for r in rows] == [0, 2] and all(len(r["runs"]) == 2 for r in rows)
    for row in rows:
        assert 0 < row["video_share"] < 1 and row["video_step_s"] > 0 and 0 <= row["hit@1_mean"] <= 100
    assert "VideoRet Hit@1" in capsys.readouterr().out
    # finished runs are kept: a rerun only scores them again
    stamps = {p: p.stat().st_mtime for p in out.glob("frames*/step_times.json")}
    assert len(stamps) == 4 and main(args) == 0
    assert stamps == {p: p.stat().st_mtime for p in out.glob("frames*/step_times.json")}
