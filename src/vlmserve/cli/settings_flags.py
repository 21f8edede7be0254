"""Command-line flags derived from the settings table (``vlmserve.settings.ServerSettings``).

A flag is the field's name with dashes (``ctx_size`` -> ``--ctx-size``); a boolean
that defaults to true becomes ``--no-<name>``; a ``pattern`` of alternatives
becomes ``choices``; the help is the field's description with its default. So a
setting, its bounds and its default are written once, in the table, and serve,
describe and watch cannot disagree about them.

Two ways to use a flag, chosen by the command:

- ``serve``: the flag's default is ``None`` (not given), so an unset flag never
  overrides a ``VLMSERVE_*`` variable; ``given_settings`` collects what was given.
- describe / watch (``use_defaults=True``): the flag's default is the table's, and
  the environment is not read (except for the model, see ``engine_args``).
"""

from __future__ import annotations

import argparse
import re
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from vlmserve.settings import ServerSettings

GROUP_ORDER = ("model", "network", "engine", "requests")
_METAVARS = {int: "N", float: "X", Path: "PATH"}


def add_setting_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None,
                      *, use_defaults: bool = False) -> None:
    """Add a flag for each setting in ``names`` (all, when None), in its group."""
    fields = ServerSettings.model_fields
    wanted = list(fields) if names is None else list(names)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for group in GROUP_ORDER:
        members = [n for n in wanted if _group(fields[n]) == group]
        if members:
            groups[group] = parser.add_argument_group(group)
    for name in wanted:
        _add_flag(groups[_group(fields[name])], name, fields[name], use_defaults)


def given_settings(args: argparse.Namespace, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The settings whose flags were given (the rest are None: left to the environment)."""
    names = ServerSettings.model_fields if names is None else names
    return {name: getattr(args, name, None) for name in names}


def flag_name(name: str, field: FieldInfo) -> str:
    if field.annotation is bool and field.default is True:
        return "--no-" + name.replace("_", "-")
    return "--" + name.replace("_", "-")


def _add_flag(group: argparse._ArgumentGroup, name: str, field: FieldInfo,
              use_defaults: bool) -> None:
    flag = flag_name(name, field)
    text = field.description or name
    if field.annotation is bool:
        # store_const, default None: a flag not given must not override VLMSERVE_*.
        group.add_argument(flag, dest=name, action="store_const", const=not field.default,
                           default=field.default if use_defaults else None, help=text)
        return
    kind = _value_type(field.annotation)
    choices = _choices(field)
    if field.default is not None:
        text += f" (default {field.default})"
    group.add_argument(flag, dest=name, type=kind, choices=choices,
                       metavar=None if choices else _METAVARS.get(kind),
                       default=field.default if use_defaults else None, help=text)


def _group(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    return extra.get("group", "requests") if isinstance(extra, dict) else "requests"


def _value_type(annotation: Any) -> type:
    """``Path | None`` -> Path, ``SecretStr | None`` -> str (argparse parses a string)."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if annotation is SecretStr:
        return str
    if annotation in (int, float, str, Path):
        return annotation
    raise TypeError(f"no flag type for a setting of type {annotation!r}")


def _choices(field: FieldInfo) -> list[str] | None:
    """``pattern="^(a|b|c)$"`` -> ``["a", "b", "c"]``; any other pattern: no choices."""
    for meta in field.metadata:
        pattern = getattr(meta, "pattern", None)
        if pattern:
            match = re.fullmatch(r"\^\(([\w|]+)\)\$", pattern)
            return match.group(1).split("|") if match else None
    return None
