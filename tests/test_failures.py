"""Which failures are worth a retry, and which Hub failures are explained with their fix.

The Hub errors are built the way huggingface_hub, transformers and datasets
raise them (wrapped, ``raise ... from``), since the classification reads the
chain.
"""

from __future__ import annotations

import errno
import socket

import httpx2
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from img_search import failures
from img_search.failures import HubUnavailable, hub_failure, hub_unavailable, is_transient


def http_error(cls: type[HfHubHTTPError], status: int) -> HfHubHTTPError:
    request = httpx2.Request("GET", "https://huggingface.co/org/model/resolve/main/config.json")
    return cls(f"{status} error", response=httpx2.Response(status, request=request))


def wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    """``outer`` raised from ``inner``, as transformers wraps Hub errors in an OSError."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(failures, "_unreachable", None)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(failures, "_unreachable", None)


@pytest.mark.parametrize(
    "error",
    [
        OfflineModeIsEnabled("offline mode is enabled"),
        wrapped(LocalEntryNotFoundError("not cached"), OSError("We couldn't connect")),
        wrapped(http_error(RepositoryNotFoundError, 404), OSError("not a valid model identifier")),
        http_error(GatedRepoError, 401),
        http_error(HfHubHTTPError, 403),
        FileNotFoundError("/data/inquire"),
        ValueError("bad option"),
        RuntimeError("a bug"),  # unknown: not retried
    ],
)
def test_permanent_failures_are_not_retried(error, online):
    assert not is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("reset by peer"),
        TimeoutError("read timed out"),
        http_error(HfHubHTTPError, 503),
        http_error(HfHubHTTPError, 429),
        OSError(errno.ESTALE, "Stale file handle"),
        httpx2.ConnectError("connection failed"),
    ],
)
def test_transient_failures_are_retried(error, online):
    assert is_transient(error)


def test_in_offline_mode_the_hub_connection_errors_of_datasets_are_permanent(offline):
    """datasets raises them with the cause attached, or ``from None`` with only its message."""
    reach = "Couldn't reach 'org/data' on the Hub (LocalEntryNotFoundError)"
    assert not is_transient(wrapped(LocalEntryNotFoundError("x"), ConnectionError(reach)))
    cut = ConnectionError("Couldn't reach the Hugging Face Hub for dataset 'org/data': offline")
    assert not is_transient(cut)
    assert "HF_HUB_OFFLINE=1" in hub_failure(cut)
    assert is_transient(ConnectionResetError("a database server reset the connection"))


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (http_error(GatedRepoError, 401), "a gated repository"),
        (http_error(RepositoryNotFoundError, 404), "no such repository on the Hub"),
        (http_error(HfHubHTTPError, 401), "the Hub refused access (HTTP 401)"),
        (wrapped(LocalEntryNotFoundError("x"), OSError("couldn't connect")), "cannot be reached"),
    ],
)
def test_hub_failures_are_explained_with_the_override(error, reason, online):
    explained = hub_unavailable(error, "models.clip.model_name=<local folder>")
    assert isinstance(explained, HubUnavailable)
    assert reason in str(explained)
    assert str(explained).endswith("; use a local copy: models.clip.model_name=<local folder>")
    assert "\n" not in str(explained)


def test_other_failures_are_left_alone(online):
    assert hub_unavailable(ValueError("bad option"), "x=y") is None
    assert hub_unavailable(ConnectionResetError("reset"), "x=y") is None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_turns_the_libraries_offline(monkeypatch, online):
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(failures, "_probed", False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    failures.prepare_hub("./local/checkpoint")  # a path: nothing to check
    assert not failures._probed
    failures.prepare_hub("openai/clip-vit-base-patch32")
    assert constants.HF_HUB_OFFLINE is True
    assert failures._unreachable.startswith("127.0.0.1:")
    reason = hub_failure(wrapped(LocalEntryNotFoundError("x"), OSError("couldn't connect")))
    assert "cannot be reached (127.0.0.1:" in reason


def test_first_line_of_an_error_is_its_first_non_blank_line_or_its_class_name() -> None:
    assert failures.first_line(ValueError("\n  bad value\nat line 3")) == "bad value"
    assert failures.first_line(KeyError()) == "KeyError"
    assert failures.first_line("one\ntwo") == "one"
    assert failures.first_line("  \n ") == ""
