"""Export a model directory as a TF Serving SavedModel or a LiteRT (TFLite) model."""

from tflm.export.api import export_model
from tflm.export.saved_model import export_saved_model
from tflm.export.tflite import export_tflite

__all__ = ["export_model", "export_saved_model", "export_tflite"]
