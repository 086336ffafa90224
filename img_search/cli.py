"""``img-search <command> …``: one console command for every tool, and what all entry points share:
user errors as one line (``user_errors_exit``) and the choice of device (``pick_device``).

Each subcommand hands the rest of the command line, unchanged, to the module
that ``python -m`` runs (``img-search embed …`` is ``python -m
img_search.pipeline.embed …``): every Hydra override and flag works as
there, and nothing heavy loads before the subcommand needs it.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

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


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "embed": Command("img_search.pipeline.embed", "embed images into a table (Parquet)"),
    "embed-text": Command("img_search.pipeline.embed_text", "embed captions into a table"),
    "build": Command("img_search.search.build", "build search indexes next to a table"),
    "info": Command(
        "img_search.search.info", "what a table holds, and whether its indexes are current"
    ),
    "query": Command("img_search.search.query", "search a table or index by text, image or id"),
    "evaluate": Command("img_search.search.evaluate", "recall, INQUIRE and ANN evaluations"),
    "report": Command(
        "img_search.search.report", "compare models over tasks: CSV, markdown, figures"
    ),
    "serve": Command("img_search.serve.__main__", "the search page and HTTP API over tables"),
}


def available() -> dict[str, Command]:
    """The subcommands whose module exists in this installation."""
    return {n: c for n, c in COMMANDS.items() if importlib.util.find_spec(c.module) is not None}


def usage() -> str:
    commands = available()
    width = max(map(len, commands))
    lines = [
        "usage: img-search <command> [hydra overrides and flags …]",
        "       img-search <command> --help     (the command's options and config groups)",
        "",
        "commands:",
        *(f"  {name:<{width}}  {command.summary}" for name, command in commands.items()),
        "",
        "Each command is also `python -m <module>`: img-search embed … = python -m img_search.pipeline.embed …",
    ]
    return "\n".join(lines)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("img_search")
    except PackageNotFoundError:
        from img_search import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if args else 2)
    if args[0] in ("-V", "--version"):
        print(f"img-search {version()}")
        return
    name, rest = args[0], args[1:]
    commands = available()
    if name not in commands:
        near = difflib.get_close_matches(name, list(commands), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        print(
            f"img-search: unknown command {name!r}; the commands are: {', '.join(commands)}{hint}",
            file=sys.stderr,
        )
        sys.exit(2)
    module = importlib.import_module(commands[name].module)
    sys.argv = [f"img-search {name}", *rest]
    module.main()


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


def pick_device(device: str) -> str:
    """``auto`` → CUDA when there is one, else CPU; anything else as given."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


if __name__ == "__main__":
    main()
