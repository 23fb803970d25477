"""tflm: pre-train, fine-tune and deploy Transformer language models with Keras 3 on TF."""

from setuptools import find_packages, setup

setup(
    name="tflm",
    version="0.1.0",
    description=(
        "Pre-training, fine-tuning and deployment of Transformer language models "
        "with Keras 3 and TensorFlow"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tflm", "tflm.*"]),
    install_requires=[
        "tensorflow~=2.21.0",
        "keras>=3.15,<4",
        # keras-hub is the maintained successor of keras-nlp.
        "keras-hub>=0.32,<1",
        "tensorflow-text~=2.21.0",
        "absl-py>=2.1,<3",
        "ml-collections>=1.0,<2",
        "tensorboard~=2.21.0",
        # The LiteRT interpreter; tf.lite.Interpreter is deprecated.
        "ai-edge-litert>=2.0,<3",
        "sentencepiece>=0.2,<1",
        "tokenizers>=0.20,<1",
        "numpy>=1.26,<3",
        "psutil>=5.9",
    ],
    extras_require={
        "dev": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "ruff>=0.6",
            "jax>=0.4.30",
            "tensorflow-serving-api~=2.19",
            # Tests write Hugging Face checkpoints (tflm.convert reads them itself).
            "safetensors>=0.4,<1",
        ],
    },
    entry_points={"console_scripts": ["tflm=tflm.cli:main"]},
)
