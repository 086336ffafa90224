"""HTTP API and web page over embedding tables: ``python -m img_search.serve``."""
