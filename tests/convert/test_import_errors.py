"""What a checkpoint may look like (shards, float16 / bfloat16, old LayerNorm names) and the
errors that name the file or tensor when it cannot be imported; the `tflm import` command."""

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.convert import hf_dirs
from tflm.convert import CheckpointError, import_hf
from tflm.convert.checkpoint import Checkpoint
from tflm.model_dir import load_model_dir


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("errors"))


@pytest.fixture(scope="module")
def bert(root):
    """A BertForMaskedLM directory and its import."""
    source = hf_dirs.bert_dir(os.path.join(root, "bert"))
    import_hf(source, os.path.join(root, "bert_out"))
    return source


def _copy(source, root, name):
    path = os.path.join(root, name)
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(source, path)
    return path


def _tensors(path):
    from safetensors.numpy import load_file

    return load_file(os.path.join(path, "model.safetensors"))


def _weights(out):
    model, _, _ = load_model_dir(out)
    return [np.asarray(w) for w in model.weights]


def _write_bf16(path, tensors):
    """safetensors with BF16 data (numpy has no bfloat16: the upper halves, truncated)."""
    header, offset, data = {}, 0, []
    for name, value in tensors.items():
        raw = (np.ascontiguousarray(value, np.float32).view(np.uint32) >> 16).astype("<u2")
        header[name] = {"dtype": "BF16", "shape": list(value.shape),
                        "data_offsets": [offset, offset + raw.nbytes]}
        offset += raw.nbytes
        data.append(raw.tobytes())
    encoded = json.dumps(header).encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(data))


def test_sharded_float16_bfloat16_and_gamma_beta_import_the_same_values(bert, root):
    tensors = _tensors(bert)
    expected = _weights(os.path.join(root, "bert_out"))
    # Two shards and an index.
    sharded = _copy(bert, root, "sharded")
    os.remove(os.path.join(sharded, "model.safetensors"))
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, os.path.join(sharded, shard))
    json.dump({"metadata": {}, "weight_map": {k: s for s, keys in halves.items() for k in keys}},
              open(os.path.join(sharded, "model.safetensors.index.json"), "w"))
    import_hf(sharded, os.path.join(root, "sharded_out"))
    for got, want in zip(_weights(os.path.join(root, "sharded_out")), expected):
        np.testing.assert_array_equal(got, want)
    # Old TF-converted LayerNorm names (gamma / beta).
    renamed = _copy(bert, root, "gamma")
    save_file({k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"): v for k, v in tensors.items()},
        os.path.join(renamed, "model.safetensors"))
    import_hf(renamed, os.path.join(root, "gamma_out"))
    for got, want in zip(_weights(os.path.join(root, "gamma_out")), expected):
        np.testing.assert_array_equal(got, want)
    # float16 / bfloat16 stored: widened to float32 exactly.
    half = _copy(bert, root, "half")
    save_file({k: v.astype(np.float16) for k, v in tensors.items()},
              os.path.join(half, "model.safetensors"))
    report = import_hf(half, os.path.join(root, "half_out"))
    assert report["stored_dtypes"] == {"F16": len(tensors)}
    checkpoint = Checkpoint(half)
    name = "bert.embeddings.word_embeddings.weight"
    np.testing.assert_array_equal(checkpoint.read(name),
                                  tensors[name].astype(np.float16).astype(np.float32))
    brain = _copy(bert, root, "bf16")
    _write_bf16(os.path.join(brain, "model.safetensors"), tensors)
    report = import_hf(brain, os.path.join(root, "bf16_out"))
    assert report["stored_dtypes"] == {"BF16": len(tensors)}
    truncated = (tensors[name].view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(Checkpoint(brain).read(name), truncated)
    model, _, _ = load_model_dir(os.path.join(root, "bf16_out"))
    np.testing.assert_array_equal(np.asarray(model.backbone.embedding.token_embeddings),
                                  truncated)


def _rewrite(path, change):
    tensors = dict(_tensors(path))
    change(tensors)
    save_file(tensors, os.path.join(path, "model.safetensors"))


def test_tensor_errors_name_the_tensor(bert, root):
    missing = _copy(bert, root, "missing")
    _rewrite(missing, lambda t: t.pop("bert.encoder.layer.1.attention.self.key.bias"))
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor.*"
                       r"bert\.encoder\.layer\.1\.attention\.self\.key\.bias"):
        import_hf(missing, os.path.join(root, "never"))
    extra = _copy(bert, root, "extra")
    _rewrite(extra, lambda t: t.update({"classifier.weight": np.zeros((3, 32), np.float32)}))
    with pytest.raises(CheckpointError, match=r"no place for: classifier\.weight"):
        import_hf(extra, os.path.join(root, "never"))
    shape = _copy(bert, root, "shape")
    _rewrite(shape, lambda t: t.update({"bert.encoder.layer.0.intermediate.dense.weight":
                                        np.zeros((60, 32), np.float32)}))
    with pytest.raises(CheckpointError, match=r"'bert\.encoder\.layer\.0\.intermediate\.dense"
                                              r"\.weight' has shape \[60, 32\] but config"
                                              r"\.json implies \[64, 32\]"):
        import_hf(shape, os.path.join(root, "never"))
    integer = _copy(bert, root, "integer")
    _rewrite(integer, lambda t: t.update({"bert.pooler.dense.bias": np.zeros(32, np.int32)}))
    with pytest.raises(CheckpointError, match=r"'bert\.pooler\.dense\.bias' .* stored as I32"):
        Checkpoint(integer).read("bert.pooler.dense.bias")
    truncated = _copy(bert, root, "truncated")
    weights = os.path.join(truncated, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) - 100)
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        import_hf(truncated, os.path.join(root, "never"))
    assert not os.path.exists(os.path.join(root, "never"))


