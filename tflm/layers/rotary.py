"""Rotary position embedding (RoPE): rotate query/key features by position-dependent angles."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tflm")
class RotaryEmbedding(keras.layers.Layer):
    """Applies rotary position embedding to per-head query or key features.

    Feature pairs `(x[i], x[i + D/2])` are rotated by the angle
    `position / max_wavelength ** (2i / D)` (the "rotate half" layout). The layer has no
    weights; angles are computed in float32 and the result is cast back to the input dtype.

    Args:
        max_wavelength: the longest wavelength of the rotation frequencies.

    Call args:
        inputs: (batch, seq, heads, head_dim) float tensor; head_dim must be even.
        position_ids: (batch, seq) or (seq,) int tensor, the position of each token.

    Returns:
        A tensor of the same shape and dtype as `inputs`.

    Raises:
        ValueError: if head_dim is odd or the input is not rank 4.
    """

    def __init__(self, max_wavelength: int = 10000, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength

    def call(self, inputs, position_ids):
        if len(inputs.shape) != 4:
            raise ValueError(
                f"RotaryEmbedding expects inputs of shape (batch, seq, heads, head_dim); "
                f"got shape {tuple(inputs.shape)}."
            )
        head_dim = inputs.shape[-1]
        if head_dim % 2:
            raise ValueError(
                f"rotary position embedding needs an even head_dim; got {head_dim}. "
                "Choose hidden_dim / num_heads even."
            )
        half = head_dim // 2
        inverse_freq = 1.0 / ops.power(
            float(self.max_wavelength), ops.arange(0, half, dtype="float32") * (2.0 / head_dim)
        )  # (D/2,)
        positions = ops.cast(position_ids, "float32")
        if len(positions.shape) == 1:
            positions = positions[None, :]  # (1, T)
        angles = positions[..., None] * inverse_freq  # (B, T, D/2)
        cos = ops.cos(angles)[:, :, None, :]  # (B, T, 1, D/2)
        sin = ops.sin(angles)[:, :, None, :]
        x = ops.cast(inputs, "float32")
        x1, x2 = x[..., :half], x[..., half:]  # (B, T, H, D/2) each
        rotated = ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        return ops.cast(rotated, inputs.dtype)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config
