"""The commands: ``img-search`` and every ``python -m`` entry, thin layers over the packages below.

``dispatch`` (the ``img-search`` console command: subcommands, ``--help``,
``--version``), ``hydra_entry`` (Hydra's entry point with one-line mistakes),
``errors`` (the exit-code policy: 2 for a user error, 3 for a lost peer), and
one module per command. Nothing below this package imports it.
"""

from img_search.cli.dispatch import main

__all__ = ["main"]
