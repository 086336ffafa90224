"""Parquet embedding tables: writing (parts, then one finished file) and reading back."""

from img_search.store.reader import EmbeddingMatrix, read_embeddings, read_metadata
from img_search.store.writer import EmbeddingTableWriter, vectors_to_arrow

__all__ = [
    "EmbeddingMatrix",
    "EmbeddingTableWriter",
    "read_embeddings",
    "read_metadata",
    "vectors_to_arrow",
]
