"""The quickstart end to end at the smallest size: a crash mid-run, the rerun that resumes it, and a no-op rerun."""

import json

import embedrl.lab.quickstart as quickstart
from embedrl.cli import main


def _stages_run(caplog) -> list[str]:
    return [r.message for r in caplog.records if r.name == "embedrl.lab.pipeline" and r.message.endswith(" ...")]


def test_quickstart_tiny_end_to_end_resumes_after_a_crash(tmp_path, capsys, caplog, monkeypatch):
    out = tmp_path / "qs"
    argv = ["quickstart", "--out", str(out), "--size", "tiny"]

    # the last stage fails: the error names the stage, the cause and the command that resumes
    def full_disk(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(quickstart, "_build_index", full_disk)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "stage 'index' failed: No space left on device" in err and f"embedrl quickstart --out {out}" in err
    assert not (out / "report.json").exists()
    monkeypatch.undo()

    # the rerun redoes only the failed stage
    caplog.clear()
    with caplog.at_level("INFO", logger="embedrl.lab.pipeline"):
        assert main(argv) == 0
    assert _stages_run(caplog) == ["[quickstart] index ..."]
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    sets = {"Synth-T2I", "Synth-I2T", "Synth-VQA", "Synth-Grounding", "Synth-Composed", "Synth-CLS",
            "Synth-VideoRet", "overall"}
    for variant in ("raw", "sft", "eg_rl"):
        assert set(report["ablation"][variant]) == sets
        assert all(0 <= v <= 100 for v in report["ablation"][variant].values())
    # timings of the stages finished by the first run are kept
    for stage in ("embedder", "seed 0: reasoner SFT", "seed 0: eg_rl", "index", "seed 0: evaluate eg_rl"):
        assert report["timings_s"][stage] > 0
    assert (out / "index" / "manifest.json").is_file() and (out / "report.md").is_file()
    assert "embedrl demo --index" in printed and "| (c) T-CoT, EG-RL |" in (out / "report.md").read_text()

    # a third run finds every stage done and redoes none of them
    caplog.clear()
    with caplog.at_level("INFO", logger="embedrl.lab.pipeline"):
        assert main(argv) == 0
    assert _stages_run(caplog) == [] and any("already done" in r.message for r in caplog.records)
    assert json.loads((out / "report.json").read_text())["ablation"] == report["ablation"]
