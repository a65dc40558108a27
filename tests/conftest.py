"""Shared pytest fixtures: the tiny presets, each made once per test session (seed 0).

Tests that only read a preset use these; a test that changes files should copy the
directory first (shutil.copytree) so other tests keep seeing the made preset.
"""

from __future__ import annotations

import sys

import pytest


def pytest_terminal_summary(terminalreporter):
    """The bad-input suite's summary line (tests/test_bad_inputs.py), when it ran."""
    suite = sys.modules.get("test_bad_inputs")
    line = suite.summary_line() if suite is not None else None
    if line:
        terminalreporter.write_line(line)


def _make(tmp_path_factory, name: str):
    from embedrl.lab.presets import make_preset

    return make_preset(name, tmp_path_factory.mktemp("presets") / name, seed=0)


def _preset_fixture(name: str):
    @pytest.fixture(scope="session")
    def made(tmp_path_factory):
        return _make(tmp_path_factory, name)
    return made


tiny_reasoner_dir = _preset_fixture("tiny-reasoner")
tiny_vlm_embedder_dir = _preset_fixture("tiny-vlm-embedder")
tiny_clip_dir = _preset_fixture("tiny-clip")
tiny_qwen3vl_dir = _preset_fixture("tiny-qwen3-vl")
tiny_qwen25vl_dir = _preset_fixture("tiny-qwen2.5-vl")
tiny_vlm_embedder_qwen3vl_dir = _preset_fixture("tiny-vlm-embedder-qwen3-vl")


@pytest.fixture(scope="session")
def synth_tiny_dir(tmp_path_factory):
    """The synthetic benchmark at its smallest size (seed 0), made once per session; read-only."""
    from embedrl.lab.synth.benchmark import generate_benchmark

    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate_benchmark(out, seed=0, size="tiny")
    return out
