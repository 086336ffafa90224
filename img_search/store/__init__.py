"""Parquet embedding tables: part files, finished tables (one file or a folder), and reading back."""

from img_search.store.layout import TableLayout
from img_search.store.reader import is_table, open_table, read_metadata, read_table
from img_search.store.selection import EmbeddingMatrix, read_embeddings
from img_search.store.writer import PartWriter, vectors_to_arrow

__all__ = [
    "EmbeddingMatrix",
    "PartWriter",
    "TableLayout",
    "is_table",
    "open_table",
    "read_embeddings",
    "read_metadata",
    "read_table",
    "vectors_to_arrow",
]
