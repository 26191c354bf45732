"""PC-AVS config schema: the keys of experiments/pcavs/*.yaml, their types and defaults.

``base.yaml`` holds the paper settings; ``synth.yaml`` (the CPU SynthTalk default), ``vox2.yaml``
and ``lrw.yaml`` inherit it (`talkinghead.config`). No ``from __future__ import annotations``:
OmegaConf reads the real annotations.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List

from talkinghead.config import optional_fields
from talkinghead.training.config import RunConfig, StageConfig

__all__ = ["PCAVSData", "PCAVSLoss", "PCAVSOptim", "PCAVSRunConfig", "PCAVSStage"]


@dataclass
class PCAVSLoss:
    """Loss weights and switches (paper / official values noted)."""

    gan: float = 1.0               # L_GAN weight (official lambda_D 1)
    feat: float = 10.0             # lambda_1, discriminator feature matching (official lambda_feat 10)
    image: float = 1.0             # weight of FM's first term, the image itself (official lambda_image 1)
    vgg: float = 10.0              # lambda_v (official lambda_vgg 10); off when the VGG19 file is missing
    sync: float = 1.0              # lambda_c (paper 1)
    identity: float = 1.0          # lambda_i (paper 1)
    l1: float = 0.0                # pixel L1 on the whole frame (not in the paper; tiny configs only)
    mouth_l1: float = 0.0          # pixel L1 inside the mouth box (not in the paper; tiny configs only)
    mouth_margin: float = 0.35     # mouth box = landmarks 48-67 box grown by this fraction of its width
    contrastive: str = "infonce"   # "infonce" (paper) | "official" (SoftmaxContrastive x100 + CrossModal)
    temperature: float = 1.0       # InfoNCE temperature (paper: none, i.e. 1)
    min_shift: int = 5             # same-clip frames at least this far apart are time-shifted negatives
    center: bool = False           # subtract the batch mean of each modality's features before the cosine
    visual_path: bool = True       # also render from the visual mouth feature (official default)
    pose_from: str = "augmented"   # frame the pose code is read from: "augmented" (paper, official) or
                                   # "frames" (the clean target frame)
    vgg_imagenet_normalize: bool = True  # False = official (feeds [-1, 1] images to VGG unnormalised)


@dataclass
class PCAVSOptim:
    """Optimiser settings of one stage."""

    lr: float = 1.0e-3             # official base lr
    betas: List[float] = field(default_factory=lambda: [0.0, 0.9])  # official TTUR betas
    ttur: bool = True              # official: G lr / 2, D lr * 2 (in every stage, as create_optimizers)
    amsgrad: bool = True           # official generator-side Adam uses amsgrad
    weight_decay: float = 0.0
    freeze: List[str] = field(default_factory=list)     # groups (netV, netE, netA_sync, netG) kept fixed
    lr_mult: Dict[str, float] = field(default_factory=dict)  # group -> factor on the lr of what an
                                   # earlier stage trained (new heads keep the base lr)
    ema: float = 0.0               # full stage: decay of a moving average of the model (0 = off, official)


@dataclass
class PCAVSData:
    """`TalkingHeadDataModule` arguments shared by the stages."""

    train_split: str = "train"
    window: int = 1
    num_references: int = 1
    num_negatives: int = 0
    num_shifted: int = 0
    min_shift: int = 5
    augment: str = "none"          # none | pcavs (colour transfer + perspective + centred crop for E_n)
    num_workers: int = 0
    source: str = "store"          # store | shards: read the store's LitData shards (<store>/shards, from
                                   # `talkinghead preprocess --shards`) instead of its clip files


PCAVSDataOverrides = optional_fields(PCAVSData, "PCAVSDataOverrides")


@dataclass
class PCAVSStage(StageConfig):
    data: PCAVSDataOverrides = field(default_factory=PCAVSDataOverrides)  # None = the shared `data` value
    optim: PCAVSOptim = field(default_factory=PCAVSOptim)
    loss: PCAVSLoss = field(default_factory=PCAVSLoss)


@dataclass
class PCAVSRunConfig(RunConfig):
    name: str = "pcavs"
    model: Dict[str, Any] = field(default_factory=lambda: {"preset": "paper"})  # PCAVSConfig: preset
                                   # paper|tiny plus any field overrides (validated by PCAVSConfig)
    data: PCAVSData = field(default_factory=PCAVSData)
    identity: PCAVSStage = field(default_factory=PCAVSStage)
    sync: PCAVSStage = field(default_factory=PCAVSStage)
    full: PCAVSStage = field(default_factory=PCAVSStage)
