"""Files embedrl writes: permissions that follow the umask, one-line errors on a full disk, UTF-8 checks."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from faults import disk_full

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError
from embedrl.core.io import atomic_write, iter_jsonl, read_json, write_json


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _modes(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


def test_written_files_follow_the_umask(tmp_path, umask):
    from embedrl.index.build import build_from_vectors
    from embedrl.lab.presets import make_preset
    from embedrl.lab.synth.benchmark import generate_benchmark

    umask(0o022)
    build_from_vectors(np.eye(8, dtype=np.float32), tmp_path / "idx", shard_size=4)
    modes = _modes(tmp_path / "idx")
    assert {"manifest.json", "build_report.json", "index.faiss", "store.sqlite", "shards/shard_00000.npy",
            "shards/shard_00000.json", "shards/plan.json"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes
    generate_benchmark(tmp_path / "synth", seed=0, size="tiny")
    synth = _modes(tmp_path / "synth")
    assert synth["corpus.jsonl"] == synth["registry.yaml"] == synth["train/pairs.jsonl"] == 0o644
    preset = _modes(make_preset("tiny-clip", tmp_path / "clip"))
    assert set(preset.values()) == {0o644}, preset

    umask(0o027)
    write_json(tmp_path / "scores" / "x_score.json", {"hit@1": 0.5})
    with atomic_write(tmp_path / "scores" / "x.npy", "wb") as f:
        np.save(f, np.zeros(3))
    assert set(_modes(tmp_path / "scores").values()) == {0o640}


def test_a_full_disk_is_a_one_line_error_and_the_rerun_completes(tmp_path, tiny_clip_dir, monkeypatch, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"t{i}", "text": f"item {i}"}) + "\n" for i in range(5)))
    out = tmp_path / "idx"
    build = ["index", "build", "--model", str(tiny_clip_dir), "--corpus", str(corpus), "--out", str(out)]
    with monkeypatch.context() as patch:
        disk_full(patch, out)
        assert main(build) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"embedrl: error: cannot write {out / 'shards'}") and err.count("\n") == 1
    assert err.endswith(": No space left on device (free some space or write elsewhere)\n")
    assert not list(out.rglob("*.tmp"))  # no temp file left behind
    assert main(build) == 0  # space again: the build completes
    assert json.loads(capsys.readouterr().out)["count"] == 5


def test_a_full_disk_met_in_another_library_is_a_one_line_error(monkeypatch, capsys):
    import errno

    import embedrl.cli.data as data_commands

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoint-4/optimizer.pt")

    monkeypatch.setattr(data_commands, "mine_negatives", full)
    assert main(["data", "mine-negatives", "--model", "m", "--pairs", "p", "--out", "o"]) == 1
    assert capsys.readouterr().err == ("embedrl: error: cannot write /runs/x/checkpoint-4/optimizer.pt: No space left "
                                       "on device (free some space or write elsewhere)\n")


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n{"text": "ok too"}\n')
    with pytest.raises(EmbedrlError, match=r"rows\.jsonl:2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        list(iter_jsonl(path))
    errors: list[str] = []
    assert [row["text"] for _, row in iter_jsonl(path, errors)] == ["ok", "ok too"]
    assert errors == [f"{path}:2: not UTF-8 text (byte 0xe9); save the file as UTF-8"]
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": 1}).encode())
    assert read_json(tmp_path / "bom.json") == {"a": 1}  # a byte-order mark is not an error
