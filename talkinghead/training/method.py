"""The method contract: what a method folder declares so that train, generate and bench can run it.

Each method has one `Method` in ``talkinghead/methods/<name>/method.py`` (``METHOD = Method(...)``)
and one line in ``talkinghead/methods/registry.py``. A declaration imports nothing heavy: its
callables import the method's modules when called, so listing methods costs nothing.

Fields:
    name, description: registry name (``--method X``) and one line for listings.
    stages:           stage names in training order (the module's ``STAGES``).
    schema:           the config dataclass (a `talkinghead.training.config.RunConfig` subclass).
    config_dir:       ``experiments/<name>``; ``default_config`` is the file ``make train`` uses.
    build_module:     ``(cfg, stage) -> StagedModule`` for one stage.
    build_data:       ``(cfg, stage, world_size) -> LightningDataModule`` of that stage's training data.
    generator:        the inference class (`talkinghead.generation.Generator` subclass, whose
                      ``controls`` are the driving signals it accepts) or None (no generation);
                      ``generator.from_checkpoint(path, device, **options)`` loads it.
    official_import:  ``(path) -> nn.Module`` loading the published checkpoint, or None.
    official_state:   ``(seed) -> (state_dict in the official key layout, our model)`` random
                      official-layout weights for the importer's round-trip test, or None.
    bench:            {row name: `BenchRow`}: what the benchmark can score.
    default_out:      ``(cfg) -> Path`` run folder when the config's ``out`` is null (None:
                      ``<runs>/<name>``).
    after_stage:      ``(cfg, stage, checkpoint, out) -> None`` run once a stage finished (e.g.
                      SyncNet exports its expert file), or None.
    final_stage:      the stage whose checkpoint generation uses (default: the last).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["BenchRow", "Method", "ROOT", "lazy_bench_row", "preset_model_config", "stage_data"]

#: The repository root (experiments/ lives there).
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BenchRow:
    """One row the benchmark can score: ``factory(checkpoint | None, device) -> generator``.

    needs_checkpoint: without an explicit checkpoint the method's `Method.default_checkpoint` is used.
    """

    factory: Callable[[Path | None, str], Any]
    description: str
    needs_checkpoint: bool = True


def lazy_bench_row(module: str, builder: str, description: str, needs_checkpoint: bool = True) -> BenchRow:
    """A bench row built by ``<module>.<builder>(checkpoint, device)``, the module imported only when
    the row is built (so declaring rows imports nothing heavy)."""
    def factory(checkpoint, device):
        import importlib

        return getattr(importlib.import_module(module), builder)(checkpoint, device)

    return BenchRow(factory, description, needs_checkpoint)


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    stages: tuple[str, ...]
    schema: type
    build_module: Callable[..., Any]
    build_data: Callable[..., Any]
    generator: Callable[[], type] | None = None
    official_import: Callable[..., Any] | None = None
    official_state: Callable[..., Any] | None = None
    bench: dict[str, BenchRow] = field(default_factory=dict)
    default_out: Callable[..., Path] | None = None
    after_stage: Callable[..., None] | None = None
    final_stage: str | None = None
    default_config: str = "synth.yaml"

    @property
    def config_dir(self) -> Path:
        return ROOT / "experiments" / self.name

    @property
    def config_files(self) -> list[Path]:
        return sorted(self.config_dir.glob("*.yaml"))

    def config_path(self, path: str | Path | None = None) -> Path:
        """`path`, or a bare name of ``experiments/<name>/`` (``vox2`` / ``vox2.yaml``), or the default."""
        if path is None:
            return self.config_dir / self.default_config
        path = Path(path)
        if path.is_file():
            return path
        for candidate in (self.config_dir / path, self.config_dir / f"{path}.yaml"):
            if candidate.is_file():
                return candidate
        names = ", ".join(p.stem for p in self.config_files)
        raise FileNotFoundError(f"{path}: no such config file (the {self.name} configs: {names})")

    def load_config(self, path: str | Path | dict | None = None, overrides=()):
        """The resolved config: `path` (see `config_path`; a dict is taken as the config itself)
        over the schema's defaults, then `overrides` (dotted KEY=VALUE strings)."""
        from talkinghead.config import load_config

        source = path if isinstance(path, dict) else self.config_path(path)
        return load_config(self.schema, source, overrides)

    def out_dir(self, cfg) -> Path:
        """The run folder: the config's ``out``, else `default_out(cfg)`, else ``<runs>/<name>``."""
        from talkinghead.generation import runs_root

        if cfg.out:
            return Path(cfg.out)
        if self.default_out is not None:
            return Path(self.default_out(cfg))
        return runs_root() / self.name

    @property
    def last_stage(self) -> str:
        return self.final_stage or self.stages[-1]

    def default_checkpoint(self) -> Path | None:
        """The checkpoint generation and the bench use when none is given: the final stage's
        ``last.ckpt`` of the default run folder (`talkinghead.generation.default_checkpoint`)."""
        from talkinghead.generation import default_checkpoint

        return default_checkpoint(self.name, self.last_stage)

    def generator_class(self) -> type | None:
        return self.generator() if self.generator is not None else None


def preset_model_config(config_class, model: dict | None, tiny: Callable[[dict], Any],
                        identity_sections: tuple[str, ...], num_identities: int | None = None):
    """A method's network config from a config's ``model`` section: ``preset`` 'paper'
    (`config_class.paper()`) or 'tiny' (`tiny(section)`, sized from the section's keys), the section's
    other fields merged over it, and each null ``num_identities`` of `identity_sections` set to
    `num_identities` (the store's train speakers; ValueError when there is none)."""
    import copy

    from omegaconf import OmegaConf

    from talkinghead.config import merge_into, to_dict

    spec = copy.deepcopy(model or {})
    preset = spec.pop("preset", "paper")
    if preset not in ("paper", "tiny"):
        raise ValueError(f"model.preset must be 'paper' or 'tiny', got {preset!r}")
    base = config_class.paper() if preset == "paper" else tiny(spec)
    values = to_dict(merge_into(OmegaConf.create(base.to_dict()), spec, "the model section"))
    for section in identity_sections:
        if values[section].get("num_identities", 0) is None:
            if num_identities is None:
                raise ValueError(f"model.{section}.num_identities is null and no store gives the speaker count")
            values[section]["num_identities"] = int(num_identities)
    return config_class.from_dict(values)


def stage_data(cfg, stage: str) -> dict[str, Any]:
    """The data-module arguments of `stage`: a run config's shared ``data`` section, updated by the
    stage's own non-null ``data`` keys."""
    from talkinghead.config import to_dict

    data = to_dict(cfg.data)
    data.update({k: v for k, v in to_dict(cfg[stage].data).items() if v is not None})
    return data
