"""edgestack: train PyTorch models, export them to ONNX, serve them on ONNX Runtime."""

__version__ = "0.1.0"
