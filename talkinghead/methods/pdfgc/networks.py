"""The assembled PD-FGC model (Wang et al., CVPR 2023), built from a config.

`PDFGC(PDFGCConfig.paper())` holds the four generation networks under the official inference
code's attribute names (``lib/model_builder.py`` / ``lib/inferencer.py`` of
Dorniwang/PD-FGC-inference), one per published file, so ``model.net_motion.state_dict()`` has the
keys of ``motion_model.pth`` and so on:

=================  =============================  ===============================================
submodule (file)   paper                          block (`talkinghead.nn`)
=================  =============================  ===============================================
``net_appearance`` appearance encoder E_app       `IdentityEncoder`: ResNeXt50-32x4d (``model.*``),
(appearance_       (in the paper a ResNet-50)     2048-d global code, ``conv1x1`` -> 512x7x7 map
model.pth)                                        (the generator's input), ``fc`` identity
                                                  classifier (training only; 5995 identities)
``net_motion``     motion encoder E_mot (unified  `MotionEncoder`: FAN hourglass trunk (``model.*``)
(motion_           motion feature) + the fine-    -> F_n (512); ``to_mouth`` / ``to_headpose`` /
model.pth)         grained encoders E_lip,        ``to_eye`` / ``to_emo`` mappers and ``*_embed``
                   E_pose, E_eye, E_exp           codes: lip 500, pose 6, eye 6, emotion 30; plus
                                                  training-only heads (see `MotionEncoder`)
``net_audio``      audio encoder E_aud            `AudioEncoder`: ResNetSE34 on (1, 80, 20) mel
(audio_model.pth)                                 windows -> 512, ``mouth_embed`` -> lip code 500
``net_generator``  generator G                    `ModulatedGenerator`: StyleGAN2 modulated convs
(generator_                                       from the 512x7x7 appearance map to 224 px, style
model.pth)                                        [app 2048, lip 500, emo 30, eye 6, pose 6] = 2590
=================  =============================  ===============================================

The discriminator (`build_discriminator`, the 2-scale spectral+instance-norm PatchGAN of the official
config, identical to PC-AVS's) is training only and in no published file.

Data flow (images RGB in [-1, 1], (N, 3, S, S), S = ``image_size``; mel windows (N, 1, 80, 20),
values in [0, 1], the PC-AVS/PD-FGC log-mel of `talkinghead.data.audio`):

* appearance: ``appearance(reference)`` -> feature (B, 2048), map (B, 512, 7, 7), logits
* audio lip:  ``lip_code(mel)`` = ``net_audio.mouth_embed(net_audio.model(mel))`` -> (N, 500)
* motion:     ``motion_codes(frames)`` -> `PDFGCCodes` lip (visual, (N, 500)), emo (N, 30),
              eye (N, 6; blink in dims 0, 1, 4, 5, gaze in dims 2, 3), pose (N, 6); a zero code is
              the canonical (disabled) factor
* generator:  ``generate(appearance, appearance_map, lip, emo, eye, pose)`` ->
              ``net_generator(cat[appearance, lip, emo, eye, pose], identity_map=map)`` ->
              (N, 3, S, S) in (-1, 1). The order is the official ``inferencer.py`` one.

Official inference conventions (`forward`, `PDFGCConfig.lip_scale` etc.): the audio lip code x1.5
then a 3-tap Gaussian (sigma 1, zero padded) over time; the pose code averaged over 3 frames (2 at
the ends); emotion and eye codes x1.2; a missing driving source gives a zero code.

Differences from the paper: the paper describes E_app as a ResNet-50 and the fine-grained encoders
as MLPs "with ReLU activations"; the released networks (what we build) use a ResNeXt50-32x4d and
Linear-ReLU-BatchNorm1d-Linear mappers with a ReLU-Linear embedding. The paper's stage-1 generator
G_0 is not released; ``net_motion.to_feature`` / ``to_embed`` (training-only, see `MotionEncoder`)
give the unified motion code it would take. The training-only heads' shapes are not in the
released code (their names are, in the official loader's skip list); see `MotionEncoder`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nn.config import ConfigDict
from talkinghead.nn.discriminators import MultiscaleDiscriminator, MultiscaleDiscriminatorConfig
from talkinghead.nn.fan import FANConfig, MotionEncoder, MotionEncoderConfig, MotionOutput
from talkinghead.nn.landmarks import LandmarkNet
from talkinghead.nn.resnet import IdentityEncoder, IdentityEncoderConfig, IdentityOutput, ResNetConfig
from talkinghead.nn.resnetse import AudioEncoder, AudioEncoderConfig, ResNetSEConfig
from talkinghead.nn.stylegan2 import ModulatedGenerator, ModulatedGeneratorConfig

__all__ = ["BLINK_DIMS", "GAZE_DIMS", "PDFGC", "PDFGCCodes", "PDFGCConfig", "SUBMODULES", "build_discriminator",
           "build_landmark_net", "smooth_lip", "smooth_pose"]

#: The official attribute names of the generation networks (one published file each).
SUBMODULES = ("net_appearance", "net_motion", "net_audio", "net_generator")
#: Eye-code dimensions of blinking and of gaze (official factor masks in ``inferencer.py``).
BLINK_DIMS = (0, 1, 4, 5)
GAZE_DIMS = (2, 3)


def _motion_paper() -> MotionEncoderConfig:
    return MotionEncoderConfig(training_heads=True)


@dataclass(frozen=True)
class PDFGCConfig(ConfigDict):
    """Sizes of every PD-FGC network. `PDFGCConfig.paper()` is the published model at 224 px
    (reference-facts "PD-FGC networks"); `PDFGCConfig.tiny()` a CPU-trainable one.

    image_size:      side of the generated frames (paper 224).
    appearance:      E_app (``net_appearance``); ``feature_dim`` (2048) starts the style, its map
                     (``map_channels`` x ``map_size``^2, 512x7x7) is the generator's input.
    motion:          E_mot + the fine-grained encoders (``net_motion``): lip 500, pose 6, eye 6,
                     emotion 30; ``training_heads`` builds the heads training uses (default True).
    audio:           E_aud (``net_audio``); ``backbone.embedding`` (512) = ``motion.hidden`` (the
                     audio-visual contrastive space), ``mouth_dim`` = ``motion.mouth_dim``.
    generator:       G (``net_generator``); ``style_dim`` = 2048 + 500 + 30 + 6 + 6 = 2590.
    discriminator:   D (training only; the official 2-scale PatchGAN).
    lip_scale:       factor on the audio lip code at generation time (official 1.5).
    emo_scale:       factor on the emotion code at generation time (official 1.2).
    eye_scale:       factor on the eye code at generation time (official 1.2).
    appearance_size: side of the reference E_app sees (None: ``image_size``).
    motion_size:     side of the driving frames E_mot sees (None: ``image_size``).
    """

    image_size: int = 224
    appearance: IdentityEncoderConfig = field(default_factory=IdentityEncoderConfig.pdfgc)
    motion: MotionEncoderConfig = field(default_factory=_motion_paper)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig.pdfgc)
    generator: ModulatedGeneratorConfig = field(default_factory=ModulatedGeneratorConfig.pdfgc)
    discriminator: MultiscaleDiscriminatorConfig = field(default_factory=MultiscaleDiscriminatorConfig.pcavs)
    lip_scale: float = 1.5
    emo_scale: float = 1.2
    eye_scale: float = 1.2
    appearance_size: int | None = None
    motion_size: int | None = None

    def __post_init__(self) -> None:
        converters = {
            "appearance": IdentityEncoderConfig.from_dict,
            "motion": MotionEncoderConfig.from_dict,
            "audio": AudioEncoderConfig.from_dict,
            "generator": ModulatedGeneratorConfig.from_dict,
            "discriminator": MultiscaleDiscriminatorConfig.from_dict,
        }
        for name, convert in converters.items():
            value = getattr(self, name)
            if isinstance(value, dict) or value is None:
                object.__setattr__(self, name, convert(value))
        self.validate()

    # -- derived sizes ----------------------------------------------------------------------
    @property
    def reference_size(self) -> int:
        """Side of the images E_app encodes (``appearance_size`` or ``image_size``)."""
        return int(self.appearance_size or self.image_size)

    @property
    def motion_input_size(self) -> int:
        """Side of the frames E_mot encodes (``motion_size`` or ``image_size``)."""
        return int(self.motion_size or self.image_size)

    @property
    def appearance_dim(self) -> int:
        return self.appearance.feature_dim

    @property
    def content_dim(self) -> int:
        """Size of the audio-visual lip space (``to_mouth`` feature and audio feature, 512)."""
        return self.motion.hidden

    @property
    def lip_dim(self) -> int:
        return self.motion.mouth_dim

    @property
    def emo_dim(self) -> int:
        return self.motion.emo_dim

    @property
    def eye_dim(self) -> int:
        return self.motion.eye_dim

    @property
    def pose_dim(self) -> int:
        return self.motion.pose_dim

    @property
    def style_dim(self) -> int:
        """[appearance, lip, emo, eye, pose] (official 2048 + 500 + 30 + 6 + 6 = 2590)."""
        return self.appearance_dim + self.lip_dim + self.emo_dim + self.eye_dim + self.pose_dim

    @property
    def num_identities(self) -> int:
        return self.appearance.num_identities

    def validate(self) -> None:
        """Raise ValueError naming every size that does not fit the others."""
        problems = []
        if self.image_size < 8:
            problems.append(f"image_size must be >= 8, got {self.image_size}")
        if self.motion.trunk.image_size != self.motion_input_size:
            problems.append(f"motion.trunk.image_size {self.motion.trunk.image_size} != motion_size "
                            f"{self.motion_input_size}")
        if self.generator.image_size != self.image_size:
            problems.append(f"generator output {self.generator.image_size} px (start_size x 2^levels) != image_size "
                            f"{self.image_size}")
        if self.generator.style_dim != self.style_dim:
            problems.append(f"generator.style_dim {self.generator.style_dim} != appearance {self.appearance_dim} + lip "
                            f"{self.lip_dim} + emo {self.emo_dim} + eye {self.eye_dim} + pose {self.pose_dim} = "
                            f"{self.style_dim}")
        if self.generator.channels[0] != self.appearance.map_channels:
            problems.append(f"generator.channels[0] {self.generator.channels[0]} != appearance.map_channels "
                            f"{self.appearance.map_channels}")
        if self.generator.start_size != self.appearance.map_size:
            problems.append(f"generator.start_size {self.generator.start_size} != appearance.map_size "
                            f"{self.appearance.map_size}")
        if self.audio.backbone.embedding != self.content_dim:
            problems.append(f"audio.backbone.embedding {self.audio.backbone.embedding} != motion.hidden "
                            f"{self.content_dim} (the audio-visual lip space)")
        if self.audio.mouth_dim != self.lip_dim:
            problems.append(f"audio.mouth_dim {self.audio.mouth_dim} != motion.mouth_dim {self.lip_dim} (the audio "
                            "lip code replaces the visual one in the style)")
        for name in ("lip_scale", "emo_scale", "eye_scale"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.appearance_size is not None and self.appearance_size < 32:
            problems.append(f"appearance_size must be >= 32 or null, got {self.appearance_size}")
        if self.motion_size is not None and self.motion_size < 8:
            problems.append(f"motion_size must be >= 8 or null, got {self.motion_size}")
        if problems:
            raise ValueError("inconsistent PD-FGC config: " + "; ".join(problems))

    # -- presets ----------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides: Any) -> "PDFGCConfig":
        """The published PD-FGC networks at 224 px (official checkpoint shapes, 5995 identities)."""
        return replace(cls(), **overrides) if overrides else cls()

    @classmethod
    def tiny(cls, image_size: int = 56, num_identities: int = 8, appearance_size: int | None = None,
             map_size: int | None = None, motion_size: int | None = None, **overrides: Any) -> "PDFGCConfig":
        """A CPU-trainable PD-FGC: the same layout with narrow widths; eye and pose codes keep
        their 6 dims (the blink / gaze split), lip 32, emotion 8.

        image_size:      generated frame side = map_size * 2^k (k = 1..5).
        map_size:        side of the appearance map the generator starts from (default image_size / 4).
        appearance_size: side of the reference E_app sees (None: image_size).
        motion_size:     side of the driving frames E_mot sees (None: image_size).
        Inference scales (lip / emotion / eye) are 1.0: the codes G was trained with, unscaled (the
        official 1.5 / 1.2 / 1.2 belong to the official model).
        """
        start = int(map_size or max(1, image_size // 4))
        levels = (image_size // start).bit_length() - 1
        if start * 2 ** levels != image_size or not 1 <= levels <= 5:
            raise ValueError(f"PDFGCConfig.tiny: image_size must be map_size * 2^k (k = 1..5), got {image_size} "
                             f"and map_size {start}")
        width, content, lip, emo, eye, pose = 64, 64, 32, 8, 6, 6
        cfg = cls(
            image_size=image_size,
            appearance=IdentityEncoderConfig(
                backbone=ResNetConfig(block="basic", layers=(1, 1, 1, 1), widths=(16, 32, 64, width), stem_width=16,
                                      groups=1, width_per_group=64, num_classes=8),
                map_channels=width, map_size=start, num_identities=num_identities),
            motion=MotionEncoderConfig(
                trunk=FANConfig(stem_width=16, widths=(16, 32, 32), hourglass_depth=2, num_heatmaps=16,
                                feature_dim=content, image_size=int(motion_size or image_size), dropout=0.0),
                hidden=content, mouth_dim=lip, pose_dim=pose, eye_dim=eye, emo_dim=emo, training_heads=True,
                num_identities=num_identities, motion_dim=content),
            audio=AudioEncoderConfig(
                backbone=ResNetSEConfig(channels=(8, 16, 32, 32), layers=(1, 1, 1, 1), reduction=4,
                                        attention_hidden=16, embedding=content),
                num_identities=None, mouth_dim=lip),
            generator=ModulatedGeneratorConfig(style_dim=width + lip + emo + eye + pose, start_size=start,
                                               channels=(width,) + (48, 32, 32, 16, 16)[:levels], n_mlp=0),
            discriminator=MultiscaleDiscriminatorConfig.tiny(),
            lip_scale=1.0, emo_scale=1.0, eye_scale=1.0,
            appearance_size=appearance_size,
            motion_size=motion_size,
        )
        return replace(cfg, **overrides) if overrides else cfg


class PDFGCCodes(NamedTuple):
    """The motion part of the style for N frames: lip (N, 500), emo (N, 30), eye (N, 6), pose (N, 6)."""

    lip: torch.Tensor
    emo: torch.Tensor
    eye: torch.Tensor
    pose: torch.Tensor


def build_discriminator(config: PDFGCConfig) -> MultiscaleDiscriminator:
    """The training discriminator sized by ``config.discriminator`` (2-scale PatchGAN)."""
    return MultiscaleDiscriminator(config.discriminator)


def build_stage1_generator(config: PDFGCConfig) -> ModulatedGenerator:
    """G_0 of the motion stage: the modulated generator with style [appearance, unified motion] and
    no mapping MLP (never used)."""
    return ModulatedGenerator(replace(config.generator, n_mlp=0,
                                      style_dim=config.appearance_dim + config.motion.motion_dim))


def build_landmark_net(config: PDFGCConfig) -> LandmarkNet:
    """The motion stage's L_mot landmark network (training only, not in any official file): E_mot's
    trunk sizes with 68 heatmaps, no dropout, reading frames at the generator's ``image_size``."""
    trunk = replace(config.motion.trunk, num_heatmaps=68, image_size=config.image_size, dropout=0.0)
    return LandmarkNet(trunk)


