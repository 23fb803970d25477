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


def test_an_objective_on_a_backbone_it_cannot_use_is_refused():
    # causal_lm on a bidirectional backbone would see every label.
    config = cfg.base_config()
    config.model.backbone.causal = False
    with pytest.raises(ConfigError, match=r"config\.model\.backbone\.causal=True.*visible"):
        cfg.validate(config)
    # A masked LM on a causal backbone cannot see the words after a mask.
    config = cfg.run_config_file("configs/bert_mini.py")
    config.model.backbone.causal = True
    with pytest.raises(ConfigError, match=r"'masked_lm'.*causal=False"):
        cfg.validate(config)


def test_masked_lm_needs_a_tokenizer_with_a_mask_token():
    config = cfg.run_config_file("configs/bert_mini.py")
    config.data.tokenizer = "bpe"
    with pytest.raises(ConfigError, match=r"'masked_lm' needs .*mask.*'bpe'"):
        cfg.validate(config)


def test_gpt_mini_has_the_documented_shape():
    m = cfg.load_config("configs/gpt_mini.py").model
    b = m.backbone
    assert (b.vocabulary_size, b.num_layers, b.hidden_dim, b.num_heads,
            b.intermediate_dim, b.max_sequence_length, m.tie_embeddings) == (
        8192, 4, 256, 4, 1024, 128, True)


def test_gpt2_small_is_the_124m_shape():
    b = cfg.load_config("configs/gpt2_small.py").model.backbone
    assert (b.vocabulary_size, b.num_layers, b.hidden_dim, b.num_heads,
            b.intermediate_dim, b.max_sequence_length) == (50257, 12, 768, 12, 3072, 1024)


def test_model_keys_are_the_constructors_arguments():
    import inspect

    from tflm.models import GPT, TransformerBackbone

    m = cfg.base_config().model
    backbone_args = set(inspect.signature(TransformerBackbone.__init__).parameters)
    assert set(m.backbone.keys()) == backbone_args - {"self", "dtype", "kwargs"}
    gpt_args = set(inspect.signature(GPT.__init__).parameters) - {"self", "kwargs"}
    assert set(m.keys()) == gpt_args


def test_model_typo_names_the_nested_path():
    values = cfg.config_to_dict(cfg.load_config("configs/gpt_mini.py"))
    values["model"]["backbone"]["num_layer"] = 2
    with pytest.raises(ConfigError, match=r"model\.backbone\.num_layer.*Did you mean 'num_layers'"):
        cfg.config_from_dict(values)
    values = cfg.config_to_dict(cfg.load_config("configs/gpt_mini.py"))
    values["model"]["num_layers"] = 2  # beside the backbone: a flat key in a nested config
    with pytest.raises(ConfigError,
                       match=r"model\.num_layers.*It is 'model\.backbone\.num_layers'"):
        cfg.config_from_dict(values)


def test_flat_model_config_of_earlier_runs_is_nested_on_read(tmp_path):
    # config.json as written before model.backbone existed (e.g. an old model directory).
    values = cfg.config_to_dict(cfg.load_config("configs/gpt_mini.py"))
    nested = values["model"]
    flat = {**{k: v for k, v in nested["backbone"].items()
               if k not in ("num_segments", "pooling")},
            "tie_embeddings": nested["tie_embeddings"]}
    values["model"] = flat
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    assert cfg.read_config(str(path)) == cfg.load_config("configs/gpt_mini.py")


def test_unknown_objective_names_the_registered_ones():
    config = cfg.base_config()
    config.train.objective = "masked_llm"
    with pytest.raises(ConfigError,
                       match=r"'masked_llm' is not a registered objective.*'causal_lm'"):
        cfg.validate(config)


def test_tokenizer_without_the_objectives_special_tokens_is_refused():
    config = cfg.base_config()
    config.data.tokenizer = "wordpiece"  # no end-of-text token to join documents with
    with pytest.raises(ConfigError,
                       match=r"'causal_lm' needs .*eos.*config\.data\.tokenizer='wordpiece'"):
        cfg.validate(config)


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
        ("model.backbone", "num_heads", 3, "divisible"),
        ("model.backbone", "pooling", "median", "not one of"),
        ("data", "seq_len", 4096, "max_sequence_length"),
        ("train", "steps", 0, ">= 1"),
        ("data", "mask_rate", 1.5, "mask_rate"),
    ],
)
def test_invalid_values_are_rejected_with_what_to_do(section, key, value, message):
    config = cfg.base_config()
    node = config
    for name in section.split("."):
        node = node[name]
    node[key] = value
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
