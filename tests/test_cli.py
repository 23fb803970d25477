"""The tflm command: sub-commands listed, typos named, unlanded features refuse honestly."""

import json
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
    for name in ("train", "evaluate", "generate", "fill-mask", "embed", "finetune", "export",
                 "tokenizer"):
        assert f"  {name}" in result.stdout


def test_unknown_subcommand_exits_non_zero_with_usage():
    result = run_cli("trian")
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr


def test_flat_model_override_names_the_nested_key(tmp_path):
    result = run_cli("train", "--config=configs/gpt_mini.py", f"--workdir={tmp_path}",
                     "--config.model.num_layers=2")
    assert result.returncode == 1
    assert "It is 'model.backbone.num_layers' now" in result.stderr
    assert not (tmp_path / "config.json").exists()


def test_verbose_shows_tensorflow_start_up_lines(tmp_path):
    quiet = run_cli("evaluate", f"--model={tmp_path / 'none'}")
    loud = run_cli("evaluate", f"--model={tmp_path / 'none'}", "--verbose")
    assert quiet.returncode == loud.returncode == 1
    assert "does not exist" in quiet.stderr and "does not exist" in loud.stderr
    assert len(loud.stderr.splitlines()) > len(quiet.stderr.splitlines()) == 1


def test_config_override_typo_names_the_key_and_valid_keys(tmp_path):
    result = run_cli("train", "--config=configs/gpt_mini.py", f"--workdir={tmp_path}",
                     "--config.train.stpes=3")
    assert result.returncode == 1
    assert "train.stpes" in result.stderr and "Did you mean 'steps'" in result.stderr
    assert not (tmp_path / "config.json").exists()


def test_finetune_without_init_from_says_so_and_does_nothing(tmp_path):
    result = run_cli("finetune", "--config=configs/classify_mini.py",
                     f"--workdir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert "--config.init_from=MODEL_DIR" in result.stderr
    assert not (tmp_path / "run").exists()


def test_usage_names_match_summaries():
    assert set(cli.COMMANDS) == set(cli.SUMMARIES)


def test_tokenizer_command_trains_saves_and_encodes(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Document {i}: the quick brown fox jumps over dog {i}."
                                  for i in range(60)), encoding="utf-8")
    result = run_cli("tokenizer", f"--corpus={corpus}", "--kind=bpe", "--vocab_size=300",
                     f"--out={tmp_path / 'tok'}", "--encode", f"--cache_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["vocabulary_size"] == 300
    assert report["token_caches"]["train"]["tokens"] > 0
    from tflm.text import load_tokenizer

    tokenizer = load_tokenizer(str(tmp_path / "tok"))
    assert tokenizer.fingerprint == report["fingerprint"]
    assert tokenizer.decode(tokenizer.encode(["the quick fox"])[0]) == "the quick fox"


def test_train_evaluate_generate_through_the_command(tmp_path):
    """The real commands on a tiny shrunk gpt_mini: train, then evaluate and generate."""
    workdir = tmp_path / "run"
    backbone = dict(vocabulary_size=300, num_layers=1, hidden_dim=32, num_heads=2,
                    intermediate_dim=64, max_sequence_length=32)
    shrink = [f"--config.model.backbone.{key}={value}" for key, value in backbone.items()]
    shrink += ["--config.data.seq_len=16", f"--config.data.cache_dir={tmp_path / 'cache'}",
               "--config.train.batch_size=4", "--config.train.steps=6",
               "--config.train.warmup_steps=2", "--config.train.eval_every=3",
               "--config.train.eval_steps=2", "--config.train.checkpoint_every=3",
               "--config.train.sample_every=6", "--config.train.log_every=3"]
    result = run_cli("train", "--config=configs/gpt_mini.py", f"--workdir={workdir}",
                     *shrink, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["final_step"] == 6
    assert (workdir / "model" / "config.json").exists()
    report = [line for line in result.stdout.splitlines() if line.startswith("Validation")]
    assert "perplexity" in report[0] and "unigram baseline" in report[0]
    # TensorFlow's C++ start-up lines are hidden by default (the --config file imports it).
    assert "cudart_stub" not in result.stderr and "cpu_feature_guard" not in result.stderr

    result = run_cli("evaluate", f"--model={workdir / 'model'}", "--batch_size=4",
                     timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    assert 1.0 < metrics["perplexity"] < 300 * 3
    # TensorFlow's C++ start-up lines are hidden by default.
    assert "cudart_stub" not in result.stderr and "cpu_feature_guard" not in result.stderr

    # The default max_new_tokens fits a 32-position model (64 would not).
    result = run_cli("generate", f"--model={workdir / 'model'}", "--prompt=The",
                     "--sampler=greedy", "--stream=false", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    result = run_cli("generate", f"--model={workdir / 'model'}", "--prompt=The",
                     "--prompt=A function", "--max_new_tokens=5", "--sampler=greedy",
                     timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("--- ") == 2
    # A bad sampler: test_generate_rejects_a_bad_sampler_before_loading_the_model.


def test_generate_rejects_a_bad_sampler_before_loading_the_model(tmp_path):
    missing = tmp_path / "no_model_here"
    result = run_cli("generate", f"--model={missing}", "--prompt=The", "--sampler=nucleus")
    assert result.returncode == 1
    assert "nucleus" in result.stderr and "top_p" in result.stderr
    assert "no_model_here" not in result.stderr  # the sampler was checked first
    result = run_cli("generate", f"--model={missing}", "--prompt=The", "--sampler=top_p",
                     "--top_p=1.5")
    assert result.returncode == 1 and "top_p" in result.stderr
    assert "no_model_here" not in result.stderr


@pytest.fixture(scope="module")
def masked_lm_dir(tmp_path_factory):
    """An (untrained) tiny masked-LM model directory with a WordPiece tokenizer."""
    from tflm.config import base_config, validate
    from tflm.model_dir import build_model, save_model_dir
    from tflm.text import train_tokenizer

    texts = ["The quick brown fox jumps over the lazy dog.", "A function returns."] * 20
    tokenizer = train_tokenizer("wordpiece", texts, 80, lowercase=True)
    config = base_config("masked_lm")
    config.model.backbone.update(vocabulary_size=tokenizer.vocabulary_size, num_layers=1,
                                 hidden_dim=16, num_heads=2, intermediate_dim=32,
                                 max_sequence_length=16, causal=False, num_segments=2)
    config.data.update(seq_len=16, tokenizer="wordpiece", lowercase=True)
    config = validate(config)
    path = str(tmp_path_factory.mktemp("bert") / "model")
    return save_model_dir(path, build_model(config), tokenizer, config)


def test_fill_mask_command_prints_candidates_per_mask(masked_lm_dir):
    result = run_cli("fill-mask", f"--model={masked_lm_dir}", "--text=the [MASK] fox [MASK]",
                     "--text=a [MASK] returns", "--top_k=3")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert [len(r["masks"]) for r in out] == [2, 1]
    assert all(len(m) == 3 and m[0]["score"] >= m[-1]["score"] for r in out for m in r["masks"])
    result = run_cli("fill-mask", f"--model={masked_lm_dir}", "--text=no mask here")
    assert result.returncode == 1 and "no mask token '[MASK]'" in result.stderr
    result = run_cli("generate", f"--model={masked_lm_dir}", "--prompt=The")
    assert result.returncode == 1 and "does not generate text" in result.stderr
