"""SyncNet expert config schema: the keys of experiments/syncnet/*.yaml, their types and defaults.

No ``from __future__ import annotations``: OmegaConf reads the real annotations.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from talkinghead.training.config import RunConfig, StageConfig

__all__ = ["SyncNetData", "SyncNetLoss", "SyncNetOptim", "SyncNetRunConfig"]


@dataclass
class SyncNetLoss:
    margin: float = 10.0                 # contrastive margin on the embedding distance
    other_clip_weight: float = 0.5       # share of the negative term given to other-clip pairs


@dataclass
class SyncNetOptim:
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class SyncNetData:
    split: str = "train"
    windows_per_clip: int = 4            # windows of one clip per item: each other's shifted negatives
    min_shift: int = 2                   # their starts are >= min_shift frames apart ...
    max_shift: int = 15                  # ... and within max_shift frames
    cache: bool = True                   # keep the prepared mouth crops in memory (uint8)
    num_workers: int = 0


@dataclass
class SyncNetRunConfig(RunConfig):
    name: str = "syncnet"
    out: Optional[str] = None            # None: <store>/experts/syncnet (where LSE looks for the expert)
    model: Dict[str, Any] = field(default_factory=dict)  # talkinghead.nn.syncnet.SyncNetConfig fields; {} = official
    loss: SyncNetLoss = field(default_factory=SyncNetLoss)
    optim: SyncNetOptim = field(default_factory=SyncNetOptim)
    data: SyncNetData = field(default_factory=SyncNetData)
    expert: StageConfig = field(default_factory=StageConfig)  # the one stage
