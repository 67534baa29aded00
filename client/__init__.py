"""Client side of bge-triton: the thin Triton client (`EmbeddingClient`), its CLI, and the gateway."""

from bge_client.client import AsyncEmbeddingClient, EmbeddingClient, Embeddings, RetryPolicy

__all__ = ["AsyncEmbeddingClient", "EmbeddingClient", "Embeddings", "RetryPolicy"]
