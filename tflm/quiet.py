"""TensorFlow's C++ start-up lines (CUDA not found, CPU features) kept off the terminal.

Two of them (``cudart_stub``, written before absl logging starts) ignore
``TF_CPP_MIN_LOG_LEVEL``, so the only way to keep them out is to have file descriptor 2
on /dev/null while TensorFlow is imported. A leaf module (no TensorFlow import), used by
the CLI and by the processes tflm spawns (token-cache workers), which import TensorFlow
again.
"""

from __future__ import annotations

import contextlib
import os
import sys


def quiet() -> bool:
    """Whether this process keeps TensorFlow's C++ lines off (``TF_CPP_MIN_LOG_LEVEL=3``,
    as the CLI sets it unless ``--verbose``)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"


@contextlib.contextmanager
def stderr_to_devnull(enabled: bool = True):
    """File descriptor 2 on /dev/null inside the block (and in processes started there,
    which inherit it); a no-op when not ``enabled``."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
