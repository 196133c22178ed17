"""Flags and environment variables derived from a settings dataclass.

`destination serve` (`ServerConfig`) and `destination mirror`
(`MirrorConfig`) take their settings the same way: each field is a
`--kebab-case` flag and a `<PREFIX><UPPER_SNAKE>` variable, with the help
text and default of the field, parsed from text by a parser named for it.
A flag wins over its variable, a variable over the default; an error names
the flag or variable that gave the bad value.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from destination.config import ConfigError

__all__ = [
    "Setting",
    "add_setting_flags",
    "boolean",
    "build_settings",
    "integer",
    "optional_path",
    "seconds",
    "settings_of",
    "text",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

C = TypeVar("C")


def text(value: str) -> str:
    return value


def optional_path(value: str) -> str | None:
    return value or None


# The parsers below raise ConfigError with an empty setting name: build_settings
# knows the setting and the flag or variable, and raises the error the operator sees.


def integer(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError("", f"expected an integer, got {value!r}") from None


def seconds(value: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise ConfigError("", f"expected a number of seconds, got {value!r}") from None


def boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError("", f"expected true or false (also 1/0, yes/no, on/off), got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One settings field as the operator sees it."""

    name: str
    flag: str
    env: str
    metavar: str
    parse: Callable[[str], object]
    is_bool: bool
    help: str
    default_text: str


def _default_text(default: object) -> str:
    if isinstance(default, bool):
        return "true" if default else "false"
    return str(default)


def settings_of(
    config_type: type[Any],
    forms: Mapping[str, tuple[str, Callable[[str], object]]],
    env_prefix: str,
) -> tuple[Setting, ...]:
    """Every field of `config_type`, in declaration order, with its flag and variable."""
    settings = []
    for spec in dataclasses.fields(config_type):
        if spec.name not in forms:
            raise LookupError(f"{config_type.__name__}.{spec.name} has no string form")
        metavar, parse = forms[spec.name]
        default = spec.default
        settings.append(
            Setting(
                name=spec.name,
                flag="--" + spec.name.replace("_", "-"),
                env=env_prefix + spec.name.upper(),
                metavar=metavar,
                parse=parse,
                is_bool=isinstance(default, bool),
                help=str(spec.metadata["help"]),
                default_text=str(spec.metadata.get("default_text", _default_text(default))),
            )
        )
    return tuple(settings)


def add_setting_flags(parser: argparse.ArgumentParser, settings: tuple[Setting, ...]) -> None:
    for setting in settings:
        help_text = f"{setting.help} Default: {setting.default_text}. Env: {setting.env}."
        help_text = help_text.replace("%", "%%")
        if setting.is_bool:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                metavar=setting.metavar,
                default=None,
                help=help_text,
            )


def build_settings(
    config_type: Callable[..., C],
    settings: tuple[Setting, ...],
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str],
) -> C:
    """Resolve every setting (flag, then `environ`, then default) into a `config_type`."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in settings:
        given = getattr(args, setting.name, None)
        if given is not None:
            source = setting.flag
        elif setting.env in environ:
            given, source = environ[setting.env], setting.env
        else:
            continue
        sources[setting.name] = source
        try:
            values[setting.name] = setting.parse(given) if isinstance(given, str) else given
        except ConfigError as err:
            raise ConfigError(setting.name, err.problem, source=source) from None
    try:
        return config_type(**values)
    except ConfigError as err:
        raise ConfigError(err.setting, err.problem, source=sources.get(err.setting)) from None
