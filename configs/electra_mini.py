"""electra_mini: bert_mini's shape (4 layers, d 256, 4 heads, FFN 1024, seq 128) as ELECTRA.

Replaced-token detection on the built-in corpus: WordPiece, 15% of the tokens masked for
a generator of 1/4 the width (d 64, 1 head, FFN 256, 4 layers) that shares the token and
position tables; the discriminator is the backbone kept in the model directory. Its
1000 steps of batch 32 x 128 take about 20 minutes on 2 CPU cores: 1.14x bert_mini's
masked-LM step (the generator runs before the discriminator in every step; measured with
benchmarks/train_throughput.py --case electra on an AMD EPYC, float32 + XLA).
    tflm train --config=configs/electra_mini.py --workdir=runs/electra_mini
"""

from tflm.config import base_config


def get_config():
    config = base_config("electra")
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
    config.model.generator_fraction = 0.25
    config.model.discriminator_weight = 50.0
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
