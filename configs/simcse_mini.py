"""simcse_mini: unsupervised SimCSE sentence embeddings from a pre-trained encoder.

Each document of the built-in corpus (its first ``seq_len`` tokens) is encoded twice
with different dropout masks; InfoNCE (temperature 0.05) over the batch's other
sentences pulls the two views together and the others apart. Architecture and
tokenizer come from the model directory in ``init_from`` (e.g. a bert_mini run), the
sentence vector is the mean of its token states (``pooling="mean"``; SimCSE's paper uses
[CLS], but on a tiny masked-LM encoder [CLS] pooling lost Spearman under SimCSE, 0.49 ->
0.22, where mean pooling gained) and the projection MLP is used only while training:
    tflm finetune --config=configs/simcse_mini.py --config.init_from=runs/bert_mini/model \
        --workdir=runs/simcse
Supervised SimCSE (NLI triples): ``--config.data.train=nli_for_simcse.csv`` (columns
``sent0, sent1, hard_neg``); ``--config.data.similarity_validation=sts-dev.tsv`` reports
the Spearman correlation of cosine and gold scores (columns ``sentence1, sentence2,
score``) at every validation. Then ``tflm embed --model=runs/simcse/model``.
"""

from tflm.config import base_config


def get_config():
    config = base_config("simcse")
    config.model.backbone.dropout = 0.1
    config.model.backbone.pooling = "mean"
    config.model.temperature = 0.05
    config.model.projection = True
    config.data.corpus = "builtin"
    config.data.seq_len = 32
    config.train.batch_size = 64
    config.train.steps = 300
    config.train.learning_rate = 1e-4
    config.train.warmup_steps = 30
    config.train.lr_decay = "linear"
    config.train.min_lr_ratio = 0.0
    config.train.weight_decay = 0.0
    config.train.beta_2 = 0.999
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    return config
