"""Fine-tuning from a model directory: init_from, labelled files, the three heads, bad input."""

import json
import os
import random

import numpy as np
import pytest

import tflm
from tflm.config import base_config, validate
from tflm.data.builtin import builtin_documents
from tflm.errors import ConfigError, DataError, ModelDirError
from tflm.model_dir import build_model, load_backbone, save_model_dir
from tflm.text import train_tokenizer
from tflm.training.finetune import finetune
from tflm.training.prepare import resolve_config

POSITIVE = "good great fine lovely nice".split()
NEGATIVE = "bad awful poor dreadful nasty".split()


def _encoder_dir(root, kind="wordpiece", causal=False):
    """A saved, untrained 2-layer encoder (or GPT) directory with a real tokenizer."""
    docs = [d for d in builtin_documents(None) if len(d) > 200][:150]
    tokenizer = train_tokenizer(kind, docs, 300, lowercase=kind == "wordpiece")
    config = base_config("causal_lm" if causal else "masked_lm")
    config.data.tokenizer, config.data.seq_len = kind, 48
    config.model.backbone.update(
        vocabulary_size=tokenizer.vocabulary_size, num_layers=2, hidden_dim=32, num_heads=2,
        intermediate_dim=64, max_sequence_length=48, causal=causal, norm_first=causal,
        num_segments=0 if causal else 2)
    config = validate(config)
    path = os.path.join(root, "gpt" if causal else "bert")
    save_model_dir(path, build_model(config), tokenizer, config)
    return path


def _sentiment(path, count, seed, header="sentence\tlabel\n", pair=False):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write(header)
        for _ in range(count):
            label = rng.choice(["pos", "neg"])
            words = POSITIVE if label == "pos" else NEGATIVE
            text = f"it was {rng.choice(words)} and {rng.choice(words)}"
            f.write(f"{text}\tthe end\t{label}\n" if pair else f"{text}\t{label}\n")
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("finetune")


@pytest.fixture(scope="module")
def bert_dir(root):
    return _encoder_dir(str(root))


@pytest.fixture(scope="module")
def files(root):
    return (_sentiment(os.path.join(root, "train.tsv"), 64, 0),
            _sentiment(os.path.join(root, "dev.tsv"), 32, 1))


def _config(init_from, train, dev, objective="classification", **train_overrides):
    config = base_config(objective)
    config.init_from = init_from
    config.data.update(train=train, validation=dev, seq_len=24)
    if objective == "classification":
        config.data.text_column = "sentence"
    config.train.update(batch_size=8, steps=30, warmup_steps=3, learning_rate=2e-3,
                        eval_every=15, checkpoint_every=15, eval_steps=4, log_every=5)
    config.train.update(train_overrides)
    return config


