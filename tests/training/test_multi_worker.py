"""MultiWorkerMirrored ``Model.fit`` with tflm's workarounds, on 2 local processes.

One cluster run (``mw_worker.py``, both tasks on 127.0.0.1) serves every test here: the
patched fit, and the sentinels that run Keras unpatched and expect the known upstream
failures. When a sentinel fails, upstream has fixed (or changed) the bug: delete the
matching workaround in ``tflm/training/multi_worker.py``.
"""

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.testing import loopback_workers
from tflm.training.multi_worker import apply_workarounds, backup_dir_for_worker

WORKER = os.path.join(os.path.dirname(__file__), "mw_worker.py")
TIMEOUT_S = 300  # the machine is shared; a healthy run takes ~20 s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Runs both workers to the end; returns (out_dir, [worker0 json, worker1 json])."""
    out = tmp_path_factory.mktemp("multi_worker")
    with loopback_workers(lambda index: [sys.executable, WORKER, str(out)], out, TIMEOUT_S):
        pass  # the workers write worker<i>.json
    return out, [json.loads((out / f"worker{index}.json").read_text()) for index in range(2)]


def test_roles(cluster):
    _, (w0, w1) = cluster
    assert w0["multi_worker"] and w1["multi_worker"]  # strategy "auto" read TF_CONFIG
    assert (w0["is_chief"], w0["worker_index"], w0["num_workers"]) == (True, 0, 2)
    assert (w1["is_chief"], w1["worker_index"], w1["num_workers"]) == (False, 1, 2)
    assert w0["jit_compile"] is False  # XLA has no CPU collectives


def test_patched_fit_keeps_workers_identical(cluster):
    out, (w0, w1) = cluster
    assert w0["patched"]["ok"], w0["patched"]
    assert w1["patched"]["ok"], w1["patched"]
    loss = w0["patched"]["history"]["loss"]
    assert len(loss) == 2 and all(np.isfinite(loss))
    assert loss == w1["patched"]["history"]["loss"]  # logs are reduced over workers
    a, b = np.load(out / "worker0.npz"), np.load(out / "worker1.npz")
    assert len(a.files) == len(b.files) > 0
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


def test_only_the_chief_writes_the_backup_dir(cluster):
    out, (w0, w1) = cluster
    backup = os.path.normpath(out / "backup")
    assert w0["backup_dir"] == backup
    assert w1["backup_dir"] == backup + ".worker1"
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"]
    assert os.path.exists(os.path.join(w1["backup_dir"], "latest.weights.h5"))


def test_sentinel_first_batch_reduced_across_workers(cluster):
    """Upstream bug 1 still there? If this fails, drop MultiWorkerFit._maybe_symbolic_build."""
    _, results = cluster
    for w in results:
        assert not w["unpatched"]["ok"], "Keras fixed #20585: remove workaround 1"
        assert "Attempt to convert a value (PerReplica" in w["unpatched"]["error"]


def test_sentinel_scalar_logs_reduced_along_axis_0(cluster):
    """Upstream bug 2 still there? If this fails, drop MultiWorkerFit.train/test_step."""
    _, results = cluster
    for w in results:
        assert not w["build_fix_only"]["ok"], "Keras fixed scalar reduction: remove fix 2"
        assert ("Invalid reduction dimension 0 for input with 0 dimensions"
                in w["build_fix_only"]["error"])


def test_single_process_strategies_are_untouched(tmp_path):
    strategy = tf.distribute.get_strategy()
    model = keras.Sequential([keras.layers.Dense(1)])
    assert type(apply_workarounds(model, strategy)) is keras.Sequential
    assert backup_dir_for_worker(str(tmp_path), strategy) == str(tmp_path)
