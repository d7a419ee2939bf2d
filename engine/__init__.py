"""Face pipeline: model registry, ONNX Runtime sessions, detect, align, swap, mask, blend, enhance; image and video I/O."""