def test_classifier_starts_from_the_directory_and_learns(bert_dir, files, root):
    # Frozen for every step: the backbone must still be the directory's, bit for bit.
    frozen = finetune(_config(bert_dir, *files, freeze_backbone_steps=30),
                      os.path.join(root, "frozen"))
    model = tflm.load(frozen["model_dir"])
    for got, want in zip(model.model.backbone.get_weights(),
                         load_backbone(bert_dir).get_weights()):
        np.testing.assert_array_equal(got, want)
    assert json.load(open(os.path.join(frozen["model_dir"], "labels.json"))) == ["neg", "pos"]
    assert list(model.model.labels) == ["neg", "pos"]

    summary = finetune(_config(bert_dir, *files, keep_best="macro_f1"),
                       os.path.join(root, "free"))
    assert summary["validation_accuracy"] > 0.9
    for key in ("validation_macro_f1", "validation_mcc", "best_step",
                "best_validation_macro_f1"):
        assert key in summary
    classifier = tflm.load(summary["model_dir"])
    results = classifier.classify(["it was lovely and nice", "it was nasty and dreadful"])
    assert [r["label"] for r in results] == ["pos", "neg"]
    assert abs(sum(results[0]["probabilities"].values()) - 1) < 1e-5
    vectors = classifier.embed(["it was lovely", "it was nasty"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    trained = classifier.model.backbone.get_weights()
    assert any(not np.array_equal(a, b)
               for a, b in zip(trained, load_backbone(bert_dir).get_weights()))
    # The run's config records the directory's architecture and tokenizer.
    config = json.load(open(os.path.join(summary["model_dir"], "config.json")))
    assert config["model"]["backbone"]["num_layers"] == 2
    assert config["data"]["tokenizer_dir"] == os.path.join(bert_dir, "tokenizer")


def test_incompatible_init_from_fails_before_training(bert_dir, files, root):
    config = _config(bert_dir, *files)
    config.model.backbone.num_layers = 3
    with pytest.raises(ConfigError, match="num_layers = 3.*init_from.*num_layers=2"):
        resolve_config(validate(config))
    config = _config(bert_dir, *files)
    config.data.tokenizer_dir = os.path.join(root, "another_tokenizer")
    with pytest.raises(ConfigError, match="own tokenizer"):
        resolve_config(validate(config))
    gpt = _encoder_dir(str(root), "bpe", causal=True)
    config = base_config("masked_lm")
    config.init_from = gpt
    config.data.tokenizer = "wordpiece"
    config.model.backbone.causal = False
    with pytest.raises(ConfigError, match="causal"):
        resolve_config(validate(config))
    with pytest.raises(ModelDirError, match="does not exist"):
        resolve_config(validate(_config(os.path.join(root, "nowhere"), *files)))
    with pytest.raises(ConfigError, match="init_from"):
        finetune(_config("", *files), os.path.join(root, "no_init"))
    assert not os.path.exists(os.path.join(root, "no_init"))


def test_bad_files_name_file_line_and_column(bert_dir, files, root):
    train, dev = files
    unknown = os.path.join(root, "unknown.tsv")
    with open(unknown, "w") as f:
        f.write("sentence\tlabel\nit was good\tpos\nit was odd\tmeh\n")
    with pytest.raises(DataError, match=r"unknown.tsv:3: label 'meh' \(column 'label'\)"):
        finetune(_config(bert_dir, train, unknown), os.path.join(root, "bad1"))
    ragged = os.path.join(root, "ragged.tsv")
    with open(ragged, "w") as f:
        f.write("sentence\tlabel\nit was good\tpos\nit\twas\tbad\tneg\n")
    with pytest.raises(DataError, match=r"ragged.tsv:3: 4 fields, but the header names 2"):
        resolve_config(validate(_config(bert_dir, ragged, dev)))
    with pytest.raises(DataError, match=r"no value for column 'text'"):
        resolve_config(validate(_config(bert_dir, train, dev, "regression")))
    empty = os.path.join(root, "empty.tsv")
    open(empty, "w").close()
    with pytest.raises(DataError, match="empty.tsv: empty file"):
        resolve_config(validate(_config(bert_dir, empty, dev)))
    with open(os.path.join(root, "latin1.tsv"), "wb") as f:
        f.write(b"sentence\tlabel\ncaf\xe9\tpos\n")
    with pytest.raises(DataError, match=r"latin1.tsv:\d+: not UTF-8"):
        resolve_config(validate(_config(bert_dir, os.path.join(root, "latin1.tsv"), dev)))


def test_too_long_texts_are_cut_with_a_count_or_refused(bert_dir, root, caplog):
    from tflm.data.classification import classification_pipeline
    from tflm.text import load_tokenizer

    long_file = os.path.join(root, "long.tsv")
    with open(long_file, "w") as f:
        f.write("sentence\tlabel\nit was good\tpos\n" + "it was bad " * 20 + "\tneg\n")
    config = resolve_config(validate(_config(bert_dir, long_file, long_file)))
    tokenizer = load_tokenizer(config.data.tokenizer_dir)
    batch = next(iter(classification_pipeline({}, tokenizer, config, 2, split="validation",
                                              training=False, seed=0)))
    assert batch[0]["padding_mask"].numpy()[1].sum() == 24  # cut to seq_len
    assert "1 of 2 examples are longer than 22 tokens" in caplog.text
    config = _config(bert_dir, long_file, long_file)
    config.data.too_long = "error"
    config = resolve_config(validate(config))
    with pytest.raises(DataError, match=r"long.tsv:3: \d+ tokens, more than the 22"):
        classification_pipeline({}, tokenizer, config, 2, split="train", training=True,
                                seed=0)


def test_headerless_pairs_and_regression(bert_dir, root):
    rng = random.Random(3)
    rows = []
    for _ in range(48):
        score = rng.choice([0, 1, 2, 3, 4, 5])
        same = rng.sample(POSITIVE, 1)[0]
        other = same if score >= 3 else rng.choice(NEGATIVE)
        rows.append(f"x,{score}.0,it was {same},it was {other}\n")
    path = os.path.join(root, "sts.csv")
    open(path, "w").write("".join(rows))
    config = _config(path, path, path, "regression")
    config.init_from = bert_dir
    config.data.update(header=False, text_column="2", text_pair_column="3", label_column="1")
    summary = finetune(config, os.path.join(root, "sts"))
    assert {"validation_pearson", "validation_spearman", "validation_mse"} <= set(summary)
    regressor = tflm.load(summary["model_dir"])
    predictions = regressor.predict([("it was good", "it was good"), ("it was good", "it was bad")])
    assert predictions.shape == (2,) and predictions.dtype == np.float32
    with pytest.raises(tflm.errors.GenerationError, match="pairs"):
        regressor.predict(["it was good"])


def test_token_classification_from_conll(bert_dir, root):
    rng = random.Random(5)
    path = os.path.join(root, "tags.conll")
    with open(path, "w") as f:
        f.write("-DOCSTART- O\n\n")
        for _ in range(60):
            for word in rng.sample(POSITIVE + NEGATIVE + ["it", "was", "and"], 5):
                tag = "POS" if word in POSITIVE else "NEG" if word in NEGATIVE else "O"
                f.write(f"{word} {tag}\n")
            f.write("\n")
    config = _config(bert_dir, path, path, "token_classification", steps=60, eval_every=30,
                     checkpoint_every=30)
    summary = finetune(config, os.path.join(root, "tagger"))
    assert summary["validation_token_f1"] > 0.8
    tagger = tflm.load(summary["model_dir"])
    tags = tagger.tag(["it was lovely and dreadful"])[0]
    assert [t["word"] for t in tags] == ["it", "was", "lovely", "and", "dreadful"]
    assert [t["label"] for t in tags] == ["O", "O", "POS", "O", "NEG"]
    bad = os.path.join(root, "bad.conll")
    open(bad, "w").write("it O\nwas\n")
    with pytest.raises(DataError, match=r"bad.conll:2: 'was' has no tag"):
        resolve_config(validate(_config(bert_dir, bad, bad, "token_classification")))


def test_continued_pretraining_of_a_gpt_reuses_its_tokenizer(root):
    gpt = _encoder_dir(os.path.join(root, "cpt"), "bpe", causal=True)
    text = os.path.join(root, "my_text.txt")
    rng = random.Random(7)
    with open(text, "w") as f:
        f.write("\n\n".join(" ".join(f"the {rng.choice(POSITIVE)} cat sat on the mat ."
                                     for _ in range(6)) for _ in range(200)))
    config = base_config("causal_lm")
    config.init_from = gpt
    cache = os.path.join(root, "cpt_cache")
    config.data.update(corpus=text, seq_len=32, cache_dir=cache)
    config.train.update(batch_size=8, steps=40, warmup_steps=4, learning_rate=3e-3,
                        eval_every=40, checkpoint_every=40, eval_steps=4, sample_every=1000)
    summary = finetune(config, os.path.join(root, "cpt_run"))
    assert summary["validation_perplexity"] < 0.5 * summary["initial_validation_perplexity"]
    assert not os.path.exists(os.path.join(cache, "tokenizers"))  # none trained
    lm = tflm.load(summary["model_dir"])
    assert lm.tokenizer.fingerprint == tflm.text.load_tokenizer(
        os.path.join(gpt, "tokenizer")).fingerprint


@pytest.mark.slow  # the library path is covered above; this is the CLI wrapper's happy path
def test_finetune_command_line(bert_dir, files, root):
    from tests.test_cli import run_cli

    workdir = os.path.join(root, "cli")
    result = run_cli("finetune", "--config=configs/classify_mini.py",
                     f"--config.init_from={bert_dir}", f"--config.data.train={files[0]}",
                     f"--config.data.validation={files[1]}", "--config.data.text_column=sentence",
                     "--config.data.seq_len=24", "--config.train.steps=20",
                     "--config.train.eval_every=10", "--config.train.checkpoint_every=10",
                     "--config.train.batch_size=8", "--config.train.learning_rate=2e-3",
                     f"--workdir={workdir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "macro_f1" in result.stdout and "accuracy" in result.stdout
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["keep_best"] == "accuracy" and summary["best_step"] in (10, 20)
    assert tflm.load(os.path.join(workdir, "model")).labels == ["neg", "pos"]


def test_evaluate_reports_the_fine_tuning_scores(bert_dir, files, root):
    from tflm.training import evaluate

    run = finetune(_config(bert_dir, *files, steps=15, eval_every=15, checkpoint_every=15),
                   os.path.join(root, "evaluated"))
    first = evaluate(run["model_dir"])
    assert first["corpus"] == files[1]
    assert first["accuracy"] == pytest.approx(run["validation_accuracy"])
    assert first["macro_f1"] == pytest.approx(run["validation_macro_f1"])
    on_train = evaluate(run["model_dir"], corpus=files[0])
    assert on_train["corpus"] == files[0] and {"mcc", "macro_f1"} <= set(on_train)
