"""What a failure means: worth a retry, or a fix for the user to make (and which one).

One place decides, for every build (models, datasets) and every command:

- *permanent*: retrying cannot help, so it is never retried — the Hub in
  offline mode, a repository that does not exist or is gated, a missing file,
  files that are neither local nor in the Hub cache, a bad option;
- *transient*: a dropped connection, a timeout, a busy server (429, 5xx), a
  stale network filesystem handle — retried with backoff.

A Hub id is only loaded after ``prepare_hub`` has checked, within seconds,
that the Hub can be reached at all: a machine without network switches the
Hub libraries to offline mode at once (the local cache still serves what it
holds) instead of letting them retry each file for half a minute.

Stdlib only: the classes of the Hub libraries are looked up in
``sys.modules``, since an exception of a class whose module was never
imported cannot exist.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

#: Seconds a Hub reachability check may take (DNS and TCP connect together).
PROBE_TIMEOUT_S = 3.0

_TRANSIENT_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.EAGAIN,
    errno.EBUSY,
    errno.EIO,
    errno.ESTALE,
}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
#: Mistakes in what was asked for, whatever library raised them.
_PERMANENT_BUILTINS = (
    ValueError,
    KeyError,
    TypeError,
    NotImplementedError,
    ImportError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


class ConfigError(ValueError):
    """A configuration problem the user fixes on the command line; reported as one line."""


class BuildError(RuntimeError):
    """A model or dataset could not be built; raised on every rank so none waits forever."""


class PeerLost(RuntimeError):
    """Another rank died or a collective timed out; the run stops instead of hanging."""


class HubUnavailable(RuntimeError):
    """A Hub model or dataset that cannot be had from here; the message names the local override."""


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message: what a one-line report shows of it.

    An exception without a message gives its class name (a bare ``KeyError()``
    still says something); empty text gives "".
    """
    lines = str(error).strip().splitlines()
    if lines:
        return lines[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""


#: Permanent Hub failures in words, most specific class first.
_HUB_REASONS = {
    "GatedRepoError": "a gated repository: accept its terms on its Hub page and log in (hf auth login)",
    "RepositoryNotFoundError": "no such repository on the Hub (a private one needs hf auth login)",
    "RevisionNotFoundError": "no such revision of the repository on the Hub",
    "EntryNotFoundError": "a file it needs is not in the repository",
    "DatasetNotFoundError": "no such dataset on the Hub, or it is not accessible",
}
#: Why the Hub was found unreachable by ``prepare_hub`` in this process (None: not found so).
_unreachable: str | None = None
_probed = False


def prepare_hub(name_or_path: str | None) -> None:
    """Call before loading ``name_or_path`` with a Hub library; a local path or offline mode costs nothing.

    The first Hub id of the process opens one TCP connection to the Hub
    endpoint (at most ``PROBE_TIMEOUT_S``). If that fails, the Hub libraries
    go offline for the rest of the process: a cached model still loads, an
    uncached one fails at once with an error that ``hub_failure`` explains.
    """
    global _probed, _unreachable
    _one_handler_for_hub_logs()
    if not name_or_path or _looks_local(name_or_path) or hub_offline() or _probed:
        return
    _probed = True
    reason = _probe(_endpoint(), PROBE_TIMEOUT_S)
    if reason is None:
        return
    _unreachable = reason
    _go_offline()
    log.warning(
        "the Hugging Face Hub cannot be reached (%s): using local files and the Hub cache only",
        reason,
    )


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same call may succeed; anything not known to be transient is not."""
    chain = list(_chain(exc))
    if any(_permanent(e) for e in chain):
        return False
    if hub_offline() and any(_hub_connection_error(e) for e in chain):
        return False
    return any(_transient(e) for e in chain)


def hub_failure(exc: BaseException) -> str | None:
    """The reason, in words, when ``exc`` is a Hub access that cannot work from here; else None."""
    classes = {
        **_module_classes("huggingface_hub.errors", *_HUB_REASONS, "HfHubHTTPError"),
        **_module_classes("datasets.exceptions", "DatasetNotFoundError"),
    }
    for e in _chain(exc):
        if _hub_connection_error(e):
            if hub_offline() or type(e).__name__ == "OfflineModeIsEnabled":
                return _offline_reason()
            if type(e).__name__ == "LocalEntryNotFoundError":
                return _unreachable_reason()
            continue
        for name, reason in _HUB_REASONS.items():
            if name in classes and isinstance(e, classes[name]):
                return reason
        if _status(e) in (401, 403) and isinstance(e, classes.get("HfHubHTTPError", ())):
            return f"the Hub refused access (HTTP {_status(e)}): log in (hf auth login)"
    return None


def hub_unavailable(exc: BaseException, local_copy: str | None) -> HubUnavailable | None:
    """``exc`` as one line that names the fix, when it is a Hub access that cannot work; else None."""
    reason = hub_failure(exc)
    if reason is None:
        return None
    fix = (
        f"use a local copy: {local_copy}"
        if local_copy
        else "run it once where the Hub can be reached to fill the Hub cache (HF_HOME)"
    )
    return HubUnavailable(f"{reason}; {fix}")


@contextlib.contextmanager
def explain_hub_failure(local_copy: str | None) -> Iterator[None]:
    """A Hub access inside that cannot work becomes ``HubUnavailable`` naming ``local_copy``."""
    try:
        yield
    except HubUnavailable:
        raise
    except Exception as exc:
        explained = hub_unavailable(exc, local_copy)
        if explained is None:
            raise
        raise explained from exc


def hub_offline() -> bool:
    """Whether the Hub libraries are in offline mode (``HF_HUB_OFFLINE``, or turned so by ``prepare_hub``)."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "HF_HUB_OFFLINE", False):
        return True
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


# -- helpers ----------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions a traceback shows with it (libraries wrap Hub errors in their own)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)


def _module_classes(module: str, *names: str) -> dict[str, type]:
    loaded = sys.modules.get(module)
    if loaded is None:
        return {}
    return {name: getattr(loaded, name) for name in names if hasattr(loaded, name)}


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _permanent(e: BaseException) -> bool:
    if isinstance(e, (HubUnavailable, BuildError)):
        return True
    hub = _module_classes(
        "huggingface_hub.errors",
        "OfflineModeIsEnabled",
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "DisabledRepoError",
        "EntryNotFoundError",
        "LocalTokenNotFoundError",
        "HfHubHTTPError",
    )
    http = hub.pop("HfHubHTTPError", None)
    if type(e).__name__ == "LocalEntryNotFoundError" and not (hub_offline() or _unreachable):
        return False  # online, it wraps whatever failed (a timeout, a 503): judged by its cause
    if hub and isinstance(e, tuple(hub.values())):
        return True
    if http is not None and isinstance(e, http):
        status = _status(e)
        return status is not None and 400 <= status < 500 and status not in _TRANSIENT_STATUS
    return isinstance(e, _PERMANENT_BUILTINS)


def _transient(e: BaseException) -> bool:
    if isinstance(e, (ConnectionError, TimeoutError, socket.timeout)):
        return True
    if _status(e) in _TRANSIENT_STATUS:
        return True
    if any(
        cls.__name__ in ("TransportError", "TimeoutException")
        and cls.__module__.startswith("httpx")
        for cls in type(e).__mro__
    ):
        return True
    return isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS


def _hub_connection_error(e: BaseException) -> bool:
    """A Hub library could not connect (some wrap the cause away: ``raise ... from None``)."""
    if type(e).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return True
    return isinstance(e, ConnectionError) and bool(
        re.search(r"couldn't reach .*\bhub\b|offline mode is enabled", str(e), re.IGNORECASE)
    )


def _offline_reason() -> str:
    if _unreachable is not None:
        return _unreachable_reason()
    return "the Hugging Face Hub is off (HF_HUB_OFFLINE=1) and the files are not in the local cache"


def _unreachable_reason() -> str:
    where = f" ({_unreachable})" if _unreachable else ""
    return f"the Hugging Face Hub cannot be reached{where} and the files are not in the local cache"


def _looks_local(name_or_path: str) -> bool:
    """A Hub id is ``name`` or ``owner/name``; an existing path or one written as a path is local."""
    return (
        name_or_path.startswith(("/", ".", "~"))
        or name_or_path.count("/") > 1
        or os.path.exists(os.path.expanduser(name_or_path))
    )


def _endpoint() -> str:
    constants = sys.modules.get("huggingface_hub.constants")
    return getattr(constants, "ENDPOINT", None) or os.environ.get(
        "HF_ENDPOINT", "https://huggingface.co"
    )


def _probe(endpoint: str, timeout: float) -> str | None:
    """Why a TCP connection to ``endpoint`` cannot be opened, or None when it opens.

    Behind a proxy the libraries connect through it, so there is nothing to
    check here. Name resolution has no timeout of its own; the thread bounds it.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port}: {exc.strerror or exc}")

    thread = threading.Thread(target=connect, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"{host}:{port}: no answer within {timeout:g} s"


def _go_offline() -> None:
    """Offline mode for the Hub libraries, imported already or not (they read the variables on import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, names in (
        ("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
        ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
    ):
        loaded = sys.modules.get(module)
        for name in names if loaded is not None else ():
            setattr(loaded, name, True)


def _one_handler_for_hub_logs() -> None:
    """huggingface_hub adds its own stderr handler and also propagates: every line came out twice."""
    hub_logger = logging.getLogger("huggingface_hub")
    for handler in list(hub_logger.handlers):
        hub_logger.removeHandler(handler)
