"""tflm: pre-train, fine-tune and deploy Transformer language models with Keras 3.

The public API: ``tflm.load``, ``tflm.layers``, ``tflm.models``, ``tflm.text``,
``tflm.data``, ``tflm.training``, ``tflm.generation``, ``tflm.export``, ``tflm.config``,
``tflm.errors``. Sub-packages are imported on first use, so ``tflm --help`` does not pay for
importing TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("config", "data", "errors", "export", "generation", "layers", "models",
                "text", "training")


def load(path: str):
    """Loads a model directory (``config.json``, weights, ``tokenizer/``).

    Returns:
        What the directory's objective is used through: a
        ``tflm.generation.LanguageModel`` (``generate()``, ``score()``) for ``causal_lm``;
        a ``tflm.model_dir.LoadedModel`` (model, tokenizer, config) for an objective
        without an interface of its own.

    Raises:
        tflm.errors.ModelDirError: the directory is missing files.
        tflm.errors.TokenizerError: the tokenizer does not fit the model.
    """
    from tflm.model_dir import load as load_model

    return load_model(path)


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"tflm.{name}")
    raise AttributeError(f"module 'tflm' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_SUBPACKAGES))
