"""The fused, chunked LM head + cross-entropy equals the plain head's loss, gradients and
accuracy, and trains a GPT exactly as the unfused step does."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflm.models import GPT, token_cross_entropy
from tflm.models.lm_head_loss import lm_head_cross_entropy
from tflm.models.metrics import TokenAccuracy, label_logit_is_largest
from tflm.training.training_model import TrainingModel

RNG = np.random.default_rng(0)
HIDDEN = tf.constant(RNG.standard_normal((3, 7, 16)).astype("float32"))
TABLE = tf.Variable(RNG.standard_normal((40, 16)).astype("float32") * 0.4)
LABELS = tf.constant(RNG.integers(0, 40, size=(3, 7)).astype("int32"))
WEIGHTS = tf.constant((RNG.random((3, 7)) > 0.25).astype("float32"))


def plain(hidden, table, labels, weights):
    """(weighted-mean CE, argmax == label) through the full logits."""
    logits = tf.matmul(hidden, table, transpose_b=True)
    ce = token_cross_entropy(labels, logits)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                      "float32")
    return tf.reduce_sum(ce * weights) / tf.reduce_sum(weights), correct


def loss_and_grads(fn):
    with tf.GradientTape() as tape:
        tape.watch(HIDDEN)
        loss, correct = fn(HIDDEN, tf.convert_to_tensor(TABLE), LABELS, WEIGHTS)
    return loss, correct, tape.gradient(loss, [HIDDEN, TABLE])


@pytest.mark.parametrize("chunk", [4, 5, 21, 64])  # padded last chunk, exact, one chunk
def test_fused_equals_plain_loss_gradients_and_accuracy(chunk):
    want_loss, want_correct, want_grads = loss_and_grads(plain)
    loss, correct, grads = loss_and_grads(
        lambda h, t, y, w: lm_head_cross_entropy(h, t, y, w, chunk_size=chunk))
    assert abs(float(loss) - float(want_loss)) < 1e-6
    np.testing.assert_array_equal(correct.numpy(), want_correct.numpy())
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-7)
    # Without gradients (evaluation): the same loss and flags.
    eval_loss, eval_correct = lm_head_cross_entropy(
        HIDDEN, TABLE, LABELS, WEIGHTS, chunk_size=chunk, with_gradient=False)
    assert abs(float(eval_loss) - float(want_loss)) < 1e-6
    np.testing.assert_array_equal(eval_correct.numpy(), want_correct.numpy())


def test_padding_never_counts_and_no_weight_gives_zero():
    weights = tf.concat([tf.ones((3, 3)), tf.zeros((3, 4))], axis=1)
    scrambled = tf.concat([LABELS[:, :3], (LABELS[:, 3:] + 7) % 40], axis=1)
    with tf.GradientTape() as tape:
        tape.watch(HIDDEN)
        a, _ = lm_head_cross_entropy(HIDDEN, TABLE, LABELS, weights, chunk_size=4)
    grad = tape.gradient(a, HIDDEN)
    b, _ = lm_head_cross_entropy(HIDDEN, TABLE, scrambled, weights, chunk_size=4)
    assert float(a) == pytest.approx(float(b), abs=1e-7)
    assert float(tf.reduce_max(tf.abs(grad[:, 3:]))) == 0.0  # padded rows: no gradient
    zero, _ = lm_head_cross_entropy(HIDDEN, TABLE, LABELS, tf.zeros((3, 7)), chunk_size=4)
    assert float(zero) == 0.0


def test_batch_size_unknown_when_traced_runs_as_one_chunk():
    @tf.function(input_signature=[tf.TensorSpec((None, 7, 16)), tf.TensorSpec((None, 7), tf.int32),
                                  tf.TensorSpec((None, 7))])
    def fused(h, y, w):
        return lm_head_cross_entropy(h, TABLE, y, w, chunk_size=4, with_gradient=False)

    loss, correct = fused(HIDDEN[:2], LABELS[:2], WEIGHTS[:2])
    want_loss, want_correct = plain(HIDDEN[:2], TABLE, LABELS[:2], WEIGHTS[:2])
    assert abs(float(loss) - float(want_loss)) < 1e-6
    np.testing.assert_array_equal(correct.numpy(), want_correct.numpy())


def test_token_accuracy_takes_logits_or_flags():
    logits = tf.matmul(HIDDEN, TABLE, transpose_b=True)
    _, flags = lm_head_cross_entropy(HIDDEN, TABLE, LABELS, WEIGHTS, chunk_size=8)
    from_logits, from_flags = TokenAccuracy(), TokenAccuracy()
    from_logits.update_state(LABELS, logits, sample_weight=WEIGHTS)
    from_flags.update_state(LABELS, flags, sample_weight=WEIGHTS)
    reference = keras.metrics.SparseCategoricalAccuracy()
    reference.update_state(LABELS, logits, sample_weight=WEIGHTS)
    assert float(from_logits.result()) == pytest.approx(float(reference.result()))
    assert float(from_flags.result()) == pytest.approx(float(reference.result()))



def test_token_accuracy_counts_ties_with_the_label_as_correct():
    # Row 0: the label (2) has the largest logit; row 1: label 0 ties the largest (the
    # argmax would pick index 0 too); row 2: label 1 ties with index 0, before it (the
    # argmax says 0: wrong, the max rule: right); row 3: the label is not the largest.
    logits = tf.constant([[[0.0, 1.0, 3.0], [2.0, 2.0, 1.0], [5.0, 5.0, 0.0],
                           [1.0, 0.0, 0.5]]])
    labels = tf.constant([[2, 0, 1, 2]])
    np.testing.assert_array_equal(label_logit_is_largest(labels, logits).numpy(),
                                  [[True, True, True, False]])
    metric = TokenAccuracy()
    metric.update_state(labels, logits, sample_weight=tf.constant([[1.0, 1.0, 0.0, 1.0]]))
    assert float(metric.result()) == pytest.approx(2 / 3)

def tiny_gpt(tie_embeddings=True):
    keras.utils.set_random_seed(3)
    return GPT(backbone=dict(vocabulary_size=50, num_layers=1, hidden_dim=16, num_heads=2,
                             intermediate_dim=32, max_sequence_length=12),
               tie_embeddings=tie_embeddings)


def gpt_batch():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 50, size=(4, 9)).astype("int32")
    mask = np.ones((4, 8), "int32")
    mask[1, 6:] = 0
    x = {"token_ids": ids[:, :-1], "padding_mask": mask}
    return x, ids[:, 1:], mask.astype("float32")


@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_gpt_fused_loss_is_its_default_loss(tie_embeddings):
    model = tiny_gpt(tie_embeddings)
    x, y, w = gpt_batch()
    want = model.default_loss()(y, model(x), sample_weight=w)
    loss, correct = model.fused_loss(x, y, w, chunk_size=8, training=False)
    assert abs(float(loss) - float(want)) < 1e-6
    assert correct.shape == (4, 8)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_training_model_fused_step_equals_unfused(jit_compile):
    """Two SGD steps: the same weights, loss, accuracy and perplexity either way (SGD, not
    Adam: Adam's m / sqrt(v) turns float-rounding differences in near-zero gradients
    into full-size steps of either sign)."""
    x, y, w = gpt_batch()
    results = []
    for chunk in (0, 8):
        task = tiny_gpt()
        model = TrainingModel(task, fused_chunk=chunk)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=task.default_loss(),
                      weighted_metrics=task.default_metrics(), jit_compile=jit_compile)
        for _ in range(2):
            logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
        evaluated = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
        results.append((logs, evaluated, [v.numpy() for v in task.weights]))
    (logs0, eval0, weights0), (logs1, eval1, weights1) = results
    for key in ("loss", "accuracy", "perplexity", "grad_norm"):
        assert logs1[key] == pytest.approx(logs0[key], rel=1e-5, abs=1e-6), key
    for key in ("loss", "accuracy", "perplexity"):
        assert eval1[key] == pytest.approx(eval0[key], rel=1e-5, abs=1e-6), key
    for a, b in zip(weights0, weights1):
        np.testing.assert_allclose(a, b, atol=1e-6)
