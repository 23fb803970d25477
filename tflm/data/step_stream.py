"""The (seed, step) -> example indices stream every training pipeline is built on.

A training stream is a deterministic function of ``(seed, step)``: the examples of an
epoch are a stateless permutation seeded with ``(seed, epoch)``, epochs follow each other
forever, and step ``s`` takes positions ``[s * batch_size, (s + 1) * batch_size)`` of that
endless sequence. A run resumed at ``start_step`` therefore sees exactly the batches the
interrupted run would have seen, and N input pipelines (workers) each take a disjoint
slice of the same global batch, so multi-worker training consumes what one worker would.
"""

from collections.abc import Callable

import tensorflow as tf

from tflm.errors import DataError

_INT64_MAX = 2**63 - 1


def epoch_order(num_examples: int, seed: int, epoch: tf.Tensor, shuffle: bool = True) -> tf.Tensor:
    """Order of the examples in `epoch`: int64 (num_examples,), a permutation when shuffled."""
    order = tf.range(num_examples, dtype=tf.int64)
    if not shuffle:
        return order
    seed_pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(order, seed=seed_pair)


def step_indices(
    num_examples: int, batch_size: int, seed: int, start_step: int = 0, shuffle: bool = True
) -> tf.data.Dataset:
    """Endless dataset of `(step, indices)`: int64 scalar and int64 (batch_size,).

    Batches may straddle an epoch boundary; each epoch visits every example exactly once.
    """
    if num_examples < 1:
        raise DataError("the pipeline has no examples; use a bigger corpus or data file.")
    if batch_size < 1 or start_step < 0:
        raise DataError(
            f"batch_size must be >= 1 and start_step >= 0, got {batch_size} and {start_step}."
        )
    first_epoch, skip = divmod(start_step * batch_size, num_examples)
    positions = (
        tf.data.Dataset.range(first_epoch, _INT64_MAX)
        .flat_map(
            lambda epoch: tf.data.Dataset.from_tensor_slices(
                epoch_order(num_examples, seed, epoch, shuffle)
            )
        )
        .skip(skip)
        .batch(batch_size, drop_remainder=True)
    )
    steps = tf.data.Dataset.range(start_step, _INT64_MAX)
    return tf.data.Dataset.zip((steps, positions))


def shard_for_pipeline(
    dataset: tf.data.Dataset,
    batch_size: int,
    input_context: tf.distribute.InputContext | None,
) -> tf.data.Dataset:
    """Turns global `(step, indices)` batches into this input pipeline's per-replica batches.

    Yields `(step, row_start, indices)`: `indices` int64 (per_replica_batch,) are rows
    `[row_start, row_start + per_replica_batch)` of the global batch of `step`. Pipeline
    `p` of `P` takes the contiguous slice `p` of each global batch, split into one batch
    per local replica; without an input context the whole global batch is one element.
    """
    if input_context is None:
        return dataset.map(lambda step, idx: (step, tf.constant(0, tf.int64), idx))
    try:
        per_replica = input_context.get_per_replica_batch_size(batch_size)
    except ValueError as err:
        raise DataError(
            f"global batch size {batch_size} is not divisible by the "
            f"{input_context.num_replicas_in_sync} replicas in sync; set "
            "config.train.batch_size to a multiple of the number of replicas."
        ) from err
    pipelines = input_context.num_input_pipelines
    if input_context.num_replicas_in_sync % pipelines:
        raise DataError(
            f"{input_context.num_replicas_in_sync} replicas cannot be split evenly over "
            f"{pipelines} input pipelines; use the same number of devices on every worker."
        )
    per_pipeline = batch_size // pipelines
    local_replicas = per_pipeline // per_replica
    first_row = input_context.input_pipeline_id * per_pipeline

    def take_slice(step, idx):
        rows = tf.reshape(idx[first_row : first_row + per_pipeline], [local_replicas, per_replica])
        row_starts = first_row + tf.range(local_replicas, dtype=tf.int64) * per_replica
        return tf.fill([local_replicas], step), row_starts, rows  # (local, per_replica)

    return dataset.map(take_slice).unbatch()


def finish(
    dataset: tf.data.Dataset, make_batch: Callable, deterministic: bool = True
) -> tf.data.Dataset:
    """Maps `make_batch` in parallel, sets the determinism option and prefetches."""
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return (
        dataset.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)
        .with_options(options)
        .prefetch(tf.data.AUTOTUNE)
    )


def training_stream(
    num_examples: int,
    batch_size: int,
    seed: int,
    start_step: int,
    input_context: tf.distribute.InputContext | None,
    make_batch: Callable,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """The endless training dataset of every pipeline: step indices from `start_step`,
    this pipeline's slice of each global batch, then `make_batch(step, row, indices)`."""
    stream = step_indices(num_examples, batch_size, seed, start_step)
    stream = shard_for_pipeline(stream, batch_size, input_context)
    return finish(stream, make_batch, deterministic)


def distributed_dataset(strategy: tf.distribute.Strategy, dataset_fn: Callable):
    """`strategy.distribute_datasets_from_function(dataset_fn)`.

    `dataset_fn(input_context)` must build its pipeline with that `input_context` (every
    pipeline here takes one) so each worker reads its own slice of each global batch.
    """
    return strategy.distribute_datasets_from_function(dataset_fn)
