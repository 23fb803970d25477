"""Dense whose bias gradient in training is a matrix product, not an XLA reduction."""

import keras
from keras import ops


def bias_add(x, bias, training=None):
    """`x + bias` over the last axis; in training its bias gradient is `ones @ dy`
    (`bias_add_for_training`)."""
    if training:
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
    (windows of 32 x 32 rows, strided reads, not vectorized): 17-27 ms for bert_mini's
    (32, 128, 1024) MLP gradient, a tenth of its training step over the model's biases,
    where the same sum as a matrix product takes 3.7 ms (measured on an AMD EPYC, AVX2,
    float32, XLA; `benchmarks/train_throughput.py` shows the step's share). The values
    are the same sum in another order.
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
    training is the matrix product of `bias_add_for_training`.

    LoRA goes through the same path (`kernel` merges it); a quantized layer runs Keras'
    own call.
    """

    def call(self, inputs, training=None):
        if (not training or self.bias is None
                or getattr(self, "quantization_mode", None) is not None):
            return super().call(inputs, training=training)
        x = ops.matmul(inputs, self.kernel)
        x = bias_add_for_training(x, _read(self.bias))
        if self.activation is not None:
            x = self.activation(x)
        return x
