"""The config schema every method's run shares (OmegaConf structured dataclasses).

A method's schema subclasses `RunConfig`, adds its ``model`` / ``data`` sections and one
`StageConfig` subclass field per stage (named as the stage), e.g. ``identity``, ``sync``,
``full`` for PC-AVS. `talkinghead.config.load_config` fills it from YAML and overrides.

No ``from __future__ import annotations`` here: OmegaConf reads the real type annotations.
"""
from dataclasses import dataclass, field
from typing import Any, List, Optional

__all__ = ["LoggerConfig", "RunConfig", "StageConfig", "TrainerConfig", "ValidationConfig"]


@dataclass
class TrainerConfig:
    """Lightning Trainer settings shared by every stage (scale-out is only configuration)."""

    accelerator: str = "auto"          # cpu | gpu | auto
    devices: Any = 1                   # int, list of ids or "auto"
    num_nodes: int = 1
    strategy: str = "auto"             # auto | ddp | ddp_spawn (DDP: find_unused_parameters, gloo on CPU)
    precision: str = "32-true"
    num_threads: Optional[int] = None  # torch intra-op threads (1 is fastest for tiny nets on a shared CPU)
    log_every_n_steps: int = 10
    progress: bool = True              # progress (a bar on a terminal, plain lines in a log) and model summary
    max_nonfinite_in_a_row: int = 20   # stop with an error after this many skipped (non-finite) steps in a row


@dataclass
class LoggerConfig:
    """CSV logs always; W&B when ``wandb`` is on (online with WANDB_API_KEY or mode online, else offline)."""

    wandb: bool = True
    mode: str = "auto"                 # auto (online iff WANDB_API_KEY is set) | online | offline
    project: str = "talkinghead"
    tags: List[str] = field(default_factory=list)


@dataclass
class ValidationConfig:
    """Held-out clips generated and scored during training (stages whose method declares a generator)."""

    every_n_steps: int = 0             # 0: only at the end of a stage; rounded up to whole epochs
    num_clips: int = 2                 # the first clips of `split`
    split: str = "test"
    num_frames: int = 50               # frames generated per clip (at most the clip's)
    metrics: List[str] = field(default_factory=lambda: ["ssim", "lmd"])
    monitor: Optional[str] = None      # e.g. "val/LMD" for the "best" checkpoint; None: no best checkpoint
    mode: str = "min"
    video: bool = True                 # write the first clip as an mp4 with its audio (and log it)


@dataclass
class StageConfig:
    """One stage's schedule. A stage is finished when ``max_steps`` training batches are done; a
    ``max_minutes`` budget (per invocation) stops it early, and the next run resumes it."""

    batch_size: int = 16
    max_steps: int = 1000              # training batches (not optimiser steps)
    max_minutes: Optional[float] = None
    epoch_batches: int = 100           # batches per epoch = checkpoint interval
    sample_every_n_steps: int = 0      # image grid of the current batch every so many batches (0: stage end only)
    gradient_clip: Optional[float] = None  # clip the gradient norm of each optimiser step to this


@dataclass
class RunConfig:
    """The keys every method's config has."""

    name: str = "default"
    seed: int = 0
    store: str = "data/store/synth-vox2"
    make_store: bool = False           # generate + preprocess SynthTalk vox2 when the store is missing
    out: Optional[str] = None          # run folder; None: runs/<method>
    stages: List[str] = field(default_factory=list)  # [] = every stage of the method, in order
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
