"""The config is the single source of a run: locked, validated, JSON round trip."""

import glob
import json

import pytest

from tflm import config as cfg
from tflm.errors import ConfigError

CONFIG_FILES = sorted(glob.glob("configs/*.py"))


def test_every_config_file_loads_and_round_trips_through_json(tmp_path):
    assert {"configs/gpt_mini.py", "configs/gpt2_small.py", "configs/bert_mini.py",
            "configs/bert_base.py"} <= set(CONFIG_FILES)
    for path in CONFIG_FILES:
        config = cfg.load_config(path)
        assert config.is_locked
        cfg.save_config(config, tmp_path / "config.json")
        assert cfg.read_config(tmp_path / "config.json") == config


def test_gpt_mini_has_the_documented_shape():
    m = cfg.load_config("configs/gpt_mini.py").model
    assert (m.vocabulary_size, m.num_layers, m.hidden_dim, m.num_heads,
            m.intermediate_dim, m.max_sequence_length, m.tie_embeddings) == (
        8192, 4, 256, 4, 1024, 128, True)


def test_gpt2_small_is_the_124m_shape():
    m = cfg.load_config("configs/gpt2_small.py").model
    assert (m.vocabulary_size, m.num_layers, m.hidden_dim, m.num_heads,
            m.intermediate_dim, m.max_sequence_length) == (50257, 12, 768, 12, 3072, 1024)


def test_misspelled_key_fails_naming_valid_keys():
    config = cfg.load_config("configs/gpt_mini.py")
    with pytest.raises(AttributeError, match="steps"):
        config.train.stpes = 3
    with pytest.raises(AttributeError):
        _ = config.train.stpes


def test_unknown_key_in_json_names_section_and_valid_keys():
    values = cfg.config_to_dict(cfg.load_config("configs/gpt_mini.py"))
    values["train"]["stpes"] = 3
    with pytest.raises(ConfigError, match=r"train\.stpes.*Did you mean 'steps'.*Valid keys"):
        cfg.config_from_dict(values)
    values = cfg.config_to_dict(cfg.load_config("configs/gpt_mini.py"))
    values["trian"] = {}
    with pytest.raises(ConfigError, match="Unknown config section 'trian'"):
        cfg.config_from_dict(values)


@pytest.mark.parametrize(
    "section,key,value,message",
    [
        ("train", "strategy", "mirorred", "not one of"),
        ("model", "num_heads", 3, "divisible"),
        ("data", "seq_len", 4096, "max_sequence_length"),
        ("train", "steps", 0, ">= 1"),
        ("data", "mask_rate", 1.5, "mask_rate"),
    ],
)
def test_invalid_values_are_rejected_with_what_to_do(section, key, value, message):
    config = cfg.base_config()
    config[section][key] = value
    with pytest.raises(ConfigError, match=message):
        cfg.validate(config)


def test_json_is_plain_and_tuples_come_back(tmp_path):
    config = cfg.load_config("configs/gpt_mini.py")
    data = json.loads(cfg.config_to_json(config))
    assert data["train"]["no_decay"] == list(config.train.no_decay)
    assert cfg.config_from_json(json.dumps(data)).train.no_decay == config.train.no_decay


def test_missing_or_corrupt_config_files_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.load_config(str(tmp_path / "nope.py"))
    bad = tmp_path / "config.json"
    bad.write_text('{"model": {')
    with pytest.raises(ConfigError, match="not valid JSON"):
        cfg.read_config(str(bad))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        cfg.load_config(str(empty))
