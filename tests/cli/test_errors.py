"""The exit-code policy of every command (``cli.errors``): a Hub failure is one line that names the
local override, found at once and never retried; exit code 2."""

from __future__ import annotations

import socket

import pytest
from conftest import SAMPLE_PHOTOS, run_module
from omegaconf import OmegaConf

from img_search import console
from img_search.cli.errors import user_errors_exit
from img_search.failures import PeerLost


@pytest.mark.parametrize(
    ("error", "code"),
    [(ValueError("k must be positive"), 2), (FileNotFoundError("x.parquet"), 2), (PeerLost(), 3)],
)
def test_a_user_error_exits_2_and_a_lost_peer_3(monkeypatch, error, code) -> None:
    monkeypatch.setattr(console, "setup_logging", lambda *args, **kwargs: None)
    with pytest.raises(SystemExit) as exited, user_errors_exit(OmegaConf.create({})):
        raise error
    assert exited.value.code == code


def test_a_bug_and_any_error_under_logging_debug_keep_their_traceback(monkeypatch) -> None:
    monkeypatch.setattr(console, "setup_logging", lambda *args, **kwargs: None)
    with pytest.raises(RuntimeError), user_errors_exit(OmegaConf.create({})):
        raise RuntimeError("a bug of ours")
    debug = OmegaConf.create({"logging": {"level": "DEBUG"}})
    with pytest.raises(ValueError), user_errors_exit(debug):
        raise ValueError("k must be positive")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_hub_model_is_one_line_without_retries(tmp_path):
    result = run_module(
        "img_search.pipeline.embed",
        "models=clip",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        f"output_path={tmp_path}/x.parquet",
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert len(lines) == 1, lines
    assert "the Hugging Face Hub is off (HF_HUB_OFFLINE=1)" in lines[0]
    assert lines[0].endswith("use a local copy: models.clip.model_name=<local folder>")
    assert not (tmp_path / "x.parquet").exists()


def test_no_network_is_found_at_once_and_named(tmp_path):
    """Without ``HF_HUB_OFFLINE``: one connection attempt, then offline; no retries of any kind."""
    result = run_module(
        "img_search.pipeline.embed",
        "datasets=inquire",
        f"output_path={tmp_path}/x.parquet",
        env={
            "HF_HUB_OFFLINE": "",
            "HF_DATASETS_OFFLINE": "",
            "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        },
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert len(lines) == 2, lines
    assert "the Hugging Face Hub cannot be reached (127.0.0.1:" in lines[0]
    assert "Connection refused" in lines[0]
    assert lines[1].endswith(
        "use a local copy: datasets.inquire.path=<local copy in the Hub layout>"
    )
    assert "etry" not in result.stderr
