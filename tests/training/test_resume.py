"""Exact resume: a run killed with SIGKILL and started again ends like an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from keras import ops

from tests.training.train_worker import shared_cache_dir, tiny_config
from tflm.config import read_config, save_config
from tflm.model_dir import load_model_dir
from tflm.training import train

WORKER = os.path.join(os.path.dirname(__file__), "train_worker.py")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# 30 steps, backups and checkpoints every 5; no text samples (their compile is slow).
OVERRIDES = {"train__sample_every": 0}
KILL_AFTER = 10
FLAT_RUN = os.path.join(ROOT, "tests", "fixtures", "flat_run_dir")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return shared_cache_dir(tmp_path_factory)


def _command(workdir, cache_dir):
    pairs = [f"{k.replace('__', '.')}={v}" for k, v in OVERRIDES.items()]
    return [sys.executable, WORKER, workdir, cache_dir, *pairs]


def _weights(workdir):
    model, _, _ = load_model_dir(os.path.join(workdir, "model"))
    return [ops.convert_to_numpy(w) for w in model.weights]


def test_killed_run_resumes_at_its_step_and_ends_with_the_same_weights(tmp_path, cache_dir):
    # Build tokenizer and caches here, so the subprocess spends its time training.
    reference = str(tmp_path / "reference")
    summary = train(tiny_config(cache_dir, **OVERRIDES), reference)
    assert summary["final_step"] == 30

    workdir = str(tmp_path / "killed")
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen(_command(workdir, cache_dir), env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = os.path.join(workdir, "checkpoints", f"ckpt-{KILL_AFTER:08d}.weights.h5")
    for _ in range(4800):  # wait up to ~4 minutes for the checkpoint (a loaded machine)
        if os.path.exists(checkpoint) or process.poll() is not None:
            break
        time.sleep(0.05)
    else:
        process.kill()
        pytest.fail(f"no checkpoint {checkpoint} appeared within the wait")
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    # As if killed while Keras wrote the metadata (after the weights): still resumes.
    with open(os.path.join(workdir, "checkpoints", "backup", "training_metadata.json"),
              "w") as f:
        f.write('{"epo')

    subprocess.run(_command(workdir, cache_dir), env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(workdir, "summary.json")) as f:
        resumed = json.load(f)
    assert resumed["resumed_from_step"] >= KILL_AFTER  # not from 0
    assert resumed["resumed_from_step"] % 5 == 0
    assert resumed["final_step"] == 30
    # The resumed run's step-0 evaluation was kept from the first process.
    assert resumed["initial_validation_perplexity"] == summary["initial_validation_perplexity"]
    for got, want in zip(_weights(workdir), _weights(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed["validation_loss"], summary["validation_loss"],
                               rtol=1e-5)


def test_a_run_of_the_flat_config_layout_resumes_with_this_code(tmp_path, cache_dir):
    """A run killed under the code before config.model.backbone existed (fixture) is
    resumed by this code from its step-5 backup (weights and optimizer state) and ends
    with the weights that run reached uninterrupted under the old code."""
    import shutil

    workdir = str(tmp_path / "flat_run")
    shutil.copytree(FLAT_RUN, workdir, ignore=shutil.ignore_patterns("reference_*"))
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        values = json.load(f)
    assert "backbone" not in values["model"]  # the flat layout
    values["data"]["cache_dir"] = cache_dir  # where this test session keeps its caches
    with open(path, "w") as f:
        json.dump(values, f)
    config = read_config(path)  # converted on read
    save_config(config, path)
    summary = train(config, workdir)
    assert summary["resumed_from_step"] == 5 and summary["final_step"] == 30
    reference = np.load(os.path.join(FLAT_RUN, "reference_weights.npz"))
    for got, want in zip(_weights(workdir), [reference[k] for k in reference.files]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with open(os.path.join(FLAT_RUN, "reference_summary.json")) as f:
        expected = json.load(f)
    np.testing.assert_allclose(summary["validation_loss"], expected["validation_loss"],
                               rtol=1e-5)
