"""`embedrl bench faults`: the fault bench runs its cases and says what survived (the tables README quotes)."""

from __future__ import annotations

import json

import pytest

from embedrl.cli import main


def _rows(capsys, tmp_path, *cases: str) -> dict[str, dict]:
    assert main(["bench", "faults", "--cases", *cases, "--work", str(tmp_path / "work"), "--json",
                 str(tmp_path / "faults.json")]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| case | fault | after the fault | rerun | equals uninterrupted | s |")
    return {f"{r['case']}: {r['fault'].split(' ')[0]}": r for r in json.loads((tmp_path / "faults.json").read_text())}


def test_a_killed_build_leaves_its_finished_shards_and_the_rerun_equals_an_uninterrupted_one(tmp_path, capsys):
    (row,) = _rows(capsys, tmp_path, "index-build").values()
    assert row["fault"].startswith("kill -9 once shard 4 of 9 is written")
    assert "no manifest: refused as an unfinished build" in row["after_fault"]
    assert row["equals_uninterrupted"] == "yes"


@pytest.mark.slow  # every default case: ~15 runs in fresh processes
def test_every_default_case_survives(tmp_path, capsys):
    rows = _rows(capsys, tmp_path, "index-add", "eval-mmeb", "train-embedder", "disk-full-index-build",
                 "disk-full-eval-mmeb")
    assert all(r["equals_uninterrupted"] == "yes" for r in rows.values()), rows
    assert all(r["fault"].startswith(("kill -9 once", "kill -9 after", "full disk", "file size limit"))
               for r in rows.values()), rows  # each fault hit the job before it finished
    full = [r for r in rows.values() if "full disk" in r["fault"] or "size limit" in r["fault"]]
    assert len(full) == 2 and all(r["after_fault"].startswith("one-line error") for r in full), full
