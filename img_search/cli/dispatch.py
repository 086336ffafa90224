"""``img-search <command> …``: one console command for every tool.

Each subcommand hands the rest of the command line, unchanged, to the module
that ``python -m`` runs (``img-search embed …`` is ``python -m
img_search.pipeline.embed …``): every Hydra override and flag works as
there, and nothing heavy loads before the subcommand needs it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import NamedTuple


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


if __name__ == "__main__":
    main()
