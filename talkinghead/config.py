"""Experiment configs: a typed schema (dataclasses) filled from YAML files and dotted overrides (OmegaConf).

One way for every method and the bench:

* the schema is a dataclass tree (`talkinghead.training.config.RunConfig` and a method's subclass);
  its defaults are the method's defaults;
* a YAML file under ``experiments/<method>/`` sets any of its keys; a file may start with
  ``inherits: base.yaml`` (a path relative to the file) and then only says what differs from it;
  chains of any length are followed, a cycle is an error;
* overrides are dotted ``KEY=VALUE`` strings (``full.max_steps=10``, ``trainer.devices=2``), the
  value parsed as YAML; they apply last;
* an unknown key or a value of the wrong type is a `ConfigError` naming the key and the file (or
  the override) it came from.

`load_config(schema, path, overrides)` returns the resolved `DictConfig`; `to_yaml` prints it
(``--print-config``); `to_dict` gives plain Python containers.
"""
from __future__ import annotations

from dataclasses import field, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

__all__ = ["ConfigError", "apply_overrides", "load_config", "merge_into", "optional_fields", "read_yaml_chain", "to_dict", "to_yaml"]

INHERITS = "inherits"


class ConfigError(ValueError):
    """A config that does not fit its schema; the message names the key and its source."""


def read_yaml_chain(path: str | Path) -> list[tuple[Path, dict]]:
    """``[(file, mapping), ...]`` from the root of `path`'s ``inherits:`` chain down to `path` itself
    (the ``inherits`` key removed)."""
    import yaml

    chain: list[tuple[Path, dict]] = []
    seen: set[Path] = set()
    current: Path | None = Path(path)
    while current is not None:
        current = current.resolve()
        if current in seen:
            raise ConfigError(f"{current}: inherits itself (cycle: {' -> '.join(str(p) for p, _ in chain)})")
        seen.add(current)
        if not current.is_file():
            raise FileNotFoundError(f"{current}: no such config file")
        try:
            raw = yaml.safe_load(current.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{current}: not valid YAML: {error}") from error
        if not isinstance(raw, dict):
            raise ConfigError(f"{current}: a config file must be a mapping, got {type(raw).__name__}")
        parent = raw.pop(INHERITS, None)
        chain.append((current, raw))
        if parent is not None and not isinstance(parent, str):
            raise ConfigError(f"{current}: '{INHERITS}' must be a file name, got {parent!r}")
        current = (current.parent / parent) if parent else None
    return chain[::-1]


def _merge(config, values, source: str):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(config, values)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = (getattr(error, "msg", None) or str(error)).strip().splitlines()[0]
        where = f"key '{key}': " if key else ""
        raise ConfigError(f"{source}: {where}{message}") from None


def merge_into(config, values: dict | Any, source: str):
    """`config` (DictConfig) updated by `values` (a mapping or DictConfig); errors name `source`."""
    return _merge(config, values, source)


def _parse_override(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE (e.g. full.max_steps=10)")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def _nested(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def load_config(schema: type, path: str | Path | Mapping | None = None, overrides: Iterable[str] = ()):
    """The schema's defaults, updated by `path`'s inherits-chain (root first) then by `overrides`
    (dotted ``KEY=VALUE`` strings). Returns a structured `DictConfig` (attribute access, typed).
    `path` may also be a mapping (a config given in code, e.g. by tests; no ``inherits``)."""
    from omegaconf import OmegaConf

    config = OmegaConf.structured(schema)
    if isinstance(path, Mapping):
        config = _merge(config, dict(path), "config mapping")
    elif path is not None:
        for file, values in read_yaml_chain(path):
            config = _merge(config, values, str(file))
    return apply_overrides(config, overrides)


def apply_overrides(config, overrides: Iterable[str]):
    """`config` updated by dotted ``KEY=VALUE`` strings (the value parsed as YAML), in order."""
    for text in overrides:
        key, value = _parse_override(text)
        config = _merge(config, _nested(key, value), f"override '{text}'")
    return config


def to_dict(config) -> dict:
    """Plain Python containers (dicts / lists) of a `DictConfig` (or a node of it)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config, resolve=True)


def to_yaml(config) -> str:
    """The resolved config (a `DictConfig`, or plain containers) as YAML, keys in order (what
    ``--print-config`` prints)."""
    import yaml

    return yaml.safe_dump(config if isinstance(config, dict) else to_dict(config), sort_keys=False)


def optional_fields(cls: type, name: str | None = None) -> type:
    """A dataclass with `cls`'s fields, each Optional and defaulting to None: a section of overrides
    of a `cls` section (e.g. a stage's ``data``: None = take the shared value)."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    spec = []
    for item in fields(cls):
        if isinstance(item.type, str):
            raise TypeError(f"{cls.__name__}.{item.name}: schema dataclasses need real type annotations "
                            f"(no `from __future__ import annotations` in schema modules)")
        spec.append((item.name, Optional[item.type], field(default=None)))
    return make_dataclass(name or f"{cls.__name__}Overrides", spec)
