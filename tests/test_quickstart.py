"""The quickstart end to end at the smallest size, and its resume."""

import json

from embedrl.cli import main


def test_quickstart_tiny_end_to_end_then_resumes_without_redoing(tmp_path, capsys, caplog):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--size", "tiny"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    sets = {"Synth-T2I", "Synth-I2T", "Synth-VQA", "Synth-Grounding", "Synth-Composed", "Synth-CLS",
            "Synth-VideoRet", "overall"}
    for variant in ("raw", "sft", "eg_rl"):
        assert set(report["ablation"][variant]) == sets
        assert all(0 <= v <= 100 for v in report["ablation"][variant].values())
    for stage in ("embedder", "seed 0: reasoner SFT", "seed 0: eg_rl", "index", "seed 0: evaluate eg_rl"):
        assert report["timings_s"][stage] > 0
    assert (out / "index" / "manifest.json").is_file() and (out / "report.md").is_file()
    assert "embedrl demo --index" in printed and "| (c) T-CoT, EG-RL |" in (out / "report.md").read_text()

    # a second run finds every stage done and redoes none of them
    caplog.clear()
    with caplog.at_level("INFO", logger="embedrl.pipeline"):
        assert main(["quickstart", "--out", str(out), "--size", "tiny"]) == 0
    ran = [r.message for r in caplog.records if r.message.endswith(" ...")]
    assert ran == [] and any("already done" in r.message for r in caplog.records)
    assert json.loads((out / "report.json").read_text())["ablation"] == report["ablation"]
