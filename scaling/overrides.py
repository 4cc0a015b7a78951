"""The command line checked before Hydra composes anything: unknown keys, ill-typed values and config-group
choices that do not exist (`sweep=dmeo`) are one line (exit 2), and counts written in scientific notation
(`train.tokens=3e5`) become the integers they are."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing

from hydra._internal.config_repository import ConfigRepository
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scaling.config import RunConfig
from scaling.errors import ConfigError

CONFIG_GROUPS = ("data", "sweep", "tracker", "hydra")


def check_overrides(overrides: list[str]) -> None:
    """Reject unknown keys and ill-typed values with one line, before Hydra composes anything."""
    schema = OmegaConf.structured(RunConfig)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # noqa: BLE001 - Hydra's parser raises several types
        raise ConfigError("command line", str(err).splitlines()[0], "write overrides as key=value") from err
    for ov in parsed:
        key = ov.key_or_group
        if key.split("/")[0].split(".")[0] in CONFIG_GROUPS and ("." not in key or key.startswith("hydra")):
            _check_group_choice(ov)
            continue
        if key.startswith("sweep."):
            continue  # sweep definitions may add their own fields
        if OmegaConf.select(schema, key, default="__missing__") == "__missing__" and not _is_none_field(schema, key):
            section = key.rsplit(".", 1)[0] if "." in key else ""
            raise ConfigError(key, "unknown config key", _valid_keys_hint(schema, section))
        if ov.is_sweep_override():
            continue
        try:
            OmegaConf.update(schema, key, ov.value(), merge=True)
        except OmegaConfBaseException as err:
            raise ConfigError(key, str(err).splitlines()[0], "check the value's type") from err


def _check_group_choice(ov) -> None:
    """A config group's choice (`sweep=demo`, `data=text`, `tracker=[tensorboard,wandb]`, `hydra/launcher=slurm`)
    must be one its folder holds; Hydra's own refusal is many lines and exits 1."""
    key = ov.key_or_group
    repository = ConfigRepository(create_config_search_path("pkg://sweeps"))
    if "." in key or not repository.group_exists(key):
        return
    choices = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else ov.value()
    options = repository.get_group_options(key)
    for choice in choices if isinstance(choices, list) else [choices]:
        if choice is not None and str(choice) not in options:
            near = difflib.get_close_matches(str(choice), options, n=1)
            fix = f"did you mean {key}={near[0]}?" if near else "choose one of them"
            raise ConfigError(key, f"'{choice}' is not one of {', '.join(options)}", fix)


def _field_type(key: str) -> type | None:
    """The declared type of a config field (Optional unwrapped), or None if the key is no field."""
    cls = RunConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        if typing.get_origin(cls) in (typing.Union, types.UnionType) and len(args) == 1:
            cls = args[0]
    return cls


def _whole(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() and ("e" in text.lower() or "." in text) else text


def whole_numbers(argv: list[str]) -> list[str]:
    """Counts written in scientific notation (`model.n_params=1e13`, `train.tokens=3e5,6e5`) as the
    integers they are, so that integer fields accept them; any other argument is left as it is."""
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and not arg.startswith("-") and _field_type(key.lstrip("+~")) is int:
            value = ",".join(_whole(v) for v in value.split(","))
        out.append(f"{key}{eq}{value}")
    return out


def _is_none_field(schema, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(schema, parent) if parent else schema
    return node is not None and OmegaConf.is_config(node) and leaf in node


def _valid_keys_hint(schema, section: str) -> str:
    node = OmegaConf.select(schema, section) if section else schema
    if node is None or not OmegaConf.is_config(node):
        return "see scaling/config.py for the valid keys"
    return "valid keys: " + ", ".join(f"{section + '.' if section else ''}{k}" for k in node)
