"""gpt_mini: a 4-layer GPT (vocab 8192, d 256, 4 heads, FFN 1024, seq 128) for the demo.

Pre-trains in a few minutes on 2 CPU cores on the built-in corpus:
    tflm train --config=configs/gpt_mini.py --workdir=runs/gpt_mini
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
    config.model.tie_embeddings = True
    config.data.corpus = "builtin"
    config.data.tokenizer = "bpe"
    config.data.seq_len = 128
    config.train.batch_size = 16
    # ~0.7 s a step on 2 CPU cores: the demo trains in about 4 minutes.
    config.train.steps = 300
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 30
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    config.train.sample_every = 100
    return config
