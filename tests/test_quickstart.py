"""The quickstart end to end at the smallest size: a crash mid-run, the rerun that resumes it, and a no-op rerun."""

import json

import pytest

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


def test_a_rerun_with_other_settings_is_refused_not_mixed_into_the_report(tmp_path, capsys, monkeypatch):
    out = tmp_path / "qs"

    def stop(*args):
        raise OSError("stopped here")

    import embedrl.lab.synth.benchmark as benchmark

    monkeypatch.setattr(benchmark, "generate_benchmark", stop)
    assert main(["quickstart", "--out", str(out), "--size", "tiny"]) == 1  # the run starts, then stops
    capsys.readouterr()
    assert main(["quickstart", "--out", str(out), "--size", "small"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"embedrl: error: {out} holds a quickstart run made with other settings (differs in: "
                          "data_size, eg_rl_overrides, embedder_overrides, eval_queries")
    assert err.count("\n") == 1


@pytest.mark.slow  # ~5 min idle (much more under load): the tiny quickstart three times, in fresh processes
@pytest.mark.timeout(3600)
def test_sigkill_during_the_quickstart_then_rerun_equals_an_uninterrupted_run(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from faults import kill_when

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}

    def command(out):
        return [sys.executable, "-m", "embedrl", "quickstart", "--out", str(out), "--size", "tiny"]

    subprocess.run(command(tmp_path / "reference"), check=True, capture_output=True, env=env, timeout=900)
    out = tmp_path / "killed"
    # killed in the reasoner's SFT, once the embedder stage is done
    assert kill_when(command(out), out / "embedder" / "embedrl.json", env=env, timeout=900) == -9
    assert not (out / "report.json").exists()
    subprocess.run(command(out), check=True, capture_output=True, env=env, timeout=900)
    resumed, reference = (json.loads((path / "report.json").read_text()) for path in (out, tmp_path / "reference"))
    assert resumed["ablation"] == reference["ablation"]
    from embedrl.index.search import Retriever

    a, b = (Retriever.from_dir(path / "index", load_model=False) for path in (out, tmp_path / "reference"))
    assert a.store.ids() == b.store.ids()
    assert (a.index.reconstruct_n(0, a.index.ntotal) == b.index.reconstruct_n(0, b.index.ntotal)).all()
