"""``img-search embed-text`` (``python -m img_search.pipeline.embed_text models=... text_dataset=... output_path=...``).

Same run as ``embed``; only what an item is differs: a caption string,
encoded by the model's text tower (``pipeline.modalities.CAPTIONS``).
"""

from __future__ import annotations

from omegaconf import DictConfig

from img_search.cli.embed import run_cli
from img_search.cli.hydra_entry import hydra_entry
from img_search.pipeline.modalities import CAPTIONS


@hydra_entry(config_path="pkg://img_search.config", config_name=CAPTIONS.config_name)
def main(cfg: DictConfig) -> None:
    run_cli(cfg, CAPTIONS)
