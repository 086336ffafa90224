"""The Python API's modules: encoding (``load_encoder``), jobs (``embed``), tables (``open_table``).

Users import the names from ``img_search``, which lists them (``__all__``) and loads each
module on first use; this package re-exports nothing, so there is one list.
"""
