"""Ship a trained model: ONNX export (pooling + normalization in the graph), int8, checks, card."""
