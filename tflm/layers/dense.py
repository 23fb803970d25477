"""Dense whose bias gradient in training is a matrix product, not an XLA reduction."""

import keras
from keras import ops

# Rows (all axes but the last) from which the bias gradient is worth a matrix product.
# Measured on an AMD EPYC (AVX2, float32, XLA, TF 2.21), the bias gradient alone with
# its producer fused as in a training step (ms, XLA's sum vs ones @ dy): rows 4096 x 1024
# units 17.9 vs 4.7, 4096 x 768 6.9 vs 4.2; but 2048 x 1024 5.9 vs 7.0, 2048 x 256 1.3
# vs 1.3, 640 x 8192 24.6 vs 20.4. A/B in one process: bert_mini's step (4096 rows) 7%
# faster with the product everywhere, gpt_mini's (2048 rows) 15% slower: XLA's CPU dot
# for a (1, rows) row vector runs far below its matmul rate at some shapes.
MIN_ROWS = 4096


def bias_add(x, bias, training=None):
    """`x + bias` over the last axis; in training, with at least `MIN_ROWS` rows (known
    when traced), its bias gradient is `ones @ dy` (`bias_add_for_training`)."""
    rows = 1
    for size in x.shape[:-1]:
        rows = None if size is None or rows is None else rows * size
    if training and rows is not None and rows >= MIN_ROWS:
        return bias_add_for_training(x, _read(bias))
    return ops.add(x, bias)


def _read(value):
    """A variable's value as a tensor (TF's custom_gradient asks for the `variables` a
    function reads; a tensor argument is differentiated like any input)."""
    return ops.copy(value) if isinstance(value, keras.Variable) else value


@ops.custom_gradient
def bias_add_for_training(x, bias):
    """`x + bias` (bias (units,) over x's last axis) whose bias gradient, the upstream
    gradient summed over every row, is computed as the product `ones (1, rows) @ dy
    (rows, units)` in float32.

    XLA's CPU backend turns that column sum into a reduce-window over all leading axes
    with the gradient's producer fused in: 17-27 ms for bert_mini's (32, 128, 1024) MLP
    gradient (its exact GELU's backward fused into the sum), where the same sum as a
    matrix product takes ~4 ms; see `MIN_ROWS` for where it pays. The values are the same
    sum in another order.
    """
    y = ops.add(x, bias)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        units = ops.shape(upstream)[-1]
        rows = ops.reshape(ops.cast(upstream, "float32"), (-1, units))  # (rows, units)
        ones = ops.ones((1, ops.shape(rows)[0]), "float32")
        bias_grad = ops.reshape(ops.matmul(ones, rows), ops.shape(bias))
        return upstream, ops.cast(bias_grad, bias.dtype)

    return y, grad


@keras.saving.register_keras_serializable(package="tflm")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` (the same weights, config and values) whose bias gradient in
    training is the matrix product of `bias_add_for_training` from `MIN_ROWS` rows on.

    LoRA goes through the same path (`kernel` merges it); a quantized layer runs Keras'
    own call.
    """

    def call(self, inputs, training=None):
        if (not training or self.bias is None
                or getattr(self, "quantization_mode", None) is not None):
            return super().call(inputs, training=training)
        x = bias_add(ops.matmul(inputs, self.kernel), self.bias, training)
        if self.activation is not None:
            x = self.activation(x)
        return x
