"""Turning a config entry into an instance of a registered class, with errors a user can act on."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A config names something that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def build_from_spec(
    registry: Mapping[str, type[T]],
    spec: Mapping[str, Any],
    key: str,
    name: str | None,
    *,
    group: str,
) -> T:
    """``spec[key]`` picks the class; the other entries (and ``kwargs``) are its arguments."""
    options = dict(spec)
    name = name or str(options.get("name") or options.get(key) or "")
    options.pop("name", None)
    kind = options.pop(key, None)
    if kind is None:
        raise ValueError(f"{group}.{name} has no '{key}:' entry naming one of {sorted(registry)}")
    if kind not in registry:
        raise UnknownNameError(
            f"unknown {key} {kind!r} in {group}.{name}; registered: {', '.join(sorted(registry))}"
        )
    cls = registry[kind]
    options.update(options.pop("kwargs", None) or {})
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in options if k not in accepted and not takes_any]
    if unknown:
        allowed = [p for p in accepted if p not in ("self", "name")]
        raise ValueError(f"{group}.{name}: unknown option(s) {unknown}; {kind} accepts {allowed}")
    instance = cls(name=name, **options)
    instance.spec = {key: kind, **resolved_options(cls, options)}  # type: ignore[attr-defined]
    return instance


def resolved_options(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every constructor option as the instance received it: the given ones plus the defaults.

    This is what a job's identity is made of, derived from the signature
    rather than listed per class, so a new option is compared on resume
    without anyone remembering to add it.
    """
    bound = inspect.signature(cls.__init__).bind_partial(**options)
    bound.apply_defaults()
    values: dict[str, Any] = {}
    for parameter, value in bound.arguments.items():
        kind = inspect.signature(cls.__init__).parameters[parameter].kind
        if parameter in ("self", "name"):
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            values.update(value)
        else:
            values[parameter] = value
    return json.loads(json.dumps(values, default=str))
