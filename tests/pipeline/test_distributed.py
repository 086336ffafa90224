"""The build retry loop: transient failures retried with backoff and logged once each, the rest at once."""

from __future__ import annotations

import logging

import pytest
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

from img_search.failures import HubUnavailable
from img_search.pipeline.distributed import with_retries


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns "built"."""

    def __init__(self, error: BaseException, failures: int = 10**6) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "built"


def test_transient_failures_are_retried_and_logged_once_each(caplog):
    build = Flaky(ConnectionResetError("connection reset by peer\nsecond line"), failures=2)
    with caplog.at_level(logging.WARNING):
        assert with_retries(build, "model clip", retries=3, backoff=0.0) == "built"
    assert build.calls == 3
    assert [r.getMessage() for r in caplog.records] == [
        "building model clip failed (connection reset by peer); retry 1/3 in 0.0s",
        "building model clip failed (connection reset by peer); retry 2/3 in 0.0s",
    ]


def test_offline_hub_is_one_attempt_that_names_the_local_copy(monkeypatch, caplog):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    try:
        raise OSError(
            "We couldn't connect to 'https://huggingface.co'"
        ) from LocalEntryNotFoundError("not in the cache")
    except OSError as exc:
        build = Flaky(exc)
    with pytest.raises(HubUnavailable) as raised, caplog.at_level(logging.WARNING):
        with_retries(build, "model clip", 3, 0.0, "models.clip.model_name=<local folder>")
    assert build.calls == 1 and not caplog.records
    assert str(raised.value) == (
        "the Hugging Face Hub is off (HF_HUB_OFFLINE=1) and the files are not in the local cache; "
        "use a local copy: models.clip.model_name=<local folder>"
    )


@pytest.mark.parametrize(
    "error", [OfflineModeIsEnabled("offline"), FileNotFoundError("/nope"), KeyError("x")]
)
def test_permanent_failures_fail_at_once(error):
    build = Flaky(error)
    with pytest.raises((type(error), HubUnavailable)):
        with_retries(build, "dataset inquire", retries=3, backoff=0.0)
    assert build.calls == 1


def test_a_transient_failure_that_outlasts_the_retries_is_raised_after_the_last_one():
    build = Flaky(ConnectionError("down"))
    with pytest.raises(ConnectionError, match="down"):
        with_retries(build, "model clip", retries=2, backoff=0.0)
    assert build.calls == 3
