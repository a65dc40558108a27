"""The command line: `--help` of the config-driven commands lists their own config fields (what a recipe
can set); every command runs with sleeping OpenMP threads unless the user chose a policy."""

import dataclasses
import os

import pytest

from embedrl.cli import main
from embedrl.core.config import own_fields


def help_text(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["embedder", "reasoner-warmup", "reasoner-sft", "discriminator", "eg-rl"])
def test_train_help_lists_the_config_fields(command, capsys):
    import importlib

    from embedrl.cli.train import COMMANDS
    from embedrl.lab.cli import TRAINING

    module, class_name, *_ = {**COMMANDS, **TRAINING}[command]
    cls = getattr(importlib.import_module(module), class_name)
    text = help_text(["train", command], capsys)
    names = [f.name for f in own_fields(cls)]
    assert names, class_name
    for name in names:
        assert f"\n  {name} (default: " in text, name
    # fields inherited from TRL / transformers are named by their library, not listed one by one
    inherited = {f.name for f in dataclasses.fields(cls)} - set(names)
    assert "learning_rate" in inherited and "\n  learning_rate (default" not in text
    assert "field can be set too" in text


def test_eg_rl_help_explains_its_fields(capsys):
    text = help_text(["train", "eg-rl"], capsys)
    assert "outcome_negatives (default: 'batch')" in text
    assert "every training pair's (`all`)" in " ".join(text.split())
    assert "trl.GRPOConfig field can be set too" in text


def test_ablation_help_lists_every_field(capsys):
    from embedrl.lab.ablation.config import AblationConfig

    text = help_text(["eval", "ablation"], capsys)
    for f in dataclasses.fields(AblationConfig):
        assert f"\n  {f.name} (default: " in text, f.name
    assert "paper_code" in text  # the extra variants are named


def test_commands_let_idle_cpu_threads_sleep_unless_the_user_chose(monkeypatch, capsys):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["data"]) == 2  # a group without a command: its help
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    main(["data"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
