"""bert_base: the BERT-base shape (12 layers, d 768, 12 heads, FFN 3072, seq 512).

BERT's recipe: masked LM + next sentence prediction on WikiText-103, WordPiece 30522,
batch 256, 1M steps, AdamW 1e-4 with 10k warm-up steps and linear decay.
"""

from tflm.config import base_config


def get_config():
    config = base_config("masked_lm")
    config.model.backbone.vocabulary_size = 30522
    config.model.backbone.num_layers = 12
    config.model.backbone.hidden_dim = 768
    config.model.backbone.num_heads = 12
    config.model.backbone.intermediate_dim = 3072
    config.model.backbone.max_sequence_length = 512
    config.model.backbone.dropout = 0.1
    config.model.backbone.causal = False
    config.model.backbone.norm_first = False
    config.model.backbone.activation = "gelu"
    config.model.backbone.layer_norm_epsilon = 1e-12
    config.model.backbone.num_segments = 2
    config.model.pair_task = "nsp"
    config.data.corpus = "wikitext-103-raw"
    config.data.download = True
    config.data.tokenizer = "wordpiece"
    config.data.lowercase = True
    config.data.seq_len = 512
    config.data.max_predictions = 76
    config.train.batch_size = 256
    config.train.steps = 1_000_000
    config.train.learning_rate = 1e-4
    config.train.warmup_steps = 10_000
    config.train.lr_decay = "linear"
    config.train.min_lr_ratio = 0.0
    config.train.weight_decay = 0.01
    config.train.beta_2 = 0.999
    config.train.epsilon = 1e-6
    return config
