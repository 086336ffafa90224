"""What Hydra needs before composing: registered by ``config_store.register()``, not by importing the YAML package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO
from omegaconf import OmegaConf

from img_search.api.jobs import compose
from img_search.pipeline.config_store import register


def test_the_config_package_registers_nothing_when_imported() -> None:
    probe = (
        "import img_search.config; from omegaconf import OmegaConf; "
        "from hydra.core.config_store import ConfigStore; "
        "print(OmegaConf.has_resolver('packaged_file'), 'tasks' in ConfigStore.instance().repo)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_register_twice_then_the_packaged_resolvers_and_task_defaults_compose() -> None:
    register()
    register()
    cfg = compose("embed_text_config", ["text_dataset=sample_captions", "output_path=x"])
    path = Path(OmegaConf.select(cfg, "text_dataset.path"))
    assert path.name == "captions.jsonl" and path.is_file()
    assert cfg.tasks.batch_size > 0 and cfg.engine.kind == "local"
