"""The (seed, step) -> example indices stream every training pipeline is built on.

A training stream is a deterministic function of ``(seed, step)``: the examples of an
epoch are a keyed permutation seeded with ``(seed, epoch)``, epochs follow each other
forever, and step ``s`` takes positions ``[s * batch_size, (s + 1) * batch_size)`` of that
endless sequence. A run resumed at ``start_step`` therefore sees exactly the batches the
interrupted run would have seen, and N input pipelines (workers) each take a disjoint
slice of the same global batch, so multi-worker training consumes what one worker would.

The permutation is computed per position (a Feistel network on ``[0, 4^k)`` with
cycle-walking into ``[0, num_examples)``), never as a table: a step costs the same and
the pipeline holds the same memory for ten examples or ten billion, and a resume starts
at its step at once.
"""

from collections.abc import Callable

import tensorflow as tf

from tflm.errors import DataError

_INT64_MAX = 2**63 - 1
_ROUNDS = 6  # Feistel rounds: 4 suffice with an ideal round function, 2 more for a plain hash
_MASK32 = 0xFFFFFFFF


def _mix32(x: tf.Tensor) -> tf.Tensor:
    """A 32-bit integer hash (xor-shift-multiply) of int64 `x` in [0, 2^32), in int64
    arithmetic that never overflows (every product is below 2^59)."""
    for _ in range(2):
        x = tf.bitwise.bitwise_and((tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)))
                                   * 0x45D9F3B, _MASK32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def permute(index: tf.Tensor, num_examples: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """Position `index` (int64, any shape, in `[0, num_examples)`) of epoch `epoch`'s
    keyed permutation: a bijection of `[0, num_examples)` for each `(seed, epoch)`."""
    half_bits = max(1, (int(num_examples - 1).bit_length() + 1) // 2)
    half_mask = (1 << half_bits) - 1
    epoch = tf.cast(epoch, tf.int64)
    seed_key = _mix32(tf.constant((seed ^ (seed >> 32)) & _MASK32, tf.int64))
    epoch_key = _mix32(tf.bitwise.bitwise_xor(
        _mix32(tf.bitwise.bitwise_and(epoch, _MASK32)),
        tf.bitwise.bitwise_and(tf.bitwise.right_shift(epoch, 32), _MASK32)))
    keys = [_mix32(tf.bitwise.bitwise_xor(_mix32(seed_key + r), epoch_key)) for r in range(_ROUNDS)]

    def feistel(x):
        left = tf.bitwise.right_shift(x, half_bits)
        right = tf.bitwise.bitwise_and(x, half_mask)
        for key in keys:
            mixed = tf.bitwise.bitwise_and(_mix32(tf.bitwise.bitwise_xor(right, key)), half_mask)
            left, right = right, tf.bitwise.bitwise_xor(left, mixed)
        return tf.bitwise.bitwise_or(tf.bitwise.left_shift(left, half_bits), right)

    # Cycle-walking: the domain [0, 4^half_bits) is < 4 * num_examples, so a few rounds
    # of re-encrypting the positions that land outside [0, num_examples) bring every one
    # back inside (a permutation's cycle through an inside point returns inside).
    def outside(x):
        return tf.reduce_any(x >= num_examples)

    def walk(x):
        return (tf.where(x >= num_examples, feistel(x), x),)

    return tf.while_loop(outside, walk, (feistel(tf.cast(index, tf.int64)),))[0]


def batch_indices(
    step: tf.Tensor, num_examples: int, batch_size: int, seed: int, shuffle: bool = True
) -> tf.Tensor:
    """Example indices of global batch `step`: int64 (batch_size,), positions
    `[step * batch_size, (step + 1) * batch_size)` of the endless epoch sequence."""
    positions = tf.cast(step, tf.int64) * batch_size + tf.range(batch_size, dtype=tf.int64)
    epoch, index = positions // num_examples, positions % num_examples
    return permute(index, num_examples, seed, epoch) if shuffle else index


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
    return tf.data.Dataset.range(start_step, _INT64_MAX).map(
        lambda step: (step, batch_indices(step, num_examples, batch_size, seed, shuffle)))


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
