"""Command-line options made from a trainer's dataclass config: one `--field-name` per plain field (str, int,
float, bool), so a field added to the config is an option of every command that trains with it (thunder train,
thunder m2s train, torchrun -m training.thunder.train) without being written again.

    add_config_options(parser, ThunderTrainConfig, help={"w_m2s": "weight of the M2S loss (0: none)"})
    overrides = config_overrides(args, ThunderTrainConfig)   # the fields given on the command line

Options default to None, so a field not given keeps the config's value (or its named preset's); a bool is
`--name` / `--no-name`. Nested configs (the denoiser's, the M2S model's) are not options.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

PLAIN_TYPES = (str, int, float, bool)


def plain_fields(config_class) -> dict[str, type]:
    """{name: type} of the config's fields whose type is str, int, float or bool."""
    types = typing.get_type_hints(config_class)
    return {f.name: types[f.name] for f in dataclasses.fields(config_class) if types[f.name] in PLAIN_TYPES}


def add_config_options(parser: argparse.ArgumentParser, config_class, help: dict | None = None,
                       skip: tuple = ()) -> None:
    """Add `--field-name` for each plain field of `config_class` (except `skip`), with `help`'s text where it
    has one and the field's default otherwise."""
    help = help or {}
    defaults = config_class()
    for name, kind in plain_fields(config_class).items():
        if name in skip:
            continue
        text = help.get(name, f"default {getattr(defaults, name)!r}")
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, help=text)


def config_overrides(args: argparse.Namespace, config_class) -> dict:
    """The plain fields of `config_class` that the command line gave: {name: value}."""
    return {name: getattr(args, name) for name in plain_fields(config_class)
            if getattr(args, name, None) is not None}
