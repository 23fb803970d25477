"""The real ``tflm.training.train`` under MultiWorkerMirroredStrategy, 2 processes.

Both workers (``train_worker.py`` with ``TF_CONFIG``, on 127.0.0.1) run the same command
with the same ``workdir``, as every machine of a real cluster does. Worker 0 is the chief;
each worker's ``TMPDIR`` is its own, so the test can see what the non-chief leaves there.
A single-process run of the same config (same global batch) is the reference.
"""

import glob
import json
import os
import re
import sys

import h5py
import numpy as np
import pytest
from keras import ops

from tests.testing import loopback_workers
from tests.training.train_worker import shared_cache_dir, tiny_config
from tflm.model_dir import load_model_dir
from tflm.training import prepare, train

WORKER = os.path.join(os.path.dirname(__file__), "train_worker.py")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TIMEOUT_S = 180  # the machine is shared; a healthy run takes ~30 s
STEPS = 10
# 2 layers, hidden 32, vocab 384, batch 4 (global) x 16 tokens; backups, checkpoints and
# validation every 5 steps; no text samples (their compile is slow).
OVERRIDES = {"data__seq_len": 16, "train__steps": STEPS, "train__eval_every": 5,
             "train__checkpoint_every": 5, "train__sample_every": 0}


def _weights(model_dir):
    model, _, _ = load_model_dir(model_dir)
    return [ops.convert_to_numpy(w) for w in model.weights]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trains on the cluster and in this process; returns paths, summaries and pids."""
    root = tmp_path_factory.mktemp("multi_worker_train")
    config = tiny_config(shared_cache_dir(tmp_path_factory), **OVERRIDES)
    prepare(config)  # tokenizer and token caches once, before the workers read them
    workdir = str(root / "run")
    pairs = [f"{k.replace('__', '.')}={v}" for k, v in OVERRIDES.items()]
    tmpdirs = [root / f"tmp{index}" for index in range(2)]
    for tmpdir in tmpdirs:
        tmpdir.mkdir()
    with loopback_workers(
        lambda index: [sys.executable, WORKER, workdir, config.data.cache_dir, *pairs],
        root, TIMEOUT_S, env=lambda index: {"TMPDIR": str(tmpdirs[index]), "PYTHONPATH": ROOT},
        cwd=ROOT,
    ) as procs:
        single = train(config, str(root / "single"))  # the reference, meanwhile
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    return {"workdir": workdir, "worker1_tmp": os.listdir(tmpdirs[1]), "summary": summary,
            "single": single, "single_dir": str(root / "single"),
            "pids": [proc.pid for proc in procs]}


def test_trains_on_two_replicas(runs):
    summary = runs["summary"]
    assert summary["replicas"] == 2
    assert summary["strategy"] == "CollectiveAllReduceStrategy"  # MultiWorkerMirrored
    assert summary["final_step"] == STEPS
    assert np.isfinite(summary["train_loss"])


def _h5_arrays(path):
    """{dataset path: array} of an .h5 file."""
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.update(
            {name: obj[()]} if isinstance(obj, h5py.Dataset) else {}))
    return arrays


def test_both_workers_end_with_identical_weights(runs):
    """Each worker's last backup (weights and optimizer state, written at the final
    step) is the same, array for array."""
    backups = os.path.join(runs["workdir"], "checkpoints")
    chief = _h5_arrays(os.path.join(backups, "backup", "latest.weights.h5"))
    other = _h5_arrays(os.path.join(backups, "backup.worker1", "latest.weights.h5"))
    assert chief.keys() == other.keys() and len(chief) > 0
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    assert STEPS in [int(v) for v in chief.values() if np.ndim(v) == 0]  # the step counter


def test_only_the_chief_writes_the_run_dir(runs):
    workdir = runs["workdir"]
    assert sorted(os.listdir(workdir)) == [
        "checkpoints", "config.json", "initial_evaluation.json", "logs", "model",
        "summary.json"]
    # The non-chief's one entry by design: its own backup, which it resumes from after a
    # restart (tflm.training.multi_worker.backup_dir_for_worker).
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "backup", "backup.worker1", "ckpt-00000005.weights.h5", "ckpt-00000010.weights.h5"]
    for backup in ("backup", "backup.worker1"):
        files = os.listdir(os.path.join(workdir, "checkpoints", backup))
        assert "latest.weights.h5" in files, backup
    # TensorBoard names its files events.out.tfevents.<time>.<host>.<pid>.<n>.v2.
    events = glob.glob(os.path.join(workdir, "logs", "**", "events.*"), recursive=True)
    pids = {int(re.search(r"\.(\d+)\.\d+\.v2$", path).group(1)) for path in events}
    assert pids == {runs["pids"][0]}
    # The non-chief's logs, checkpoints and model went to a temporary directory, deleted
    # when it finished.
    assert runs["worker1_tmp"] == []


def test_matches_a_single_process_run_of_the_same_global_batch(runs):
    summary, single = runs["summary"], runs["single"]
    assert (single["replicas"], single["final_step"]) == (1, STEPS)
    for key in ("initial_validation_loss", "train_loss", "validation_loss"):
        np.testing.assert_allclose(summary[key], single[key], rtol=1e-4, err_msg=key)
    # Summation order differs (2 half batches, then the all-reduce); Adam's m / sqrt(v)
    # blows that up where gradients are ~0, so weights agree to a fraction of one step
    # (the learning rate, 3e-3), not to float precision.
    got = _weights(os.path.join(runs["workdir"], "model"))
    want = _weights(os.path.join(runs["single_dir"], "model"))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-3)
