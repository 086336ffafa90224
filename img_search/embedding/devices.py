"""Which device a model runs on when the user leaves it to us (``device=auto``)."""

from __future__ import annotations


def pick_device(device: str) -> str:
    """``auto`` → CUDA when there is one, else CPU; anything else as given."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
