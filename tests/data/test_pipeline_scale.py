"""The pipelines read the token cache per batch: their graph does not grow with the corpus."""

import types

import numpy as np
import pytest

from tflm.data import pipelines
from tflm.data.contrastive import unsupervised_contrastive_dataset

MASKING = pipelines.MaskingSpec(3, 60, (0, 1, 2, 4))


def make_cache(num_documents):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, num_documents)
    ids = rng.integers(5, 60, lengths.sum()).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return types.SimpleNamespace(ids=ids, offsets=offsets)


BUILDERS = {
    "causal": lambda c: pipelines.causal_lm_dataset(c, 16, 8, 0, eos_id=4),
    "causal_eval": lambda c: pipelines.causal_lm_eval_dataset(c, 16, 8, 4),
    "masked_lm": lambda c: pipelines.masked_lm_dataset(c, 20, 8, 0, MASKING, 1, 2),
    "nsp": lambda c: pipelines.sentence_pair_dataset(c, 19, 8, 0, "nsp", 1, 2, masking=MASKING),
    "sop_eval": lambda c: pipelines.sentence_pair_eval_dataset(c, 19, 8, "sop", 1, 2),
    "simcse": lambda c: unsupervised_contrastive_dataset(c, 12, 8, 0, cls_id=1, sep_id=2),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_graph_size_does_not_depend_on_the_corpus_size(name):
    small, large = make_cache(50), make_cache(5000)  # ~5k and ~500k tokens
    sizes = [len(BUILDERS[name](c)._as_serialized_graph().numpy()) for c in (small, large)]
    # Only the varints of a few counts and the numpy_function names may differ; an
    # embedded table of the 100x larger corpus would add ~2 MB.
    assert abs(sizes[1] - sizes[0]) < 100, sizes
