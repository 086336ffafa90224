"""Reading the command line: Hydra's entry point, with the changes users asked for.

A mistake Hydra finds while composing (a misspelled option or key, a value
of the wrong type) is one line naming the fix, exit code 2; ``key=~/x`` is
the home folder; a sweep writes only its tables. Imports nothing heavy, so
``--help`` answers before torch could load.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig

from img_search.hydra_errors import from_hydra, group_options, hydra_error_line
from img_search.pipeline.config_store import register

log = logging.getLogger("img_search")


def hydra_entry(
    config_path: str, config_name: str
) -> Callable[[Callable[[DictConfig], None]], Callable[[], None]]:
    """``hydra.main`` for this package's tools, with three changes users asked for.

    - A mistake on the command line (a misspelled option or key, a value of
      the wrong type, an override Hydra cannot parse) is one line naming the
      fix, exit code 2 — not Hydra's advice to add ``+key``, which only
      creates a key nothing reads. ``logging=debug`` shows the full traceback.
    - ``key=~/photos`` means the home folder, as the shell does for ``a=~/x``
      (Hydra's grammar rejects an unquoted ``~``).
    - A sweep (``-m``) writes only its tables: Hydra's ``multirun.yaml`` goes
      to a scratch folder that is removed afterwards.
    """
    import hydra

    def decorate(task: Callable[[DictConfig], None]) -> Callable[[], None]:
        composed = False

        @functools.wraps(task)
        def run_task(cfg: DictConfig) -> None:
            nonlocal composed
            composed = True
            task(cfg)

        hydra_main = hydra.main(
            version_base=None, config_path=config_path, config_name=config_name
        )(run_task)

        @functools.wraps(task)
        def main() -> None:
            nonlocal composed
            composed = False  # a second run in one process (a forked test run) starts afresh
            register()  # the resolvers and structured configs the YAML files use
            args = expand_home(sys.argv[1:])
            debug = wants_debug(args)
            if {"--help", "-h", "--hydra-help"} & set(args):
                share_one_config_repository()
                list_only_this_commands_groups(config_path)
            users_choice = os.environ.get("HYDRA_FULL_ERROR")
            with scratch_sweep_dir(args) as args:
                sys.argv[1:] = args
                # Hydra's errors reach us as exceptions instead of as its printout
                os.environ["HYDRA_FULL_ERROR"] = "1"
                try:
                    hydra_main()
                except Exception as exc:
                    if composed or debug or users_choice == "1" or not from_hydra(exc):
                        raise
                    exit_with_one_line(hydra_error_line(exc, config_path))
                finally:
                    restore_env("HYDRA_FULL_ERROR", users_choice)

        return main

    return decorate


_HOME_VALUE = re.compile(r"^(?P<key>[^-=\s][^=\s]*=)(?P<value>~[\w.-]*(?:/[^,\[\]{}()'\"\\$]*)?)$")


def expand_home(args: list[str]) -> list[str]:
    """``key=~/x`` → ``key='/home/me/x'``: what the shell does for ``a=~/x`` but not for dotted keys."""
    expanded = []
    for arg in args:
        match = _HOME_VALUE.match(arg)
        if match:
            path = os.path.expanduser(match["value"])
            if path != match["value"] and not set(path) & {"'", "\\"}:
                arg = f"{match['key']}'{path}'"
        expanded.append(arg)
    return expanded


def wants_debug(args: list[str]) -> bool:
    return any(re.fullmatch(r"\+*logging=['\"]?debug['\"]?", arg) for arg in args)


@contextlib.contextmanager
def scratch_sweep_dir(args: list[str]) -> Iterator[list[str]]:
    """For a sweep, Hydra's own files go to a scratch folder (unless ``hydra.sweep.dir`` is given)."""
    sweep = any(a in ("-m", "--multirun") for a in args) or "hydra.mode=MULTIRUN" in args
    # with hydra.job.chdir, relative outputs land in the sweep folder: it must stay
    if not sweep or any(re.match(r"\+*hydra\.(sweep\.dir|job\.chdir)=", a) for a in args):
        yield args
        return
    scratch = tempfile.mkdtemp(prefix="img_search-sweep-")
    try:
        yield [*args, f"hydra.sweep.dir='{scratch}'"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def exit_with_one_line(message: str) -> None:
    from img_search.console import setup_logging

    setup_logging("INFO")
    log.error("%s", message)
    sys.exit(2)


def share_one_config_repository() -> None:
    """Half of ``--help``'s second: Hydra lists the config groups with ~90 lookups that each rebuild
    the whole config repository, though all read the same one. Build it once per loader.

    Reaches into Hydra's internals, so it only applies to ``--help``, and a Hydra
    without them answers as before, a little slower.
    """
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.object_type import ObjectType
    except ImportError:
        return
    lookup = ConfigLoaderImpl.get_group_options
    if not hasattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo"):
        return

    def get_group_options(
        self: Any,
        group_name: str,
        results_filter: Any = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        if config_name is not None or overrides:
            return lookup(self, group_name, results_filter, config_name, overrides)
        if "_shared_repository" not in self.__dict__:
            _, self._shared_repository = self._parse_overrides_and_create_caching_repo(None, [])
        return self._shared_repository.get_group_options(group_name, results_filter)

    ConfigLoaderImpl.get_group_options = get_group_options


def list_only_this_commands_groups(config_path: str) -> None:
    """``--help`` lists the config groups this command composes (its defaults list: ``models``,
    ``datasets``, ``tasks``, ``engine``, ``logging`` for embed; ``logging`` for serve), not every
    group of the config packages it shares with the other tools.

    Hydra lists whatever its search path holds; the groups a command uses are
    the ``hydra.runtime.choices`` of its composed config, which ``--help``
    composes first. A group of a package on the primary config's
    ``hydra.searchpath`` (``logging`` for the search tools), which Hydra does
    not list, gets its YAML files (``group_options``). Reaches into Hydra's
    internals like ``share_one_config_repository``: a Hydra without them
    lists every group, as before.
    """
    try:
        from hydra._internal.hydra import Hydra
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return
    every_group = Hydra.format_config_groups

    def format_config_groups(
        self: Any, predicate: Callable[[str], bool], compact: bool = True
    ) -> str:
        if not compact or not HydraConfig.initialized():
            return every_group(self, predicate, compact)
        lines = []
        for group in sorted(g for g in HydraConfig.get().runtime.choices if predicate(g)):
            options = sorted(self.config_loader.get_group_options(group))
            options = options or group_options(group, config_path)
            lines.append(f"{group}: {', '.join(options)}\n")
        return "".join(lines)

    Hydra.format_config_groups = format_config_groups


def restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
