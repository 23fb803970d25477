"""Distribution strategy, precision and XLA choices from ``config.train``.

``make_strategy`` turns ``config.train.strategy`` into a ``tf.distribute.Strategy``:

- ``auto``: TPU if one resolves (only tried when ``config.train.tpu_address`` is set,
  which must then work, or a TPU environment variable is present, so a machine without
  TPU never waits on the GCE metadata server); ``MultiWorkerMirroredStrategy`` if
  ``TF_CONFIG`` names a cluster of more than one task; ``MirroredStrategy`` if there is
  more than one GPU; otherwise the default strategy.
- ``default`` | ``mirrored`` | ``multi_worker`` | ``tpu``: that strategy.

``MultiWorkerMirroredStrategy`` (and so ``auto`` under ``TF_CONFIG``) must be created at
program start-up, before any other TensorFlow op runs: TensorFlow configures its
collective ops when the strategy is made.

The helpers ``is_chief``, ``worker_index`` and ``num_workers`` read the cluster from the
strategy's cluster resolver (made from ``TF_CONFIG``); single-machine strategies are one
chief worker.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
from absl import logging

from tflm.errors import ConfigError, TrainingError

# Environment variables that announce a Cloud TPU (TPU VM, TPU node, Colab, GKE).
TPU_ENV_VARS = (
    "TPU_NAME",
    "TPU_ACCELERATOR_TYPE",
    "COLAB_TPU_ADDR",
    "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS",
)

# ``auto`` precision on CPU: ``mixed_bfloat16`` where the CPU has bf16 dot-product
# instructions, float32 elsewhere. Measured on this project's 2-core AVX512_BF16 CPU
# (TF 2.21, gpt_mini train step, batch 16 x 128, ``benchmarks/train_throughput.py``):
# TensorFlow's oneDNN kernels run bf16 matmuls at ~360 GFLOP/s against ~170-200 for
# float32, so mixed_bfloat16 without XLA takes ~320 ms a step against ~470 for float32
# with XLA (XLA's CPU backend does not use the bf16 instructions: its bf16 dots run at
# 0.5-0.9x float32, hence no XLA for bf16 on CPU). Validation loss after the demo's 300
# steps stays within 2% of float32's (the same benchmark checks it).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX512_BF16 or AMX-BF16).

    Read from Linux's ``/proc/cpuinfo``; False where that file does not exist.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in CPU_BF16_FLAGS)
    except OSError:
        return False
    return False


def _tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable ({} when unset)."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}): {text!r}.") from e


def _cluster_size(tf_config: dict) -> int:
    """Number of training tasks (chief + workers) named by a parsed ``TF_CONFIG``."""
    cluster = tf_config.get("cluster", {})
    if "ps" in cluster:
        raise ConfigError(
            "TF_CONFIG names 'ps' tasks: parameter-server training is not supported; "
            "list only 'chief' and 'worker' tasks for MultiWorkerMirroredStrategy."
        )
    return len(cluster.get("chief", ())) + len(cluster.get("worker", ()))


def _tpu_strategy(tpu_address: str) -> tf.distribute.TPUStrategy:
    """Connects to the TPU at ``tpu_address`` ("" = from the environment / local)."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu_address or None
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise TrainingError(
            f"Could not connect to the TPU {tpu_address or '(from the environment)'}: "
            f"{e}. Check config.train.tpu_address / TPU_NAME, or set "
            "config.train.strategy to 'default'."
        ) from e
    return tf.distribute.TPUStrategy(resolver)


def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """All GPUs; on a machine without GPU, all (logical) CPU devices."""
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


