"""Code that runs inside Triton: tokenization and the CPU encoder (thin model.py files call it)."""
