"""In-batch negatives across replicas: SimCSE on 2 replicas == 1 device, global batch.

``TrainingModel`` gives the contrastive loss and accuracy the cross-replica gather
(``tflm.training.replicas``); with it, each replica scores its anchors against the
candidates of the whole global batch and the summed replica gradients are the gradient
of the global-batch loss. The run compares per-step losses, accuracies and the weights
after SGD steps (dropout 0: deterministic); without the gather the losses differ.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# Runs in a fresh process: logical devices must be set before TensorFlow starts.
SCRIPT = textwrap.dedent("""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from tflm.models import SimCSE, TransformerBackbone
    from tflm.models.simcse import no_gather
    from tflm.training.training_model import TrainingModel

    BATCH, SEQ, STEPS = 8, 6, 3
    rng = np.random.RandomState(0)

    def view():
        lengths = rng.randint(2, SEQ + 1, size=(BATCH * STEPS, 1))
        mask = (np.arange(SEQ)[None, :] < lengths).astype("int32")
        return {"token_ids": rng.randint(1, 40, size=(BATCH * STEPS, SEQ)).astype("int32")
                * mask, "padding_mask": mask}

    x = {"anchor": view(), "positive": view(), "negative": view()}
    y = np.zeros(BATCH * STEPS, "int32")

    def task():
        backbone = TransformerBackbone(40, 2, 16, 2, 32, SEQ, dropout=0.0, causal=False,
                                       name="backbone")
        return SimCSE(backbone, temperature=0.1)

    keras.utils.set_random_seed(0)
    start = task().get_weights()

    def train(strategy, gathered=True):
        with strategy.scope():
            model = task()
            model.set_weights(start)
            trainer = TrainingModel(model)
            loss = model.default_loss()
            trainer.compile(keras.optimizers.SGD(0.5), loss,
                            weighted_metrics=model.default_metrics(), jit_compile=False)
            if not gathered:
                loss.gather = no_gather
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
        history = trainer.fit(data, epochs=STEPS, steps_per_epoch=1, shuffle=False,
                              verbose=0).history
        # 7 rows: the replicas hold different numbers of them.
        uneven = tf.data.Dataset.from_tensor_slices((x, y)).take(7).batch(7)
        return {"replicas": strategy.num_replicas_in_sync, "loss": history["loss"],
                "accuracy": history["accuracy"],
                "weights": [w.tolist() for w in model.get_weights()],
                "evaluation": trainer.evaluate(uneven, verbose=0, return_dict=True)}

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"one": train(tf.distribute.get_strategy()), "two": train(mirrored),
              "two_local": train(mirrored, gathered=False)}
    print("RESULT" + json.dumps(result))
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path_factory.mktemp("simcse_replicas"),
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "",
                               "TF_CPP_MIN_LOG_LEVEL": "2",
                               "PYTHONPATH": os.path.dirname(os.path.dirname(
                                   os.path.dirname(os.path.abspath(__file__))))})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_two_replicas_equal_one_device_on_the_global_batch(runs):
    one, two = runs["one"], runs["two"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["loss"][0] != one["loss"][-1]  # the steps changed the weights
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["accuracy"], one["accuracy"], rtol=1e-6)
    for a, b in zip(two["weights"], one["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_an_uneven_last_batch_is_still_the_global_batch(runs):
    one, two = runs["one"]["evaluation"], runs["two"]["evaluation"]
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["accuracy"], one["accuracy"], rtol=1e-6)


def test_without_the_gather_each_replica_sees_half_the_negatives(runs):
    """Sentinel: the per-replica loss (4 of 8 candidates per view) is not the global one."""
    assert abs(runs["two_local"]["loss"][0] - runs["one"]["loss"][0]) > 1e-3
