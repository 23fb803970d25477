"""End to end: pre-training transfers. A masked LM pre-trained on text where two word
classes (animals, tools) appear in different contexts, then fine-tuned to classify
sentences by the class of their noun on half of the nouns, labels the *other* half right;
the same model trained from scratch for the same steps cannot (it never saw those words
in a labelled example, and nothing else taught it what they are)."""

import json
import os
import random

from tflm.config import base_config
from tflm.training import train
from tflm.training.finetune import finetune

CLASSES = {
    "animal": ("cat dog horse cow sheep goat pig duck mouse rabbit".split(),
               "eats sleeps runs barks jumps".split(), "grass hay barn field meadow".split()),
    "tool": ("hammer saw drill wrench chisel axe knife file plane clamp".split(),
             "cuts drills breaks bends shapes".split(), "wood metal steel plank pipe".split()),
}
TEMPLATES = ("i saw the {} today", "there is a {} here", "look at that {}", "we found the {}")
FINETUNE_STEPS = 60
PRETRAIN_STEPS = 1600


def _corpus(path):
    rng = random.Random(0)
    docs = []
    for _ in range(1500):
        nouns, verbs, objects = CLASSES[rng.choice(list(CLASSES))]
        docs.append(" ".join(f"the {rng.choice(nouns)} {rng.choice(verbs)} the "
                             f"{rng.choice(objects)} ." for _ in range(3)))
    with open(path, "w") as f:
        f.write("\n\n".join(docs))


def _labelled(path, half):
    with open(path, "w") as f:
        f.write("sentence\tlabel\n")
        for label, (nouns, _, _) in CLASSES.items():
            for noun in nouns[:5] if half == 0 else nouns[5:]:
                f.writelines(t.format(noun) + f"\t{label}\n" for t in TEMPLATES)


def _finetune_config(root, **changes):
    config = base_config("classification")
    config.data.update(train=os.path.join(root, "train.tsv"),
                       validation=os.path.join(root, "dev.tsv"), text_column="sentence",
                       seq_len=16)
    config.train.update(batch_size=8, steps=FINETUNE_STEPS, warmup_steps=5, learning_rate=1e-3,
                        eval_every=FINETUNE_STEPS, checkpoint_every=FINETUNE_STEPS,
                        eval_steps=10, weight_decay=0.01)
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (config[section] if section else config)[name] = value
    return config


def test_fine_tuning_from_a_pretrained_encoder_beats_training_from_scratch(tmp_path):
    root = str(tmp_path)
    _corpus(os.path.join(root, "corpus.txt"))
    _labelled(os.path.join(root, "train.tsv"), 0)
    _labelled(os.path.join(root, "dev.tsv"), 1)  # nouns no labelled example has
    pre = base_config("masked_lm")
    pre.model.backbone.update(vocabulary_size=96, num_layers=2, hidden_dim=32, num_heads=2,
                              intermediate_dim=64, max_sequence_length=32, causal=False,
                              activation="gelu", num_segments=2)
    pre.model.pair_task = "none"
    pre.data.update(corpus=os.path.join(root, "corpus.txt"), tokenizer="wordpiece",
                    lowercase=True, seq_len=32, max_predictions=5,
                    cache_dir=os.path.join(root, "cache"))
    # 1600 steps: at 800 the masked-LM accuracy was 0.20-0.21 and the transfer depended
    # on the data order and initialisation (0.55-0.975 over orders and seeds).
    pre.train.update(batch_size=16, steps=PRETRAIN_STEPS, learning_rate=5e-3, warmup_steps=30,
                     eval_every=PRETRAIN_STEPS, checkpoint_every=PRETRAIN_STEPS, eval_steps=4,
                     log_every=100)
    model_dir = train(pre, os.path.join(root, "pre"))["model_dir"]

    transferred = finetune(_finetune_config(root, init_from=model_dir),
                           os.path.join(root, "transfer"))
    with open(os.path.join(model_dir, "config.json")) as f:
        backbone = json.load(f)["model"]["backbone"]
    scratch = _finetune_config(root, **{"data.tokenizer_dir": os.path.join(model_dir, "tokenizer"),
                                        "data.tokenizer": "wordpiece"})
    scratch.model.backbone.update(backbone)
    from_scratch = train(scratch, os.path.join(root, "scratch"))
    # Measured at pre-training seeds 0 and 1: 0.975 / 0.95 vs 0.425 (chance is 0.5).
    assert transferred["validation_accuracy"] >= 0.85
    assert from_scratch["validation_accuracy"] <= 0.7
