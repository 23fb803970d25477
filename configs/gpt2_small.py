"""gpt2_small: the GPT-2 124M shape (12 layers, d 768, 12 heads, FFN 3072, seq 1024).

The usual WikiText recipe: block size 1024, warm-up 500, AdamW 6e-4 with cosine decay.
"""

from tflm.config import base_config


def get_config():
    config = base_config()
    config.model.backbone.vocabulary_size = 50257
    config.model.backbone.num_layers = 12
    config.model.backbone.hidden_dim = 768
    config.model.backbone.num_heads = 12
    config.model.backbone.intermediate_dim = 3072
    config.model.backbone.max_sequence_length = 1024
    config.model.backbone.dropout = 0.1
    config.data.corpus = "wikitext-103-raw"
    config.data.download = True
    config.data.tokenizer = "bpe"
    config.data.seq_len = 1024
    config.train.batch_size = 64
    config.train.steps = 100_000
    config.train.learning_rate = 6e-4
    config.train.warmup_steps = 500
    config.train.eval_every = 2000
    config.train.checkpoint_every = 1000
    config.train.sample_every = 5000
    return config
