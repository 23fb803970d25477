"""The (seed, step) -> indices stream: a keyed permutation per epoch, computed per batch,
so its cost and memory do not depend on the number of examples."""

import numpy as np
import pytest
import tensorflow as tf

from tflm.data import step_stream


def _epoch(num_examples, seed, epoch):
    index = tf.range(num_examples, dtype=tf.int64)
    return step_stream.permute(index, num_examples, seed, tf.fill([num_examples], epoch)).numpy()


@pytest.mark.parametrize("num_examples", [1, 2, 3, 7, 64, 65, 1000, 4099])
def test_each_epoch_is_a_permutation(num_examples):
    for epoch in (0, 1, 9):
        order = _epoch(num_examples, 3, epoch)
        np.testing.assert_array_equal(np.sort(order), np.arange(num_examples))


def test_epochs_and_seeds_give_different_orders():
    orders = [_epoch(1000, 3, 0), _epoch(1000, 3, 1), _epoch(1000, 4, 0)]
    for i in range(3):
        for j in range(i):
            assert np.mean(orders[i] == orders[j]) < 0.02  # ~1/1000 by chance
    np.testing.assert_array_equal(_epoch(1000, 3, 1), orders[1])  # deterministic


def test_orders_look_uniform():
    # Where example 0 lands over 5000 epochs of 10: each place ~500 times.
    epochs = tf.range(5000, dtype=tf.int64)
    place = step_stream.permute(tf.zeros([5000], tf.int64), 10, 0, epochs).numpy()
    counts = np.bincount(place, minlength=10)
    chi2 = np.sum((counts - 500.0) ** 2 / 500.0)
    assert chi2 < 30, counts  # 9 degrees of freedom: p ~ 4e-4
    # ... and neighbouring examples are not kept together.
    order = _epoch(5000, 1, 0)
    assert abs(np.corrcoef(order[:-1], order[1:])[0, 1]) < 0.1
    assert abs(np.corrcoef(np.arange(5000), order)[0, 1]) < 0.1


def test_batches_straddle_epochs_and_visit_every_example_once_per_epoch():
    num_examples, batch = 13, 5
    stream = step_stream.step_indices(num_examples, batch, seed=2)
    flat = np.concatenate([idx.numpy() for _, idx in stream.take(13)])  # 5 epochs
    for e in range(5):
        np.testing.assert_array_equal(np.sort(flat[e * 13 : (e + 1) * 13]), np.arange(13))
    resumed = step_stream.step_indices(num_examples, batch, seed=2, start_step=7)
    step, idx = next(iter(resumed))
    assert int(step) == 7
    np.testing.assert_array_equal(idx.numpy(), flat[35:40])


def test_a_huge_epoch_costs_nothing_to_start_or_resume():
    # 10^12 examples: a table of its order would be 8 TB; a step deep into the run is
    # still computed at once, and the graph holds no table.
    num_examples = 10**12
    stream = step_stream.step_indices(num_examples, 4, seed=0, start_step=10**9)
    step, idx = next(iter(stream))
    assert int(step) == 10**9
    idx = idx.numpy()
    assert np.all((idx >= 0) & (idx < num_examples)) and len(set(idx)) == 4
    small = step_stream.step_indices(100, 4, seed=0)
    graph = stream._as_serialized_graph().numpy()
    assert abs(len(graph) - len(small._as_serialized_graph().numpy())) < 64
