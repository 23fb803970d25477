"""Export a model directory as a TF Serving SavedModel or a LiteRT (TFLite) model
(causal LM: ``saved_model``, ``tflite``; masked LM: ``encoder``, ``encoder_tflite``)."""

from tflm.export.api import export_model
from tflm.export.encoder import export_encoder_saved_model
from tflm.export.encoder_tflite import export_encoder_tflite
from tflm.export.saved_model import export_saved_model
from tflm.export.tflite import export_tflite

__all__ = ["export_encoder_saved_model", "export_encoder_tflite", "export_model",
           "export_saved_model", "export_tflite"]
