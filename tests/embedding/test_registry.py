"""The encoder registry and the shipped model YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import img_search
from img_search.embedding import ENCODERS, get_encoder
from img_search.registry import UnknownNameError

CONFIG = Path(img_search.__file__).parent / "config"

PUBLIC_CHECKPOINTS = {
    "clip": "openai/clip-vit-base-patch32",
    "siglip": "google/siglip-base-patch16-224",
    "siglip2": "google/siglip2-base-patch16-224",
    "jina_v4": "jinaai/jina-embeddings-v4",
    "efficientnet_lite0": "efficientnet-lite0",
}


@pytest.mark.parametrize("name", sorted(PUBLIC_CHECKPOINTS))
def test_model_yaml_builds_its_encoder(name):
    spec = OmegaConf.to_container(OmegaConf.load(CONFIG / "models" / f"{name}.yaml"))
    assert list(spec) == [name], "each file is keyed by its own name"
    encoder = get_encoder(spec[name], name=name)
    assert isinstance(encoder, ENCODERS[name])
    assert encoder.model_name == PUBLIC_CHECKPOINTS[name]
    assert encoder.name == name


def test_unknown_encoder_lists_registered_names():
    with pytest.raises(UnknownNameError) as error:
        get_encoder({"model": "vit_huge", "model_name": "x"}, name="mine")
    message = str(error.value)
    assert "vit_huge" in message and "models.mine" in message
    for name in ENCODERS:
        assert name in message


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="colour"):
        get_encoder({"model": "clip", "model_name": "x", "colour": "red"}, name="clip")
