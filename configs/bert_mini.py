"""bert_mini: a 4-layer post-LN BERT (d 256, 4 heads, FFN 1024, seq 128) for masked LM.

A bidirectional backbone with a WordPiece tokenizer, for masked-LM pre-training (15%
masking, 80/10/10). That objective is not registered yet, so this config keeps the
default objective ``causal_lm``, and loading it fails with a ConfigError saying why
(``causal_lm`` needs a causal backbone: every label would be visible) instead of
training a leaky model. The masked-LM issue sets ``base_config("masked_lm")`` here.
"""

from tflm.config import base_config


def get_config():
    config = base_config()
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
