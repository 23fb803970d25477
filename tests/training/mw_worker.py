"""One worker of the 2-process MultiWorkerMirrored test (run by test_multi_worker.py).

Usage: ``TF_CONFIG=... python mw_worker.py OUT_DIR``. Writes ``OUT_DIR/worker<i>.json``
(role, errors, history) and ``OUT_DIR/worker<i>.npz`` (final weights), where ``i`` is
the task index. Runs, in one process:

- ``patched``: ``Model.fit`` with ``apply_workarounds`` and a ``BackupAndRestore`` in
  ``backup_dir_for_worker(OUT_DIR/backup)``;
- ``unpatched``: plain ``Model.fit`` (sentinel for workaround 1);
- ``build_fix_only``: only workaround 1 (sentinel for workaround 2).
"""

import json
import os
import sys

import tensorflow as tf

from tflm.config import train_section
from tflm.training.strategy import (
    is_chief,
    make_strategy,
    num_workers,
    resolve_jit_compile,
    worker_index,
)

config = train_section()
strategy = make_strategy(config)  # auto + TF_CONFIG: before any other TF op

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tflm.training.multi_worker import (  # noqa: E402
    MultiWorkerFit,
    apply_workarounds,
    backup_dir_for_worker,
)
from tflm.training.optim import make_optimizer  # noqa: E402

OUT = sys.argv[1]
TASK = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
config.warmup_steps, config.steps, config.learning_rate = 2, 4, 0.05


class BuildFixOnly(MultiWorkerFit, keras.Model):
    """Workaround 1 only: Keras' own train step returns scalar logs."""

    def train_step(self, data):
        return keras.Model.train_step(self, data)


def dataset():
    rng = np.random.RandomState(0)
    x = rng.rand(64, 8).astype("float32")
    y = (x @ rng.rand(8, 2)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8)


def fit(model_class=keras.Model, patched=False, callbacks=()):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="relu", name="dense")(inputs)
        hidden = keras.layers.LayerNormalization(name="layer_norm")(hidden)
        model = model_class(inputs, keras.layers.Dense(2, name="out")(hidden))
        if patched:
            model = apply_workarounds(model, strategy)
        model.compile(make_optimizer(config, model), "mse", metrics=["mae"],
                      jit_compile=resolve_jit_compile(config, strategy))
    history = model.fit(dataset(), steps_per_epoch=2, epochs=2, verbose=0,
                        callbacks=list(callbacks))
    return model, history.history


def attempt(**kwargs):
    try:
        model, history = fit(**kwargs)
        return model, {"ok": True, "history": history}
    except Exception as e:  # the sentinels record what upstream raises
        return None, {"ok": False, "error": f"{type(e).__name__}: {e}"}


backup_dir = backup_dir_for_worker(os.path.join(OUT, "backup"), strategy)
result = {
    "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
    "is_chief": is_chief(strategy),
    "worker_index": worker_index(strategy),
    "num_workers": num_workers(strategy),
    "jit_compile": resolve_jit_compile(config, strategy),
    "backup_dir": backup_dir,
}
backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq=1, delete_checkpoint=False)
model, result["patched"] = attempt(patched=True, callbacks=[backup])
if model is not None:
    np.savez(os.path.join(OUT, f"worker{TASK}.npz"), *model.get_weights())
_, result["unpatched"] = attempt()
_, result["build_fix_only"] = attempt(model_class=BuildFixOnly)
with open(os.path.join(OUT, f"worker{TASK}.json"), "w") as f:
    json.dump(result, f)
