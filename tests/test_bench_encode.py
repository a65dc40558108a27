"""`embedrl bench encode` measures every backend against its bare forward in one run."""

import json

from embedrl.cli import main


def test_bench_encode_reports_each_backend_with_ratios(tiny_clip_dir, tiny_vlm_embedder_dir, synth_tiny_dir,
                                                       tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["-q", "bench", "encode", "--model", str(tiny_clip_dir), str(tiny_vlm_embedder_dir),
                 "--data", str(synth_tiny_dir), "--n", "12", "--batch-size", "6", "--repeats", "1",
                 "--json", str(out)]) == 0
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["open_clip", "vlm"]
    for row in rows:
        assert row["items"] == 12 and row["encode_s"] > 0 and row["bare_s"] > 0
        assert abs(row["encode_over_bare"] - row["encode_s"] / row["bare_s"]) < 1e-9
        assert f"{row['encode_over_bare']:.2f}x" in table
