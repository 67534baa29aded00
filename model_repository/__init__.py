"""Code that runs inside Triton: tokenization and the onnxruntime encoder (thin model.py files call it)."""