def test_directory_errors_name_the_file(bert, root):
    other = _copy(bert, root, "t5")
    config = json.load(open(os.path.join(other, "config.json")))
    json.dump({**config, "model_type": "t5"}, open(os.path.join(other, "config.json"), "w"))
    with pytest.raises(CheckpointError, match="model_type 't5' is not supported; tflm imports "
                                              "bert, roberta, gpt2"):
        import_hf(other, os.path.join(root, "never"))
    json.dump({**config, "hidden_act": "relu"}, open(os.path.join(other, "config.json"), "w"))
    with pytest.raises(CheckpointError, match="hidden_act='relu' is not supported"):
        import_hf(other, os.path.join(root, "never"))
    torch_only = _copy(bert, root, "torch_only")
    os.rename(os.path.join(torch_only, "model.safetensors"),
              os.path.join(torch_only, "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin but no model\.safetensors"
                                              r".*safetensors first"):
        import_hf(torch_only, os.path.join(root, "never"))
    no_config = _copy(bert, root, "no_config")
    os.remove(os.path.join(no_config, "config.json"))
    with pytest.raises(CheckpointError, match="has no config.json"):
        import_hf(no_config, os.path.join(root, "never"))
    shards = _copy(bert, root, "lost_shard")
    json.dump({"weight_map": {"bert.pooler.dense.bias": "model-00002-of-00002.safetensors"}},
              open(os.path.join(shards, "model.safetensors.index.json"), "w"))
    with pytest.raises(CheckpointError, match="shard model-00002-of-00002.safetensors listed"):
        import_hf(shards, os.path.join(root, "never"))


def test_tokenizer_files_or_tokenizer_path(bert, root):
    bare = os.path.join(root, "no_tokenizer")
    os.makedirs(bare, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(bert, name), bare)
    with pytest.raises(CheckpointError, match=r"no tokenizer files \(tokenizer\.json or "
                                              r"vocab\.txt\); .*--tokenizer=PATH"):
        import_hf(bare, os.path.join(root, "never"))
    report = import_hf(bare, os.path.join(root, "bare_out"), tokenizer=bert)
    assert report["tokenizer"]["directory"] == bert
    for got, want in zip(_weights(os.path.join(root, "bare_out")),
                         _weights(os.path.join(root, "bert_out"))):
        np.testing.assert_array_equal(got, want)


def _cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "tflm.cli", "import", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def test_cli(bert, root):
    out = os.path.join(root, "cli_out")
    result = _cli(f"--from={bert}", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["objective"] == "masked_lm" and report["out"] == out
    assert json.load(open(os.path.join(out, "import.json")))["source"] == bert
    result = _cli(f"--from={os.path.join(root, 'nowhere')}", f"--out={out}")
    assert result.returncode == 1
    assert "tflm import: error:" in result.stderr and "has no config.json" in result.stderr
