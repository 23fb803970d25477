"""bert_mini: a 4-layer post-LN BERT (d 256, 4 heads, FFN 1024, seq 128) for masked LM.

BERT pre-training on the built-in corpus: WordPiece, 15% masking with 80/10/10, next
sentence prediction on `[CLS] A [SEP] B [SEP]` pairs (``pair_task``: "sop" for ALBERT's
sentence order, "none" for masked LM alone). 1000 steps of batch 32 x 128 take about
18 minutes on 2 CPU cores (1.1 s a step in float32 + XLA, measured on an AMD EPYC
without bf16 instructions; benchmarks/train_throughput.py --case masked_lm):
    tflm train --config=configs/bert_mini.py --workdir=runs/bert_mini
"""

from tflm.config import base_config


def get_config():
    config = base_config("masked_lm")
    config.model.backbone.vocabulary_size = 8192
    config.model.backbone.num_layers = 4
    config.model.backbone.hidden_dim = 256
    config.model.backbone.num_heads = 4
    config.model.backbone.intermediate_dim = 1024
    config.model.backbone.max_sequence_length = 128
    config.model.backbone.dropout = 0.1
    config.model.backbone.causal = False
    config.model.backbone.norm_first = False
    config.model.backbone.activation = "gelu"
    config.model.backbone.layer_norm_epsilon = 1e-12
    config.model.backbone.num_segments = 2
    config.model.pair_task = "nsp"
    config.data.corpus = "builtin"
    config.data.tokenizer = "wordpiece"
    config.data.lowercase = True
    config.data.seq_len = 128
    config.data.mask_rate = 0.15
    config.data.max_predictions = 20
    config.train.batch_size = 32
    config.train.learning_rate = 1e-3
    config.train.weight_decay = 0.01
    config.train.beta_2 = 0.999
    return config
