"""Configs: YAML + key=value overrides, each value converted to its field's declared type or refused."""

from __future__ import annotations

import pytest

from embedrl.core.errors import EmbedrlError
from embedrl.train.embedder import build_config

BASE = ["model=m", "train_data=t.jsonl", "output_dir=out"]


@pytest.mark.parametrize("word, value", [("no", False), ("off", False), ("false", False), ("0", False),
                                         ("yes", True), ("on", True), ("True", True), ("1", True)])
def test_boolean_overrides_are_booleans_not_truthy_strings(word, value):
    config = build_config(None, [*BASE, *(f"{key}={word}" for key in ("use_tcot", "skip_bad", "gather_negatives",
                                                                       "lora"))])
    assert (config.use_tcot, config.skip_bad, config.gather_negatives, config.lora) == (value,) * 4


def test_yaml_values_are_converted_too(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\ntrain_data: t.jsonl\nlora: no\nhard_negatives: '2'\nlearning_rate: 1e-4\n"
                      "dataset_weights: {a: 1, b: '0.5'}\nsave_strategy: no\n")
    config = build_config(str(recipe), ["output_dir=out"])
    assert config.lora is False and config.hard_negatives == 2 and config.learning_rate == 1e-4
    assert config.dataset_weights == {"a": 1.0, "b": 0.5}
    assert config.save_strategy == "no"  # a Hugging Face strategy name stays a name


@pytest.mark.parametrize("override, message", [
    ("use_tcot=maybe", r"config key use_tcot must be true or false, not 'maybe' \(set on the command line\)"),
    ("max_steps=abc", "config key max_steps must be a whole number, not 'abc'"),
    ("max_steps=2.5", "config key max_steps must be a whole number, not 2.5"),
    ("learning_rate=fast", "config key learning_rate must be a number, not 'fast'"),
    ("hard_negatives=abc", "config key hard_negatives must be a whole number, not 'abc'"),
    ("per_device_train_batch_size=0", "config key per_device_train_batch_size must be at least 1, not 0"),
    ("dataset_weights=[1,2]", r"config key dataset_weights must be a mapping, e.g. \{name: value\}, not \[1, 2\]"),
    ("dataset_weights={a: heavy}", r"config key dataset_weights\['a'\] must be a number, not 'heavy'"),
    ("report_to=[1, true]", r"config key report_to\[1\] must be text, not True"),
])
def test_values_that_do_not_fit_their_field_are_refused_naming_the_key(override, message):
    with pytest.raises(EmbedrlError, match=message):
        build_config(None, [*BASE, override])


def test_a_refused_value_from_a_file_names_the_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\ntrain_data: t.jsonl\ntemperature: cold\n")
    with pytest.raises(EmbedrlError, match=rf"temperature must be a number, not 'cold' \(set in {recipe}\)"):
        build_config(str(recipe), ["output_dir=out"])
