"""The tflm command: sub-commands listed, typos named, unlanded features refuse honestly."""

import subprocess
import sys

import pytest

from tflm import cli


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tflm.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_every_subcommand():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("train", "evaluate", "generate", "embed", "finetune", "export", "tokenizer"):
        assert f"  {name}" in result.stdout


def test_unknown_subcommand_exits_non_zero_with_usage():
    result = run_cli("trian")
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr


def test_config_override_typo_names_the_key_and_valid_keys(tmp_path):
    result = run_cli("train", "--config=configs/gpt_mini.py", f"--workdir={tmp_path}",
                     "--config.train.stpes=3")
    assert result.returncode == 1
    assert "train.stpes" in result.stderr and "Did you mean 'steps'" in result.stderr
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("name", ["embed", "finetune"])
def test_unlanded_subcommands_refuse_and_do_nothing(name, tmp_path):
    result = run_cli(name, f"--model={tmp_path}")
    assert result.returncode != 0
    assert "not implemented yet" in result.stderr


def test_usage_names_match_summaries():
    assert set(cli.COMMANDS) == set(cli.SUMMARIES)
