"""Every cache-reading pipeline yields exactly the batches recorded in
`tests/fixtures/data_batches.npz`: same seed, steps, workers, resume, masks, NSP/SOP
pairs. First written by the in-memory-table pipelines of commit 0c14c80 (before they
read the token cache's files); re-recorded once when the epoch order became a Feistel
permutation computed per batch (every batch the same as before with the old epoch
order substituted; only the order changed). Re-record only for an intended change of
the batches:

    python tests/data/test_recorded_batches.py
"""

import os
import types

import numpy as np
import tensorflow as tf

from tflm.data import pipelines
from tflm.data.contrastive import unsupervised_contrastive_dataset
from tflm.data.electra import electra_batch

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "data_batches.npz")
PAD, CLS, SEP, MASK, EOS = 0, 1, 2, 3, 4
VOCAB = 60


def make_cache():
    """Documents of varied lengths (empty ones too), ids in [5, VOCAB)."""
    rng = np.random.default_rng(7)
    lengths = [40, 0, 9, 130, 3, 0, 57, 21, 88, 1, 14, 66, 0, 35, 102, 7, 49, 26]
    ids = rng.integers(5, VOCAB, size=sum(lengths)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return types.SimpleNamespace(ids=ids, offsets=offsets)


def _masking(whole_word=False):
    word_start = (np.arange(VOCAB) % 3 != 0) if whole_word else None
    return pipelines.MaskingSpec(MASK, VOCAB, (PAD, CLS, SEP, EOS), mask_rate=0.2,
                                 max_predictions=6, word_start=word_start)


def _context(pipeline_id, num_pipelines):
    return tf.distribute.InputContext(num_pipelines, pipeline_id, num_pipelines)


def datasets(cache):
    """name -> (dataset, batches to take) of every pipeline that reads a token cache."""
    out = {}
    for start in (0, 5):
        out[f"causal_s{start}"] = (pipelines.causal_lm_dataset(
            cache, 16, 8, seed=3, start_step=start, eos_id=EOS), 4)
        out[f"causal_pad_s{start}"] = (pipelines.causal_lm_dataset(
            cache, 24, 6, seed=1, start_step=start, eos_id=EOS, pad_id=PAD,
            remainder="pad"), 4)
    for p in (0, 1):
        out[f"causal_w{p}"] = (pipelines.causal_lm_dataset(
            cache, 16, 8, seed=3, start_step=2, eos_id=EOS, input_context=_context(p, 2)), 3)
        out[f"mlm_w{p}"] = (pipelines.masked_lm_dataset(
            cache, 20, 8, 2, _masking(), CLS, SEP, PAD, start_step=3,
            input_context=_context(p, 2)), 3)
        out[f"nsp_w{p}"] = (pipelines.sentence_pair_dataset(
            cache, 19, 8, 4, "nsp", CLS, SEP, PAD, masking=_masking(), start_step=1,
            input_context=_context(p, 2)), 3)
    out["causal_eval"] = (pipelines.causal_lm_eval_dataset(cache, 16, 8, EOS), 100)
    out["causal_eval_pad"] = (pipelines.causal_lm_eval_dataset(
        cache, 24, 8, EOS, pad_id=PAD, remainder="pad"), 100)
    for start in (0, 4):
        out[f"mlm_s{start}"] = (pipelines.masked_lm_dataset(
            cache, 20, 8, 2, _masking(), CLS, SEP, PAD, start_step=start), 4)
        out[f"mlm_wwm_pad_s{start}"] = (pipelines.masked_lm_dataset(
            cache, 22, 8, 5, _masking(True), CLS, SEP, PAD, start_step=start,
            remainder="pad"), 4)
        for task in ("nsp", "sop"):
            out[f"{task}_s{start}"] = (pipelines.sentence_pair_dataset(
                cache, 19, 8, 4, task, CLS, SEP, PAD, masking=_masking(), start_step=start), 4)
            out[f"{task}_plain_seg7_s{start}"] = (pipelines.sentence_pair_dataset(
                cache, 21, 8, 9, task, CLS, SEP, PAD, segment_len=7, start_step=start), 4)
        out[f"simcse_s{start}"] = (unsupervised_contrastive_dataset(
            cache, 12, 8, 6, cls_id=CLS, sep_id=SEP, pad_id=PAD, start_step=start), 4)
    out["mlm_eval_pad"] = (pipelines.masked_lm_eval_dataset(
        cache, 20, 8, _masking(), CLS, SEP, PAD, seed=1, remainder="pad"), 100)
    for task in ("nsp", "sop"):
        out[f"{task}_eval"] = (pipelines.sentence_pair_eval_dataset(
            cache, 19, 8, task, CLS, SEP, PAD, masking=_masking(), seed=2), 100)
    out["electra"] = (pipelines.masked_lm_dataset(
        cache, 20, 8, 2, _masking(), CLS, SEP, PAD).map(
            lambda x, y, w: electra_batch(x, y, w, mask_id=MASK, seed=2)), 3)
    return out


def flatten(name, dataset, count):
    """`{"name/batch/path": array}` of the first `count` batches of `dataset`."""
    out = {}
    for b, batch in enumerate(dataset.take(count)):
        out.update(_leaves(f"{name}/{b}", batch))
    return out


def _leaves(prefix, value):
    """`{"prefix/key/...": array}` of a nest of tuples / dicts of tensors."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (tuple, list)):
        items = enumerate(value)
    else:
        return {prefix: value.numpy()}
    out = {}
    for key, item in items:
        out.update(_leaves(f"{prefix}/{key}", item))
    return out


def record(cache=None):
    arrays = {}
    for name, (dataset, count) in datasets(cache or make_cache()).items():
        arrays.update(flatten(name, dataset, count))
    return arrays


def test_batches_equal_the_recorded_ones():
    expected = dict(np.load(FIXTURE))
    got = record()
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
        assert got[key].dtype == value.dtype, key


if __name__ == "__main__":
    np.savez_compressed(FIXTURE, **record())
