"""Dataclass configs as command lines: every field is a flag, a preset is a named set of overrides.

    cfg = parse_config(TrainConfig, presets={"quick": {...}}, argv=sys.argv[1:])

Field `steps` becomes `--steps`; booleans get `--x/--no-x`; tuples take comma-separated values
(`--block-dims 2,2,4`), tuples of tuples take `;`-separated groups (`--subsets "0,1;2"`).
A field's help is `field(metadata={"help": ...})`. Flags override the preset, which overrides the
defaults. Any bad value exits with status 2 and one line naming the flag, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A bad config value; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{flag_name(field)}: {message}")
        self.field = field


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def require(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError(field, message) unless condition holds (for `__post_init__`)."""
    if not condition:
        raise ConfigError(field, message)


class _OneLineParser(argparse.ArgumentParser):
    """An argparse parser that takes flags only as spelt in full (`--step 5` is no `--steps`) and
    reports a bad one in one line."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _converter(tp: Any) -> Callable[[str], Any]:
    """A str → value function for a field type; raises ValueError on bad input."""
    tp, optional = _strip_optional(tp)
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        sep = ";" if typing.get_origin(inner) is tuple else ","
        item = _converter(inner)

        def parse_tuple(text: str) -> tuple:
            parts = [p.strip() for p in text.split(sep)]
            return tuple(item(p) for p in parts if p != "" or sep == ";")

        convert = parse_tuple
    elif tp in (int, float, str):
        convert = tp
    else:
        raise TypeError(f"unsupported config field type {tp!r}")
    if not optional:
        return convert
    return lambda text: None if text.lower() in ("none", "") else convert(text)


def build_parser(
    cls: type, presets: Mapping[str, Mapping[str, Any]] | None = None, **kwargs: Any
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per dataclass field; a flag not given is absent from the
    parsed namespace (so an explicit "none" can override a preset's value)."""
    parser = _OneLineParser(**kwargs)
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), help="named set of overrides")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "") + f" (default: {default!r})"
        help_text = help_text.replace("%", "%%")
        if tp is bool:
            parser.add_argument(
                flag_name(f.name),
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        convert = _converter(tp)

        def typed(text: str, convert: Callable[[str], Any] = convert) -> Any:
            try:
                return convert(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None

        typed.__name__ = tp.__name__ if isinstance(tp, type) else "value"
        parser.add_argument(
            flag_name(f.name),
            type=typed,
            default=argparse.SUPPRESS,
            metavar=f.name.upper(),
            help=help_text,
        )
    return parser


def _flag_value(value: Any) -> str:
    """A field value as its flag's text (the inverse of `_converter`)."""
    if isinstance(value, tuple):
        sep = ";" if value and isinstance(value[0], tuple) else ","
        return sep.join(_flag_value(v) for v in value)
    return "none" if value is None else str(value)


def config_to_argv(cfg: Any) -> list[str]:
    """The flags that rebuild `cfg` from the defaults: one per field whose value differs, so
    `parse_config(type(cfg), config_to_argv(cfg)) == cfg`."""
    argv: list[str] = []
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        value = getattr(cfg, f.name)
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if value == default:
            continue
        if isinstance(value, bool):
            argv.append(flag_name(f.name) if value else "--no-" + f.name.replace("_", "-"))
        else:
            argv += [flag_name(f.name), _flag_value(value)]
    return argv


def config_from_args(
    cls: type[C], args: argparse.Namespace, presets: Mapping[str, Mapping[str, Any]] | None = None
) -> C:
    """defaults ← preset overrides ← explicit flags; validation runs in `cls.__post_init__`."""
    values: dict[str, Any] = {}
    preset = getattr(args, "preset", None)
    if preset:
        values.update((presets or {})[preset])
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values.update({k: v for k, v in vars(args).items() if k in names})  # given flags only
    return cls(**values)


NEGATIVE_VALUE = re.compile(r"-\d")


def _attach_negative_values(argv: Sequence[str]) -> list[str]:
    """argv with every "--flag -1,..." written "--flag=-1,..." (a flag without "=" followed by a
    token that starts with "-" and a digit)."""
    out: list[str] = []
    for token in argv:
        previous = out[-1] if out else ""
        if NEGATIVE_VALUE.match(token) and previous.startswith("--") and "=" not in previous:
            out[-1] = f"{previous}={token}"
        else:
            out.append(token)
    return out


def parse_config(
    cls: type[C],
    argv: Sequence[str] | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    **parser_kwargs: Any,
) -> C:
    """Parse argv into a validated `cls`; on any bad value print one line and exit 2. A value
    that starts with a minus sign and a digit ("--width-offsets -1,0,1") is read as the value of
    the flag before it (argparse alone takes "-1,0,1" for a flag)."""
    parser = build_parser(cls, presets, **parser_kwargs)
    args = parser.parse_args(_attach_negative_values(sys.argv[1:] if argv is None else argv))
    try:
        return config_from_args(cls, args, presets)
    except ValueError as err:  # ConfigError names its flag; other ValueErrors come from a field
        parser.error(str(err))
