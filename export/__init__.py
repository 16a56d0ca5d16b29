"""Model export (SavedModel, ONNX), parity verification and the ONNX-only predictor."""
