"""Hydra configs, YAML only: ``embed_config.yaml``, ``embed_text_config.yaml``, ``serve.yaml`` and
their groups here, the search tools' configs in ``search/``.

The resolvers these files use (``packaged_model``, ``packaged_file``) and the
structured configs of ``tasks`` and ``engine`` are registered by
``pipeline.config_store.register()`` before anything is composed.
"""
