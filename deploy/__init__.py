"""Serving without Docker (the pip-installed tritonserver) and deployment assets."""
