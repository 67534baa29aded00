"""Export a Hugging Face sentence-embedding model to ONNX and a Triton model repository."""
