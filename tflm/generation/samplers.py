"""Samplers: pure functions from next-token logits to next-token ids (keras.ops only).

Every sampler has the signature ``sampler(logits, key, step) -> ids``:

- ``logits`` (batch, vocab) float: scores of the next token.
- ``key`` int32 scalar tensor: the generation seed.
- ``step`` int32 scalar tensor: the decode step (0 for the first new token).
- returns (batch,) int32 ids.

Randomness is stateless: the noise of a step is a hash of ``(key, step, row, token)``,
turned into Gumbel noise, and ``argmax(logits / temperature + gumbel)`` is an exact draw
from ``softmax(logits / temperature)`` (the Gumbel-max trick). So the same seed gives the
same tokens on every call, inside or outside a compiled loop, on TensorFlow and JAX alike,
and no random state is hidden in a layer or a ``SeedGenerator``.

``make_sampler(name, temperature=..., top_k=..., top_p=...)`` binds the options and returns
such a function; ``get_sampler(name)`` returns the raw function of that name.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from tflm.errors import GenerationError

# A large negative logit for tokens a sampler must never pick (finite, so no NaN).
_MASKED = -1e9
DEFAULT_TOP_P = 0.9


def _shift_right(x, bits: int):
    """Logical right shift of int32 bit patterns (ops.right_shift is arithmetic on int32)."""
    return ops.bitwise_and(ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def _hash32(x):
    """A 32-bit integer mixing function ("lowbias32"), on int32 bit patterns."""
    x = ops.bitwise_xor(x, _shift_right(x, 16))
    x = ops.multiply(x, 0x7FEB352D)
    x = ops.bitwise_xor(x, _shift_right(x, 15))
    x = ops.multiply(x, 0x846CA68B - (1 << 32))  # the uint32 constant as int32 bits
    return ops.bitwise_xor(x, _shift_right(x, 16))


def uniform_noise(shape: tuple[int, int], key, step):
    """Uniform floats in (0, 1) of `shape` (batch, vocab), a pure function of (key, step)."""
    batch, vocab = shape
    key = ops.cast(key, "int32")
    step = ops.cast(step, "int32")
    stream = _hash32(ops.add(_hash32(key), _hash32(ops.add(step, 0x2545F491))))
    counter = ops.reshape(ops.arange(batch * vocab, dtype="int32"), (batch, vocab))
    bits = _hash32(ops.bitwise_xor(counter, stream))
    mantissa = ops.cast(_shift_right(bits, 8), "float32")  # 24 random bits
    return (mantissa + 0.5) / float(1 << 24)


def _gumbel_argmax(logits, key, step):
    """One draw per row from softmax(logits), by the Gumbel-max trick."""
    logits = ops.cast(logits, "float32")
    noise = uniform_noise(tuple(logits.shape), key, step)
    gumbel = -ops.log(-ops.log(noise))
    return ops.cast(ops.argmax(logits + gumbel, axis=-1), "int32")


def greedy(logits, key=None, step=None):
    """The most likely token of each row: (batch, vocab) -> (batch,) int32."""
    del key, step  # deterministic
    return ops.cast(ops.argmax(logits, axis=-1), "int32")


def temperature_sample(logits, key, step, temperature: float = 1.0):
    """A draw from softmax(logits / temperature); temperature -> 0 approaches greedy."""
    return _gumbel_argmax(ops.cast(logits, "float32") / temperature, key, step)


def top_k_sample(logits, key, step, top_k: int = 50, temperature: float = 1.0):
    """A draw among the `top_k` most likely tokens of each row (ties at the k-th included)."""
    logits = ops.cast(logits, "float32")
    k = min(int(top_k), logits.shape[-1])
    kth = ops.top_k(logits, k)[0][:, -1:]  # (batch, 1)
    logits = ops.where(logits < kth, _MASKED, logits)
    return temperature_sample(logits, key, step, temperature)


def top_p_sample(logits, key, step, top_p: float = 0.9, temperature: float = 1.0):
    """A draw from the nucleus: the fewest most-likely tokens whose probability sum >= top_p.

    The nucleus is computed on softmax(logits / temperature); the most likely token is
    always in it.
    """
    logits = ops.cast(logits, "float32") / temperature
    sorted_logits = ops.flip(ops.sort(logits, axis=-1), axis=-1)  # (batch, vocab) descending
    probs = ops.softmax(sorted_logits, axis=-1)
    mass_before = ops.cumsum(probs, axis=-1) - probs  # probability of the better tokens
    in_nucleus = mass_before < top_p
    # The smallest logit still in the nucleus; every logit below it is masked.
    threshold = ops.min(ops.where(in_nucleus, sorted_logits, -_MASKED), axis=-1, keepdims=True)
    logits = ops.where(logits < threshold, _MASKED, logits)
    return _gumbel_argmax(logits, key, step)


SAMPLERS: dict[str, Callable] = {
    "greedy": greedy,
    "temperature": temperature_sample,
    "top_k": top_k_sample,
    "top_p": top_p_sample,
}


def get_sampler(name: str) -> Callable:
    """The sampler function called `name`; raises GenerationError naming the valid ones."""
    if name not in SAMPLERS:
        raise GenerationError(
            f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)} "
            "(or pass num_beams for beam search)"
        )
    return SAMPLERS[name]


def make_sampler(
    name: str,
    temperature=1.0,
    top_k: int | None = None,
    top_p=None,
) -> Callable:
    """`get_sampler(name)` with its options bound: returns ``fn(logits, key, step) -> ids``.

    `temperature` and `top_p` may be Python floats (checked here) or scalar tensors (so a
    compiled loop takes them as inputs); `top_k` is a Python int (it fixes a shape).
    Raises GenerationError for an unknown name or an option out of range.
    """
    fn = get_sampler(name)
    if name == "greedy":
        return fn
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise GenerationError(
            f"temperature must be > 0, got {temperature}; use sampler='greedy' for "
            "deterministic output"
        )
    options = {"temperature": temperature}
    if name == "top_k":
        if top_k is None or int(top_k) < 1:
            raise GenerationError(f"sampler 'top_k' needs top_k >= 1, got top_k={top_k}")
        options["top_k"] = int(top_k)
    if name == "top_p":
        top_p = DEFAULT_TOP_P if top_p is None else top_p
        if isinstance(top_p, (int, float)) and not 0 < top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got top_p={top_p}")
        options["top_p"] = top_p

    def sampler(logits, key, step):
        return fn(logits, key, step, **options)

    return sampler


def seed_tensor(seed: int):
    """The int32 key tensor of an int seed (any Python int; folded to 32 bits)."""
    seed = int(seed) & 0xFFFFFFFF
    return keras.ops.convert_to_tensor(seed - (1 << 32) if seed >= 1 << 31 else seed, "int32")
