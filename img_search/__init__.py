"""img_search: embed image collections and caption corpora into Parquet tables, then search them."""

__version__ = "0.1.0"
