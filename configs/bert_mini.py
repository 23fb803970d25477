"""bert_mini: a 4-layer post-LN BERT (d 256, 4 heads, FFN 1024, seq 128) for masked LM.

The masked-LM objective (15% masking, 80/10/10) trains once its issue lands; the shape is
here so the tokenizer and data pipelines can be prepared for it.
"""

from tflm.config import base_config


def get_config():
    config = base_config()
    config.model.vocabulary_size = 8192
    config.model.num_layers = 4
    config.model.hidden_dim = 256
    config.model.num_heads = 4
    config.model.intermediate_dim = 1024
    config.model.max_sequence_length = 128
    config.model.dropout = 0.1
    config.model.causal = False
    config.model.norm_first = False
    config.model.activation = "gelu"
    config.model.layer_norm_epsilon = 1e-12
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
