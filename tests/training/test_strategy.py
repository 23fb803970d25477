"""Strategy, worker roles, precision and XLA choices from ``config.train``."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests.testing import train_config
from tflm.errors import ConfigError
from tflm.training import strategy as strategy_lib
from tflm.training.strategy import (
    is_chief,
    make_strategy,
    num_workers,
    resolve_jit_compile,
    resolve_precision,
    task_role,
    worker_index,
)


@pytest.fixture
def no_cluster(monkeypatch):
    for name in ("TF_CONFIG", *strategy_lib.TPU_ENV_VARS):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_gpu(monkeypatch):
    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind))


@pytest.mark.parametrize("name", ["auto", "default"])
def test_single_cpu_gets_the_default_strategy(no_cluster, name):
    strategy = make_strategy(train_config(strategy=name))
    assert strategy is tf.distribute.get_strategy()
    assert (is_chief(strategy), worker_index(strategy), num_workers(strategy)) == (True, 0, 1)


def test_bad_tf_config_is_a_config_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        make_strategy(train_config(strategy="auto"))
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker"}}))
    with pytest.raises(ConfigError, match="parameter-server"):
        make_strategy(train_config(strategy="multi_worker"))


def test_task_roles():
    workers = {"worker": ["a:1", "b:1", "c:1"]}
    assert task_role("worker", 0, workers) == (True, 0, 3)
    assert task_role("worker", 2, workers) == (False, 2, 3)
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert task_role("chief", 0, with_chief) == (True, 0, 3)
    assert task_role("worker", 0, with_chief) == (False, 1, 3)
    assert task_role("worker", 1, with_chief) == (False, 2, 3)
    assert task_role(None, 0, {}) == (True, 0, 1)


def test_precision_choices(monkeypatch, fake_gpu):
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert resolve_precision(train_config(precision=name)) == name
    assert resolve_precision(train_config(precision="auto")) == "mixed_float16"  # GPU
    monkeypatch.setattr(strategy_lib, "_is_tpu", lambda strategy: True)
    assert resolve_precision(train_config(precision="auto")) == "mixed_bfloat16"


def test_precision_auto_on_cpu_is_bf16_only_with_bf16_instructions(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(strategy_lib, "cpu_has_bf16", lambda: False)
    assert resolve_precision(train_config(precision="auto")) == "float32"
    monkeypatch.setattr(strategy_lib, "cpu_has_bf16", lambda: True)
    assert resolve_precision(train_config(precision="auto")) == "mixed_bfloat16"


def test_cpu_has_bf16_reads_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert not strategy_lib.cpu_has_bf16(str(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert strategy_lib.cpu_has_bf16(str(cpuinfo))
    cpuinfo.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert strategy_lib.cpu_has_bf16(str(cpuinfo))
    assert not strategy_lib.cpu_has_bf16(str(tmp_path / "missing"))


def test_jit_compile_choices(monkeypatch):
    default = tf.distribute.get_strategy()
    assert resolve_jit_compile(train_config(jit_compile="on"), default) is True
    assert resolve_jit_compile(train_config(jit_compile="off"), default) is False
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    cpu_float32 = train_config(jit_compile="auto", precision="float32")
    assert resolve_jit_compile(cpu_float32, default) is True  # CPU float32: XLA is faster
    cpu_bf16 = train_config(jit_compile="auto", precision="mixed_bfloat16")
    assert resolve_jit_compile(cpu_bf16, default) is False  # oneDNN's bf16 kernels are
    monkeypatch.setattr(strategy_lib, "cpu_has_bf16", lambda: True)
    assert resolve_jit_compile(train_config(jit_compile="auto"), default) is False
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert resolve_jit_compile(train_config(jit_compile="auto"), default) is True
    monkeypatch.setattr(strategy_lib, "_is_tpu", lambda strategy: True)
    assert resolve_jit_compile(train_config(jit_compile="auto"), default) is True


# Runs in a fresh process: logical devices must be set before TensorFlow starts.
MIRRORED_SCRIPT = textwrap.dedent("""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from tflm.config import train_section
    from tflm.training.optim import learning_rate_schedule, make_optimizer
    from tflm.training.strategy import make_strategy, resolve_jit_compile

    rng = np.random.RandomState(0)
    x = rng.rand(32, 6).astype("float32")
    y = (x @ rng.rand(6, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.LayerNormalization(name="layer_norm")(
        keras.layers.Dense(8, activation="tanh", name="dense")(inputs))
    start = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden)).get_weights()

    def train_config(**overrides):
        c = train_section()
        c.update(overrides)
        return c

    config = train_config(warmup_steps=1, steps=4, learning_rate=0.05)

    def train(name, keras_adamw=False):
        strategy = make_strategy(train_config(strategy=name))
        with strategy.scope():
            inputs = keras.Input((6,))
            hidden = keras.layers.LayerNormalization(name="layer_norm")(
                keras.layers.Dense(8, activation="tanh", name="dense")(inputs))
            model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
            model.set_weights(start)
            optimizer = make_optimizer(config, model)
            if keras_adamw:  # Keras' own: clips each replica's share (sentinel)
                optimizer = keras.optimizers.AdamW(
                    learning_rate_schedule(config), weight_decay=0.0, global_clipnorm=1.0)
            model.compile(optimizer, "mse",
                          jit_compile=resolve_jit_compile(config, strategy))
        history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        return {"replicas": strategy.num_replicas_in_sync,
                "jit": resolve_jit_compile(config, strategy),
                "loss": history.history["loss"],
                "weights": [w.tolist() for w in model.get_weights()]}

    result = {n: train(n) for n in ("default", "mirrored")}
    result["keras_default"] = train("default", keras_adamw=True)
    result["keras_mirrored"] = train("mirrored", keras_adamw=True)
    print("RESULT" + json.dumps(result))
""")


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Results of MIRRORED_SCRIPT: training under 1 and 2 replicas, tflm and Keras AdamW."""
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path_factory.mktemp("mirrored"),
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "",
                               "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_mirrored_two_replicas_match_one(mirrored):
    """AdamW with weight decay and clipping: 2 replicas == 1 with the same global batch."""
    one, two = mirrored["default"], mirrored["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert two["jit"] is False  # XLA fails for Mirrored over CPU devices
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    for a, b in zip(two["weights"], one["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sentinel_keras_clips_per_replica(mirrored):
    """Keras still clips before the replica sum? If this fails, drop AdamW's clip fix."""
    one, two = mirrored["keras_default"], mirrored["keras_mirrored"]
    differ = max(np.abs(np.subtract(a, b)).max()
                 for a, b in zip(one["weights"], two["weights"]))
    assert differ > 1e-4, "Keras clips the summed gradient now: remove the AdamW fix"
