"""tf.data pipelines per objective, each a deterministic function of (seed, step).

One module per objective; this module is the single import point. An objective's
*pipeline adapter* (``causal_lm_pipeline``; contract in ``tflm.models.tasks``) wraps its
functions in the one signature the trainer and ``tflm evaluate`` call.
"""

from tflm.data.causal import (
    causal_lm_dataset,
    causal_lm_eval_dataset,
    causal_lm_pipeline,
    num_blocks,
)
from tflm.data.classification import (
    build_labels,
    classification_dataset,
    classification_eval_dataset,
    load_labels,
    save_labels,
)
from tflm.data.contrastive import supervised_contrastive_dataset, unsupervised_contrastive_dataset
from tflm.data.masked_lm import (
    masked_lm_dataset,
    masked_lm_eval_dataset,
    masked_lm_pipeline,
    masking_spec,
)
from tflm.data.masking import MaskingSpec, mask_tokens
from tflm.data.pairs import sentence_pair_dataset, sentence_pair_eval_dataset
from tflm.data.step_stream import distributed_dataset

__all__ = [
    "MaskingSpec",
    "build_labels",
    "causal_lm_dataset",
    "causal_lm_eval_dataset",
    "causal_lm_pipeline",
    "classification_dataset",
    "classification_eval_dataset",
    "distributed_dataset",
    "load_labels",
    "mask_tokens",
    "masked_lm_dataset",
    "masked_lm_eval_dataset",
    "masked_lm_pipeline",
    "masking_spec",
    "num_blocks",
    "save_labels",
    "sentence_pair_dataset",
    "sentence_pair_eval_dataset",
    "supervised_contrastive_dataset",
    "unsupervised_contrastive_dataset",
]
