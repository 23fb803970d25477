"""The simcse objective's hooks: the similarity file, the Spearman callback, the pooling."""

import numpy as np
import pytest

from tflm.config import base_config
from tflm.errors import DataError
from tflm.models.tasks import get_objective
from tflm.training.simcse import SimilarityScores, configure_pooling, read_similarity_pairs


def test_read_similarity_pairs(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text("sentence1\tsentence2\tscore\na cat\ta dog\t3.5\nrain\tsun\t0\n")
    first, second, gold = read_similarity_pairs(str(path), ("sentence1", "sentence2",
                                                            "score"))
    assert (first, second) == (["a cat", "rain"], ["a dog", "sun"])
    assert gold.tolist() == [3.5, 0.0] and gold.dtype == np.float32
    path.write_text("sentence1\tsentence2\tscore\na\tb\t1\nc\td\thigh\n")
    with pytest.raises(DataError, match=r"sts.tsv:3: column 'score' holds 'high'"):
        read_similarity_pairs(str(path), ("sentence1", "sentence2", "score"))
    path.write_text("sentence1\tsentence2\tscore\na\tb\t1\n")
    with pytest.raises(DataError, match="at least 2"):
        read_similarity_pairs(str(path), ("sentence1", "sentence2", "score"))
    with pytest.raises(DataError, match="similarity_columns"):
        read_similarity_pairs(str(path), ("sentence1", "sentence2"))


class _Encoder:
    """Cosine = a fixed number per text pair."""

    def similarity(self, first, second):
        return np.array([len(a) - len(b) for a, b in zip(first, second)], np.float32)


class _Model:
    optimizer = type("Optimizer", (), {"iterations": 7})()


def test_scores_join_only_validated_epochs(tmp_path):
    pairs = (["aaa", "aa", "a"], ["", "", ""], np.array([3.0, 1.0, 2.0], np.float32))
    callback = SimilarityScores(_Encoder(), pairs, log_dir=str(tmp_path))
    callback.set_model(_Model())
    callback.on_train_begin()
    assert callback.summary_fields() == {"initial_validation_spearman": pytest.approx(0.5),
                                         "initial_validation_pearson": pytest.approx(0.5)}
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    assert logs == {"loss": 1.0}  # no validation in this epoch
    logs = {"loss": 1.0, "val_loss": 2.0}
    callback.on_epoch_end(1, logs)
    assert logs["val_spearman"] == pytest.approx(0.5)
    callback.on_train_end()
    assert (tmp_path / "validation").is_dir()
    resumed = SimilarityScores(_Encoder(), pairs, initial=False)
    resumed.on_train_begin()
    assert resumed.summary_fields() == {}


def test_pooling_is_fixed_before_the_run():
    config = base_config("simcse")
    assert config.model.backbone.pooling == "auto"
    assert configure_pooling(config) == {"model.backbone.pooling": "mean"}
    config.model.backbone.pooling = "first"
    assert configure_pooling(config) == {"model.backbone.pooling": "first"}
    objective = get_objective("simcse")
    assert objective.resolve("configure") is configure_pooling
    assert {"temperature", "projection"} <= set(config.model)
    assert config.data.columns == ("sent0", "sent1", "hard_neg")
