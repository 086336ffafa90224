"""Hydra's and OmegaConf's errors as one line that names the fix: a misspelled option, key or value.

Used wherever a config is composed: the commands (``cli.hydra_entry``) and
the Python API (``api.jobs.compose``), so both word a mistake the same way.
Imports Hydra only when an error is being explained.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.resources
import re
from typing import Any

from img_search.failures import first_line

#: The config packages the entry points compose from (``hydra.searchpath`` of the search tools).
CONFIG_PACKAGES = ("img_search.config", "img_search.config.search")


def from_hydra(exc: BaseException) -> bool:
    """Hydra's and OmegaConf's own errors (a bug of ours elsewhere keeps its traceback)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(exc, (HydraException, OmegaConfBaseException))


def hydra_error_line(exc: BaseException, config_path: str) -> str:
    """One line for an error Hydra raised before the tool ran: what is wrong and what would be right."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = exc.__cause__
    if isinstance(exc, MissingConfigException) and "/" in (exc.missing_cfg_file or ""):
        group, option = exc.missing_cfg_file.rsplit("/", 1)
        options = list(exc.options or group_options(group, config_path))
        line = f"unknown {group} option {option!r}; the options are: {', '.join(options)}"
        return line + did_you_mean(option, options, prefix=f"{group}=")
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        return unknown_key_line(cause)
    if isinstance(cause, ValidationError) and cause.full_key:
        return f"{cause.full_key}: {first_line(cause.msg)}"
    group = re.match(r"Could not override '(.+)'\. No match in the defaults list", str(exc))
    if group:
        return f"{group[1]} is not a config group of this command; see --help"
    if isinstance(exc, OverrideParseException):
        return (
            f"cannot read the override {first_line(str(exc)).split(': ', 1)[-1]!r}: "
            "quote a value that holds special characters, e.g. 'key=\"a value\"'"
        )
    return first_line(str(exc))


def unknown_key_line(error: Any) -> str:
    """``datasets.inquire.split``: did you mean ``datasets.inquire.splits``? (from the keys that exist)."""
    full_key, key = str(error.full_key), str(error.key)
    parent = error.parent_node
    keys = [str(k) for k in parent] if parent is not None else []
    where = full_key[: -len(key)] if full_key.endswith(key) else ""
    if not where:
        keys = [k for k in keys if k != "hydra"]
    near = did_you_mean(key, keys, prefix=where)
    if near:
        return f"unknown key {full_key}{near}"
    known = f"{where.rstrip('.') or 'the config'} has {', '.join(keys) or 'no keys'}"
    # a plain mapping (not a structured config) takes new keys, which only a reader of them needs
    adding = f"; +{full_key}=... adds it" if error.object_type in (dict, None) else ""
    return f"unknown key {full_key}; {known}{adding}"


def did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    near = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {prefix}{near[0]}?" if near else ""


def group_options(group: str, config_path: str) -> list[str]:
    """The YAML files of a config group, where Hydra did not list them (an option inside a list)."""
    packages = [config_path.removeprefix("pkg://"), *CONFIG_PACKAGES]
    names: set[str] = set()
    for package in dict.fromkeys(packages):
        with contextlib.suppress(ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
            folder = importlib.resources.files(package).joinpath(group)
            names.update(
                p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")
            )
    return sorted(names)
