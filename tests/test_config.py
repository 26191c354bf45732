"""The config system (`talkinghead.config`): typed schema defaults, YAML files with ``inherits:``
chains, dotted ``KEY=VALUE`` overrides, errors that name the key and its source, ``--print-config``.

No ``from __future__ import annotations``: the schemas below need real annotations."""

from dataclasses import dataclass, field
from typing import List, Optional

import pytest
import yaml

from talkinghead.config import ConfigError, load_config, optional_fields, to_dict, to_yaml
from talkinghead.methods.registry import METHODS


@dataclass
class Stage:
    max_steps: int = 10
    lr: float = 1.0e-3


@dataclass
class Schema:
    name: str = "default"
    out: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    full: Stage = field(default_factory=Stage)


def write(path, values: dict):
    path.write_text(yaml.safe_dump(values))
    return path


def test_defaults_files_and_overrides_in_order(tmp_path):
    base = write(tmp_path / "base.yaml", {"name": "base", "full": {"max_steps": 100, "lr": 0.5}})
    middle = write(tmp_path / "middle.yaml", {"inherits": "base.yaml", "full": {"max_steps": 50}})
    (tmp_path / "sub").mkdir()
    leaf = write(tmp_path / "sub" / "leaf.yaml", {"inherits": "../middle.yaml", "tags": ["a"]})
    cfg = load_config(Schema, leaf, ["full.lr=0.25", "out=runs/x"])
    assert to_dict(cfg) == {"name": "base", "out": "runs/x", "tags": ["a"], "full": {"max_steps": 50, "lr": 0.25}}
    assert to_dict(load_config(Schema)) == to_dict(load_config(Schema, None, []))  # the schema's defaults
    assert load_config(Schema, base).full.max_steps == 100 and load_config(Schema, middle).full.lr == 0.5
    # an override's value is YAML: lists, null, numbers
    cfg = load_config(Schema, None, ["tags=[x, y]", "out=null", "full.max_steps=7"])
    assert list(cfg.tags) == ["x", "y"] and cfg.out is None and cfg.full.max_steps == 7


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"full": {"max_step": 3}})
    with pytest.raises(ConfigError, match=r"bad\.yaml.*full\.max_step"):
        load_config(Schema, bad)
    child = write(tmp_path / "child.yaml", {"inherits": "bad.yaml"})
    with pytest.raises(ConfigError, match=r"bad\.yaml"):  # the file that holds the key, not the child
        load_config(Schema, child)
    with pytest.raises(ConfigError, match=r"override 'full\.nope=1'.*full\.nope"):
        load_config(Schema, None, ["full.nope=1"])


def test_wrong_type_names_the_key_and_the_file(tmp_path):
    bad = write(tmp_path / "typed.yaml", {"full": {"max_steps": "many"}})
    with pytest.raises(ConfigError, match=r"typed\.yaml.*full\.max_steps"):
        load_config(Schema, bad)
    with pytest.raises(ConfigError, match=r"override 'full\.lr=fast'.*full\.lr"):
        load_config(Schema, None, ["full.lr=fast"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(Schema, None, ["full.lr"])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(Schema, tmp_path / "missing.yaml")
    loop_a = write(tmp_path / "a.yaml", {"inherits": "b.yaml"})
    write(tmp_path / "b.yaml", {"inherits": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Schema, loop_a)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Schema, tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("full: {max_steps: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Schema, tmp_path / "broken.yaml")


def test_print_config_round_trips(tmp_path):
    cfg = load_config(Schema, None, ["full.max_steps=3", "tags=[q]"])
    printed = write(tmp_path / "printed.yaml", yaml.safe_load(to_yaml(cfg)))
    assert to_dict(load_config(Schema, printed)) == to_dict(cfg)


def test_optional_fields_section():
    overrides = optional_fields(Stage)
    cfg = load_config(overrides, None, ["lr=0.5"])
    assert cfg.max_steps is None and cfg.lr == 0.5


@pytest.mark.parametrize("name", sorted(METHODS))
def test_dataset_configs_inherit_the_method_base(name):
    """Every shipped config of a method resolves, and a dataset config says only what differs from
    the method's base.yaml (it inherits it instead of repeating it)."""
    method = METHODS[name]
    base = method.config_dir / "base.yaml"
    assert base.is_file(), f"{name}: no experiments/{name}/base.yaml"
    for path in method.config_files:
        method.load_config(path)
        if path.name == "base.yaml":
            continue
        raw = yaml.safe_load(path.read_text())
        assert "inherits" in raw, f"{path} does not inherit (base.yaml or a config that does)"
