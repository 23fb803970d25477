"""The shared test helper: the checks every layer and model must pass.

`check_layer` runs a layer eagerly and on symbolic `keras.Input`s, round-trips its
config, saves and reloads a model built around it (`.keras`) and takes one `fit` step.
`check_model` does the config round trip, `.keras` save/load and one `fit` step for a
whole model. Tests build their tiny fixtures inline and call these.
`loopback_workers` runs a MultiWorkerMirrored cluster of real processes on 127.0.0.1.
"""

import contextlib
import json
import os
import socket
import subprocess

import keras
import numpy as np
from keras import ops


def check_config_round_trip(obj):
    """`from_config(get_config())` rebuilds an object with an identical config."""
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    return clone


def check_layer(layer, inputs: dict, call=None, tmp_path=None, fit=True):
    """Checks `layer` called as `call(layer, inputs)` (default `layer(*inputs.values())`).

    Args:
        layer: an unbuilt layer.
        inputs: name -> numpy array, batch first; the keys name the `keras.Input`s.
        call: how to call the layer on a dict of tensors; must return one tensor.
        tmp_path: a directory for the `.keras` file; the save/load check needs it.
        fit: also take one SGD step on a model around the layer (float output only).

    Returns:
        The eager output as numpy.
    """
    call = call or (lambda lyr, x: lyr(*x.values()))
    tensors = {k: ops.convert_to_tensor(v) for k, v in inputs.items()}
    eager = ops.convert_to_numpy(call(layer, tensors))

    symbolic = {
        k: keras.Input(shape=v.shape[1:], dtype=str(v.dtype), name=k) for k, v in inputs.items()
    }
    outputs = call(layer, symbolic)
    assert tuple(outputs.shape[1:]) == eager.shape[1:], (outputs.shape, eager.shape)
    model = keras.Model(symbolic, outputs)
    np.testing.assert_allclose(ops.convert_to_numpy(model(inputs)), eager, rtol=1e-6, atol=1e-6)

    clone = check_config_round_trip(layer)
    clone_out = call(clone, tensors)
    assert tuple(clone_out.shape) == eager.shape

    if tmp_path is not None:
        path = os.path.join(str(tmp_path), f"{layer.name}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        reloaded = ops.convert_to_numpy(loaded(inputs))
        np.testing.assert_allclose(reloaded, eager, rtol=1e-6, atol=1e-6)

    if fit:
        model.compile(optimizer="sgd", loss="mse", jit_compile=False)
        history = model.fit(inputs, np.zeros_like(eager), batch_size=len(eager), verbose=0)
        assert np.isfinite(history.history["loss"][0])
    return eager


def _numpy(outputs):
    """A model's outputs (a tensor or a dict of them) as numpy."""
    return keras.tree.map_structure(ops.convert_to_numpy, outputs)


def check_model(model, x: dict, y=None, sample_weight=None, tmp_path=None, loss=None):
    """Config round trip, `.keras` save/load with identical outputs, one `fit` step.

    Args:
        model: a built model taking the dict `x` (its output a tensor or a dict).
        x: name -> numpy array inputs.
        y, sample_weight: labels and weights for the fit step (skipped when y is None).
        tmp_path: directory for the `.keras` file (save/load skipped when None).
        loss: the loss to compile with (default: the model's `default_loss()`).
    """
    expected = _numpy(model(x))
    check_config_round_trip(model)
    if tmp_path is not None:
        path = os.path.join(str(tmp_path), f"{model.name}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        keras.tree.map_structure(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
            _numpy(loaded(x)), expected)
    if y is not None:
        model.compile(
            optimizer=keras.optimizers.SGD(0.1), loss=loss or model.default_loss(),
            jit_compile=False,
        )
        history = model.fit(x, y, sample_weight=sample_weight, batch_size=len(y), verbose=0)
        assert np.isfinite(history.history["loss"][0])
    return expected


def train_config(**overrides):
    """``config.train`` defaults with ``overrides`` applied (unvalidated, for unit tests)."""
    from tflm.config import train_section

    config = train_section()
    config.update(overrides)
    return config


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loopback_workers(argv, log_dir, timeout_s: float, env=None, cwd=None, count: int = 2):
    """Starts ``count`` worker processes of one ``TF_CONFIG`` cluster on 127.0.0.1.

    Yields the ``Popen`` list; the body runs while they train, then each must exit 0 within
    ``timeout_s`` (else the test fails with the end of its log, ``log_dir/worker<i>.log``).
    Workers still running when the block is left are killed.

    Args:
        argv: ``index -> command line`` of worker ``index``.
        env: ``index -> extra environment variables`` (default none).
        cwd: the workers' working directory.
    """
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(count)]
    procs = []
    try:
        for index in range(count):
            tf_config = {"cluster": {"worker": addresses},
                         "task": {"type": "worker", "index": index}}
            worker_env = dict(os.environ, TF_CONFIG=json.dumps(tf_config),
                              CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
                              **(env(index) if env else {}))
            with open(os.path.join(log_dir, f"worker{index}.log"), "w") as log:
                procs.append(subprocess.Popen(argv(index), env=worker_env, cwd=cwd,
                                              stdout=log, stderr=subprocess.STDOUT))
        yield procs
        for proc in procs:
            proc.wait(timeout=timeout_s)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for index, proc in enumerate(procs):
        with open(os.path.join(log_dir, f"worker{index}.log")) as f:
            log = f.read()[-3000:]
        assert proc.returncode == 0, f"worker {index} failed:\n{log}"


ENCODER_TEXTS = ["The quick brown fox jumps over the lazy dog.", "A function returns a value.",
                 "Classes define methods and attributes.", "Return the number of items."] * 10


def tiny_encoder_dir(path, objective="masked_lm", pooling="auto", seed=0, window=32) -> str:
    """A model directory of a 1-layer, hidden-16 model with random weights (scaled up so
    texts get distinct vectors): a BPE GPT (``causal_lm``), else a bidirectional
    WordPiece model of ``objective`` (``masked_lm``: a BertPretrainer, ``electra``), with
    ``config.model.backbone.pooling = pooling``."""
    import numpy as np

    from tflm.config import base_config, validate
    from tflm.model_dir import build_model, save_model_dir
    from tflm.text import train_tokenizer

    config = base_config(objective)
    if objective == "causal_lm":
        tokenizer = train_tokenizer("bpe", ENCODER_TEXTS, 300)
    else:
        tokenizer = train_tokenizer("wordpiece", ENCODER_TEXTS, 120, lowercase=True)
        config.model.backbone.update(causal=False, norm_first=False, activation="gelu",
                                     num_segments=2)
        config.data.update(tokenizer="wordpiece", lowercase=True)
    config.model.backbone.update(vocabulary_size=tokenizer.vocabulary_size, num_layers=1,
                                 hidden_dim=16, num_heads=2, intermediate_dim=32,
                                 max_sequence_length=window, pooling=pooling)
    config.data.seq_len = window
    config = validate(config)
    model = build_model(config)
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.3, variable.shape).astype("float32"))
    return save_model_dir(str(path), model, tokenizer, config)
