"""Errors raised by tflm. Each message names the file, key or value and says what to do."""


class TflmError(Exception):
    """Base class of every error tflm raises on purpose."""


class ConfigError(TflmError, ValueError):
    """A config key or value is invalid."""


class DataError(TflmError, ValueError):
    """A corpus or data file is missing, empty or malformed."""


class TokenizerError(TflmError, ValueError):
    """A tokenizer cannot be trained or loaded, or does not fit the model."""


class ModelDirError(TflmError, IOError):
    """A model directory is missing files or holds something else."""


class TrainingError(TflmError, RuntimeError):
    """Training cannot start, resume or continue (e.g. NaN loss)."""


class ExportError(TflmError, ValueError):
    """A model cannot be exported or the exported model does not match."""


class GenerationError(TflmError, ValueError):
    """Generation arguments are invalid (sampler, lengths, prompts)."""
