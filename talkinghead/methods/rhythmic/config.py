"""Rhythmic Head config schema: the keys of experiments/rhythmic/*.yaml, their types and defaults.

Four stages (`talkinghead.methods.rhythmic.module`): ``expression`` (Psi), ``head_motion`` (Phi),
``generator`` (Theta on ground-truth landmarks and poses), ``joint`` (Theta on Psi's landmarks posed
with Phi's poses). ``base.yaml`` holds the paper settings; ``synth.yaml`` (CPU SynthTalk),
``tiny.yaml`` (tests) and ``vox2.yaml`` inherit it (`talkinghead.config`).

Schema defaults are the paper / official values: generator stages Adam with the official TTUR
(``--lr 4e-4``: G 2e-4, D 8e-4, betas (0, 0.999)), hinge GAN x1, feature matching x10, VGG19 x10,
flow-warp L1 x10, face-region L1 x10, mouth-region L1 x3 (reference-facts "Rhythmic Head official,
details"); Psi Adam 2e-4 (0.5, 0.999) (ATVGnet); Phi Adam 3e-4, weight decay 2e-5 (RotateAudio).
No ``from __future__ import annotations``: OmegaConf reads the real annotations.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from talkinghead.config import optional_fields
from talkinghead.training.config import RunConfig, StageConfig

__all__ = ["RhythmicData", "RhythmicLoss", "RhythmicOptim", "RhythmicRunConfig", "RhythmicStage"]


@dataclass
class RhythmicLoss:
    """Loss weights of every stage (a stage uses the ones it needs)."""

    # -- expression stage (Psi; the paper states no loss: AT-net's MSE on the PCA coefficients)
    pca: float = 1.0               # MSE on the expression PCA coefficients p_t - p_tM
    landmark: float = 0.0          # mean point distance of the decoded displacements (canonical units)
    noise: bool = True             # mix noise into the audio at the model's SNR levels (paper 6-30 dB)
    # -- head_motion stage (Phi; the official RotateAudio trainer)
    motion: float = 1.0            # MSE on the normalised motion
    motion_discriminator: bool = True  # train the statistics discriminator (official: trained; its term
                                   # reaches Phi only with model.head_motion.adversarial_weight > 0, official 0)
    # -- generator / joint stages (Theta; official loss collector)
    gan: float = 1.0               # multi-scale hinge GAN
    feat: float = 10.0             # discriminator feature matching
    image: float = 1.0             # weight of FM's first term (the image itself, PC-AVS discriminator convention)
    vgg: float = 10.0              # VGG19 perceptual; off (and said so) without the VGG19 file
    warp: float = 10.0             # flow-warp L1: |warped ref - target| + |warped ani - target * render mask|
    face_l1: float = 10.0          # L1 inside the target's face region (landmark hull with the upper face)
    mouth_l1: float = 3.0          # L1 inside the target's mouth box (landmarks 48-67 grown by mouth_margin)
    mouth_margin: float = 0.35
    l1: float = 0.0                # L1 over the whole frame (the official frame is the face crop: face_l1)
    raw: bool = True               # GAN / FM / VGG on the "raw" output too (official add_raw_loss)


@dataclass
class RhythmicOptim:
    """Adam settings of one stage (constant learning rates)."""

    lr: float = 2.0e-4             # the stage's network (generator stages: G under TTUR)
    d_lr: Optional[float] = None   # discriminator lr (None: lr)
    betas: List[float] = field(default_factory=lambda: [0.0, 0.999])
    weight_decay: float = 0.0
    freeze: List[str] = field(default_factory=list)
    lr_mult: Dict[str, float] = field(default_factory=dict)


@dataclass
class RhythmicData:
    """`TalkingHeadDataModule` arguments shared by the stages (tau and K come from the model)."""

    train_split: str = "train"
    window: int = 1                # target frames per sample (after the tau reference frames)
    num_workers: int = 0
    source: str = "store"          # store | shards


RhythmicDataOverrides = optional_fields(RhythmicData, "RhythmicDataOverrides")


@dataclass
class RhythmicStage(StageConfig):
    data: RhythmicDataOverrides = field(default_factory=RhythmicDataOverrides)  # None = the shared `data` value
    optim: RhythmicOptim = field(default_factory=RhythmicOptim)
    loss: RhythmicLoss = field(default_factory=RhythmicLoss)
    worst_match_prob: float = 0.0  # generator stages: chance per frame that the matched reference is the
                                   # farthest head motion instead of the nearest (official sampler)


@dataclass
class RhythmicRunConfig(RunConfig):
    name: str = "rhythmic"
    model: Dict[str, Any] = field(default_factory=lambda: {"preset": "paper"})  # RhythmicConfig: preset
                                   # paper|tiny plus field overrides
    data: RhythmicData = field(default_factory=RhythmicData)
    expression: RhythmicStage = field(default_factory=RhythmicStage)
    head_motion: RhythmicStage = field(default_factory=RhythmicStage)
    generator: RhythmicStage = field(default_factory=RhythmicStage)
    joint: RhythmicStage = field(default_factory=RhythmicStage)
