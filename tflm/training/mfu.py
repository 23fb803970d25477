"""Peak FLOP/s of the training devices, the denominator of model FLOPs utilisation (MFU).

MFU = (training FLOPs per token x tokens/s) / (peak FLOP/s of all replicas). Accelerator
peaks are the vendors' dense (no sparsity) numbers; on CPU there is no useful datasheet
number, so the peak is a matmul in the run's compute dtype (float32, or bfloat16 under
``mixed_bfloat16``) timed once per process (the best a TF matmul reaches on this
machine), which makes CPU MFU "fraction of an ideal matmul".
"""

from __future__ import annotations

import functools
import os
import time

import tensorflow as tf
from absl import logging

# GPU name substring -> (16-bit tensor-core peak, float32 peak). float32 on Ampere and
# later runs matmuls as TF32 by default in TensorFlow, so that is its peak there.
GPU_PEAKS = (
    ("H200", 989e12, 494e12),
    ("H100 PCIe", 756e12, 378e12),
    ("H100", 989e12, 494e12),
    ("A100", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("A10", 125e12, 62.5e12),
    ("L4", 121e12, 60e12),
    ("V100", 125e12, 15.7e12),
    ("T4", 65e12, 8.1e12),
)
# TPU generation (TPU_ACCELERATOR_TYPE prefix, e.g. "v4-8") -> bfloat16 peak per chip.
TPU_PEAKS = {"v2": 45e12, "v3": 123e12, "v4": 275e12, "v5litepod": 197e12, "v5e": 197e12,
             "v5p": 459e12, "v6e": 918e12}


@functools.cache
def measured_cpu_flops(size: int = 1024, repeats: int = 5, dtype: str = "float32") -> float:
    """FLOP/s of the fastest of ``repeats`` ``dtype`` ``size``-square matmuls (~0.2 s)."""
    a = tf.cast(tf.random.stateless_normal((size, size), seed=(0, 1)), dtype)
    b = tf.cast(tf.random.stateless_normal((size, size), seed=(0, 2)), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    matmul().numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _gpu_peak(precision: str) -> tuple[float | None, str]:
    gpus = tf.config.list_physical_devices("GPU")
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    for key, half, single in GPU_PEAKS:
        if key in name:
            return (single if precision == "float32" else half), name
    return None, name


def peak_flops(strategy: tf.distribute.Strategy, precision: str) -> tuple[float | None, str]:
    """``(peak FLOP/s of all replicas or None if unknown, device description)``.

    Args:
        strategy: the run's strategy (on accelerators its ``num_replicas_in_sync``
            multiplies the per-device peak).
        precision: the dtype policy name (``float32`` or ``mixed_*``).
    """
    replicas = strategy.num_replicas_in_sync
    if isinstance(strategy, tf.distribute.TPUStrategy):
        kind = os.environ.get("TPU_ACCELERATOR_TYPE", "")
        peak = TPU_PEAKS.get(kind.split("-")[0])
        device = f"TPU {kind or '(unknown type)'}"
    elif tf.config.list_physical_devices("GPU"):
        peak, device = _gpu_peak(precision)
    else:  # the measured matmul already uses every core: no per-replica factor
        dtype = "bfloat16" if precision == "mixed_bfloat16" else "float32"
        return measured_cpu_flops(dtype=dtype), f"CPU (measured {dtype} matmul)"
    if peak is None:
        logging.info("No peak FLOP/s known for %s: MFU is not reported.", device)
        return None, device
    return peak * replicas, device
