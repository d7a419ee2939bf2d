"""Offline bundle verification: manifest, canonical JSON, hashes, signatures, trust policy. Never imports numpy, cv2 or onnxruntime."""
