"""classify_mini: fine-tune a pre-trained encoder (e.g. a bert_mini run) on a labelled file.

Sequence classification of single texts or text pairs from TSV / CSV / JSONL files; the
architecture and tokenizer come from the model directory in ``init_from``, the labels
from the training file (saved as ``config.model.labels`` and ``labels.json``):
    tflm finetune --config=configs/classify_mini.py --config.init_from=runs/bert_mini/model \
        --config.data.train=train.tsv --config.data.validation=dev.tsv --workdir=runs/sst
GLUE layouts: SST-2 ``--config.data.text_column=sentence``; a pair task such as MRPC or
RTE adds ``--config.data.text_pair_column=sentence2``; a headerless file (CoLA) names
columns by index: ``--config.data.header=False --config.data.text_column=3
--config.data.label_column=1``. For STS-B scores use ``base_config("regression")``.
"""

from tflm.config import base_config


def get_config():
    config = base_config("classification")
    config.model.dropout = 0.1
    config.model.backbone.dropout = 0.1
    config.data.seq_len = 128
    config.train.batch_size = 32
    config.train.steps = 300
    config.train.learning_rate = 1e-4
    config.train.warmup_steps = 30
    config.train.lr_decay = "linear"
    config.train.min_lr_ratio = 0.0
    config.train.weight_decay = 0.01
    config.train.beta_2 = 0.999
    config.train.eval_every = 50
    config.train.eval_steps = 0  # the whole validation file
    config.train.checkpoint_every = 50
    config.train.keep_best = "accuracy"
    return config
