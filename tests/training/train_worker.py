"""The tiny training config of the trainer tests, and a script that trains it.

Usage: ``python tests/training/train_worker.py WORKDIR CACHE_DIR [key=value ...]``
trains :func:`tiny_config` (with ``section.key=value`` overrides) in WORKDIR; the resume
test runs it in a subprocess and kills it.
"""

import sys

from tflm.config import base_config, validate


def shared_cache_dir(tmp_path_factory) -> str:
    """A ``config.data.cache_dir`` shared by all test processes of a pytest session (and
    its xdist workers), so the tokenizer and token caches are built once."""
    return str(tmp_path_factory.getbasetemp().parent / "tflm-cache")


def tiny_config(cache_dir, **overrides):
    """A 2-layer, hidden-32 GPT on the built-in corpus: 30 steps of batch 4 x 32 tokens.

    Args:
        cache_dir: ``config.data.cache_dir`` (share it between tests: tokenizer and token
            caches are built once).
        **overrides: ``section__key=value``, e.g. ``train__steps=10``.
    """
    config = base_config()
    config.model.backbone.update(vocabulary_size=384, num_layers=2, hidden_dim=32, num_heads=2,
                        intermediate_dim=64, max_sequence_length=32)
    config.data.update(seq_len=32, cache_dir=str(cache_dir))
    config.train.update(batch_size=4, steps=30, learning_rate=3e-3, warmup_steps=5,
                        eval_every=10, eval_steps=4, log_every=5, checkpoint_every=5,
                        keep_checkpoints=2, sample_every=10, sample_tokens=8,
                        # float32 whatever the CPU: these runs compare distributed and
                        # resumed training with single runs at float tolerances.
                        precision="float32")
    for name, value in overrides.items():
        section, key = name.split("__")
        config[section][key] = value
    return validate(config)


def _parse(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


if __name__ == "__main__":
    from tflm.training import train

    workdir, cache_dir, *pairs = sys.argv[1:]
    overrides = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        overrides[key.replace(".", "__")] = _parse(value)
    train(tiny_config(cache_dir, **overrides), workdir)
