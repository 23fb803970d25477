"""tflm: pre-train, fine-tune and deploy Transformer language models with Keras 3."""
