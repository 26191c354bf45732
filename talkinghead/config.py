"""Experiment configs: YAML files merged over a method's defaults (experiments/<method>/*.yaml)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable

__all__ = ["deep_update", "merge_config", "read_yaml_mapping"]


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The YAML mapping in `path` ({} for an empty file); errors name the file and `what` it should be
    (e.g. "PC-AVS config")."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a {what} must be a mapping")
    return raw


def merge_config(base: dict, override: dict | None, where: str = "config", free_form: Iterable[str] = ()) -> dict:
    """A copy of `base` updated by `override`. Every key of `override` must be a key of `base` (else a
    ValueError naming it, at `where`), recursively for mapping values, except under the `free_form`
    keys (at any depth), whose mappings take any keys (`deep_update`)."""
    free_form = frozenset(free_form)
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if key not in base:
            raise ValueError(f"{where}: unknown key {key!r} (valid: {', '.join(sorted(base))})")
        if isinstance(base[key], dict) and key not in free_form:
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key} must be a mapping, got {type(value).__name__}")
            out[key] = merge_config(base[key], value, f"{where}.{key}", free_form)
        elif isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = deep_update(base[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def deep_update(base: dict, override: dict) -> dict:
    """A copy of `base` with `override`'s values, mappings merged key by key (any keys)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
