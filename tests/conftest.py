"""Shared pytest fixtures: the tiny presets, each made once per test session (seed 0).

Tests that only read a preset use these; a test that changes files should copy the
directory first (shutil.copytree) so other tests keep seeing the made preset.
"""

from __future__ import annotations

import pytest


def _make(tmp_path_factory, name: str):
    from embedrl.lab.presets import make_preset

    return make_preset(name, tmp_path_factory.mktemp("presets") / name, seed=0)


@pytest.fixture(scope="session")
def tiny_reasoner_dir(tmp_path_factory):
    return _make(tmp_path_factory, "tiny-reasoner")


@pytest.fixture(scope="session")
def tiny_vlm_embedder_dir(tmp_path_factory):
    return _make(tmp_path_factory, "tiny-vlm-embedder")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return _make(tmp_path_factory, "tiny-clip")


@pytest.fixture(scope="session")
def synth_tiny_dir(tmp_path_factory):
    """The synthetic benchmark at its smallest size (seed 0), made once per session; read-only."""
    from embedrl.lab.synth.benchmark import generate_benchmark

    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate_benchmark(out, seed=0, size="tiny")
    return out