def smooth_lip(lip: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Official lip smoothing over time: (T, M) -> (T, M), a 3-tap Gaussian (taps e^(-x^2 / 2 sigma^2),
    x = -1, 0, 1, normalised to sum 1) per dimension, zero padded at both ends (as ``conv_feat``)."""
    taps = torch.tensor([math.exp(-(x ** 2) / (2 * sigma ** 2)) for x in (-1, 0, 1)], dtype=lip.dtype,
                        device=lip.device)
    taps = (taps / taps.sum()).view(1, 1, 3).expand(lip.shape[1], 1, 3)
    return F.conv1d(lip.t().unsqueeze(0), taps, padding=1, groups=lip.shape[1]).squeeze(0).t()


def smooth_pose(pose: torch.Tensor) -> torch.Tensor:
    """Official pose smoothing: (T, P) -> (T, P), frame t = mean of frames t-1..t+1 that exist."""
    return F.avg_pool1d(pose.t().unsqueeze(0), 3, stride=1, padding=1, count_include_pad=False).squeeze(0).t()


class PDFGC(nn.Module):
    """The PD-FGC generation model: ``net_appearance``, ``net_motion``, ``net_audio``,
    ``net_generator`` (see the module docstring)."""

    def __init__(self, config: PDFGCConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = PDFGCConfig.paper()
        elif isinstance(config, dict):
            config = PDFGCConfig.from_dict(config)
        self.config = config
        self.net_appearance = IdentityEncoder(config.appearance)
        self.net_motion = MotionEncoder(config.motion)
        self.net_audio = AudioEncoder(config.audio)
        self.net_generator = ModulatedGenerator(config.generator)

    # -- encoders ---------------------------------------------------------------------------
    def appearance(self, reference: torch.Tensor) -> IdentityOutput:
        """References (B, 3, Sr, Sr) or (B, R, 3, Sr, Sr) -> `IdentityOutput` (feature (B, 2048),
        feature_map (B, 512, 7, 7), logits (B, num_identities)); R references are averaged."""
        return self.net_appearance(reference)

    def motion(self, frames: torch.Tensor) -> MotionOutput:
        """Frames (N, 3, Sm, Sm) or (B, T, 3, Sm, Sm) (Sm = ``motion_input_size``) -> `MotionOutput`
        (F_n, ``to_mouth`` feature, pose, eye, emo)."""
        return self.net_motion(frames)

    def motion_codes(self, frames: torch.Tensor) -> PDFGCCodes:
        """Frames (N, 3, Sm, Sm) or (B, T, 3, Sm, Sm) -> `PDFGCCodes` of each frame (lip = the
        visual lip code ``mouth_embed(to_mouth(F_n))``), unscaled."""
        out = self.net_motion(frames)
        return PDFGCCodes(self.net_motion.mouth_embed(out.mouth), out.emo, out.eye, out.pose)

    def audio_feature(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel windows (N, 1, 80, 20) or (B, T, 1, 80, 20) -> audio lip feature (N or B*T, 512)."""
        return self.net_audio.forward_feature(mel)

    def lip_code(self, mel: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Mel windows (N, 1, 80, 20) or (B, T, 1, 80, 20) -> audio lip code (N or B*T, 500) x `scale`
        (official inference: 1.5, applied to the code, after ``mouth_embed``)."""
        code = self.net_audio(mel).mouth_embed
        return code * scale if scale != 1.0 else code

    # -- generator --------------------------------------------------------------------------
    def style(self, appearance: torch.Tensor, lip: torch.Tensor, emo: torch.Tensor, eye: torch.Tensor,
              pose: torch.Tensor) -> torch.Tensor:
        """The style [appearance, lip, emo, eye, pose] (official order): (N, style_dim)."""
        return torch.cat([appearance, lip, emo, eye, pose], dim=1)

    def generate(self, appearance: torch.Tensor, appearance_map: torch.Tensor, lip: torch.Tensor,
                 emo: torch.Tensor, eye: torch.Tensor, pose: torch.Tensor,
                 noise_mode: str | None = None) -> torch.Tensor:
        """G(style, appearance map): (N, 2048), (N, 512, 7, 7), (N, 500), (N, 30), (N, 6), (N, 6) ->
        (N, 3, S, S) in (-1, 1)."""
        return self.net_generator(self.style(appearance, lip, emo, eye, pose), identity_map=appearance_map,
                                  noise_mode=noise_mode)

    def forward(self, reference: torch.Tensor, mel: torch.Tensor, pose_frames: torch.Tensor | None = None,
                emo_frames: torch.Tensor | None = None, eye_frames: torch.Tensor | None = None,
                smooth: bool = True, noise_mode: str | None = None) -> torch.Tensor:
        """Audio-driven generation of T frames for one identity, with the official conventions.

        reference: (1, 3, Sr, Sr) or (1, R, 3, Sr, Sr); mel: (T, 1, 80, 20) windows of the driving
        audio; pose_frames / emo_frames / eye_frames: (T, 3, Sm, Sm) or (1, 3, Sm, Sm) driving frames
        of each factor, None = that factor disabled (zero code). Lip x ``lip_scale``, emotion x
        ``emo_scale``, eye x ``eye_scale``; with `smooth`, lip Gaussian and pose 3-frame average over
        time. Returns (T, 3, S, S) in (-1, 1).
        """
        cfg = self.config
        t = mel.shape[0]
        app = self.net_appearance(reference)
        lip = self.lip_code(mel, cfg.lip_scale)
        if smooth:
            lip = smooth_lip(lip)

        def code(frames: torch.Tensor | None, pick: str, dim: int) -> torch.Tensor:
            if frames is None:
                return lip.new_zeros(t, dim)
            value = getattr(self.motion_codes(frames), pick)
            return value.expand(t, -1) if value.shape[0] == 1 else value

        pose = code(pose_frames, "pose", cfg.pose_dim)
        if smooth and pose_frames is not None:
            pose = smooth_pose(pose)
        emo = code(emo_frames, "emo", cfg.emo_dim) * cfg.emo_scale
        eye = code(eye_frames, "eye", cfg.eye_dim) * cfg.eye_scale
        return self.generate(app.feature.expand(t, -1), app.feature_map.expand(t, -1, -1, -1), lip, emo, eye, pose,
                             noise_mode=noise_mode)
