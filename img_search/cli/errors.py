"""The exit-code policy of every command: a user error is one line and exit 2, a lost peer exit 3.

What counts as a user error is decided here, once, for the pipelines, the
search tools and the server alike; ``logging=debug`` lets the traceback
through instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from img_search.failures import (
    BuildError,
    ConfigError,
    HubUnavailable,
    PeerLost,
    hub_unavailable,
)
from img_search.registry import UnknownNameError

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger("img_search")

USER_ERRORS = (
    ConfigError,
    UnknownNameError,
    FileNotFoundError,
    BuildError,
    HubUnavailable,
    ValueError,
)


@contextlib.contextmanager
def user_errors_exit(cfg: DictConfig) -> Iterator[None]:
    """Set up logging from ``cfg.logging``; a user error inside exits 2 with one line.

    A lost peer exits 3. ``logging=debug`` lets the traceback through instead.
    A Hub access that cannot work from here (offline, no such repository) is
    a user error too, whichever library raised it.
    """
    from img_search.console import configure_output, setup_logging

    logging_cfg = cfg.get("logging") or {}
    level = str(logging_cfg.get("level", "INFO"))
    debug = level.upper() == "DEBUG"
    is_main = os.environ.get("RANK", "0") == "0"
    setup_logging(level, is_main=is_main, rich_tracebacks=debug)
    try:
        configure_output(logging_cfg)
        yield
    except PeerLost as exc:
        if debug:
            raise
        log.error("%s", exc)
        sys.exit(3)
    except Exception as exc:
        explained = exc if isinstance(exc, USER_ERRORS) else hub_unavailable(exc, None)
        if debug or explained is None:
            raise
        if is_main:
            log.error("%s", explained)
        sys.exit(2)
