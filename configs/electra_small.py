"""electra_small: the ELECTRA-small shape (12 layers, d 256, 4 heads, FFN 1024, seq 128).

Replaced-token detection (Clark et al. 2020): a generator of 1/4 the discriminator's
width (d 64, 1 head, FFN 256, 12 layers) samples the 15% masked tokens, the
discriminator spots them, loss = MLM + 50 x discriminator loss. The paper's recipe on
WikiText-103: WordPiece 30522, batch 128, AdamW 5e-4 with 10k warm-up steps and linear
decay, 1M steps. Unlike the paper, embeddings are hidden-wide (no 128-wide factorized
embedding).
"""

from tflm.config import base_config


def get_config():
    config = base_config("electra")
    config.model.backbone.vocabulary_size = 30522
    config.model.backbone.num_layers = 12
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
    config.model.generator_fraction = 0.25
    config.model.discriminator_weight = 50.0
    config.data.corpus = "wikitext-103-raw"
    config.data.download = True
    config.data.tokenizer = "wordpiece"
    config.data.lowercase = True
    config.data.seq_len = 128
    config.data.mask_rate = 0.15
    config.data.max_predictions = 20
    config.train.batch_size = 128
    config.train.steps = 1_000_000
    config.train.learning_rate = 5e-4
    config.train.warmup_steps = 10_000
    config.train.lr_decay = "linear"
    config.train.min_lr_ratio = 0.0
    config.train.weight_decay = 0.01
    config.train.beta_2 = 0.999
    config.train.epsilon = 1e-6
    return config