def make_strategy(train_config) -> tf.distribute.Strategy:
    """Builds the strategy named by ``train_config.strategy`` (see the module docstring).

    Args:
        train_config: ``config.train``; reads ``strategy`` and ``tpu_address``.

    Returns:
        A ``tf.distribute.Strategy``; build model and optimizer under its ``scope()``.

    Raises:
        ConfigError: unknown strategy name, or a ``TF_CONFIG`` that is not JSON / names
            parameter servers.
        TrainingError: a TPU was asked for and cannot be reached.
    """
    name = train_config.strategy
    tpu_address = train_config.get("tpu_address", "")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _mirrored_strategy()
    if name == "multi_worker":
        _cluster_size(_tf_config())
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu_address)
    if name != "auto":
        raise ConfigError(
            f"config.train.strategy = {name!r} is not one of 'auto', 'default', "
            "'mirrored', 'multi_worker', 'tpu'."
        )
    if tpu_address:
        return _tpu_strategy(tpu_address)
    if any(os.environ.get(v) for v in TPU_ENV_VARS):
        # A TPU VM announces itself by its accelerator type, without a TPU name.
        local = os.environ.get("TPU_ACCELERATOR_TYPE") and not os.environ.get("TPU_NAME")
        try:
            return _tpu_strategy("local" if local else "")
        except TrainingError as e:
            logging.warning("strategy=auto: no TPU after all (%s); trying the others.", e)
    if _cluster_size(_tf_config()) > 1:
        logging.info("strategy=auto: TF_CONFIG names a cluster; MultiWorkerMirrored.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        logging.info("strategy=auto: several GPUs; MirroredStrategy.")
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def task_role(task_type: str | None, task_id: int, cluster: dict) -> tuple[bool, int, int]:
    """(is chief, worker index, number of workers) of one task of a ``TF_CONFIG`` cluster.

    The chief is the ``chief`` task, or worker 0 when the cluster has no ``chief``; the
    chief has index 0 and, with a ``chief`` task, worker ``i`` has index ``i + 1``.
    ``task_type`` None (no cluster) is a single chief worker.

    Args:
        task_type: ``"chief"``, ``"worker"`` (or ``"evaluator"``: not a training worker).
        task_id: the task's index within its job.
        cluster: ``{job: [addresses]}``.
    """
    workers = len(cluster.get("chief", ())) + len(cluster.get("worker", ()))
    if task_type is None or task_type == "chief":
        return True, 0, max(workers, 1)
    has_chief = "chief" in cluster
    chief = task_type == "worker" and task_id == 0 and not has_chief
    return chief, task_id + (1 if has_chief else 0), max(workers, 1)


def _role(strategy: tf.distribute.Strategy) -> tuple[bool, int, int]:
    """:func:`task_role` of this process; single-client strategies are one chief."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True, 0, 1
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type is None:
        return True, 0, 1
    cluster = {job: list(tasks) for job, tasks in resolver.cluster_spec().as_dict().items()}
    return task_role(resolver.task_type, int(resolver.task_id or 0), cluster)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process is the chief: the ``chief`` task, or worker 0 without one.

    The chief writes checkpoints, logs and the model directory; other workers don't.
    Single-client strategies (default, mirrored, TPU) are always chief.
    """
    return _role(strategy)[0]


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process' index among the training workers; the chief is 0."""
    return _role(strategy)[1]


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many processes train together (1 for single-client strategies)."""
    return _role(strategy)[2]


def _is_tpu(strategy: tf.distribute.Strategy | None) -> bool:
    return isinstance(strategy, tf.distribute.TPUStrategy)


def resolve_precision(train_config, strategy: tf.distribute.Strategy | None = None) -> str:
    """The Keras dtype policy name for ``train_config.precision``.

    ``auto`` gives ``mixed_bfloat16`` on TPU, ``mixed_float16`` on GPU, and on CPU
    ``mixed_bfloat16`` where ``cpu_has_bf16()`` (measured 1.5x faster, see
    ``CPU_BF16_FLAGS``), else ``float32``. Other values are returned unchanged.

    Args:
        train_config: ``config.train``; reads ``precision``.
        strategy: the run's strategy (to recognise a TPU); None = look at local devices.
    """
    precision = train_config.precision
    if precision != "auto":
        return precision
    if _is_tpu(strategy):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def resolve_jit_compile(train_config, strategy: tf.distribute.Strategy) -> bool:
    """Whether ``Model.compile`` gets ``jit_compile=True`` for ``train_config.jit_compile``.

    ``on`` / ``off`` are obeyed. ``auto`` is on under the default strategy (one CPU or
    GPU) and on TPU, and off where XLA fails or is not verified (checked with TF 2.21):

    - MultiWorkerMirrored on CPU fails: "Collectives are not yet implemented for CPU
      devices when compiling with XLA".
    - Mirrored over CPU devices fails: "Trying to access resource .../kernel located in
      device /cpu:1 from device /cpu:0".
    - Mirrored / MultiWorkerMirrored on GPUs is not verified here; Keras' own ``auto``
      turns XLA off under ``tf.distribute``, and so does this.
    - Default strategy on CPU, float32: XLA is faster for gpt_mini, 468 against 497 ms
      a train step (``benchmarks/train_throughput.py``, interleaved on a quiet 2-core
      machine).
    - Default strategy on CPU, ``mixed_bfloat16``: off. XLA's CPU backend runs bf16
      matmuls slower than float32; TensorFlow's own oneDNN kernels run them at twice
      float32's speed (316 ms a step without XLA, 546 with).

    Raises:
        ConfigError: ``jit_compile`` is not ``auto``, ``on`` or ``off``.
    """
    value = train_config.jit_compile
    if value in ("on", "off"):
        return value == "on"
    if value != "auto":
        raise ConfigError(
            f"config.train.jit_compile = {value!r} is not one of 'auto', 'on', 'off'."
        )
    if _is_tpu(strategy):
        return True
    replicated = isinstance(
        strategy,
        (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy),
    )
    if replicated:
        return False
    on_cpu = not tf.config.list_physical_devices("GPU")
    return not (on_cpu and resolve_precision(train_config, strategy) == "mixed_bfloat16")
