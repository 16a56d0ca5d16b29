"""export: the inference function, SavedModel and ONNX files, INT8, and the gates that must pass before publishing."""
