"""The assembled PC-AVS model (Zhou et al., CVPR 2021), built from a config.

`PCAVS(PCAVSConfig.paper())` holds the four networks of the published model under their
official names, so ``model.netV.state_dict()`` has the keys of ``latest_net_V.pth`` and so on:

=============  ===============================  ==================================================
submodule      paper                            block (`talkinghead.nn`)
=============  ===============================  ==================================================
``netV``       identity encoder E_i             `IdentityEncoder`: ResNeXt50-32x4d (torchvision
                                                names under ``model.*``), ``conv1x1`` -> 512x7x7
                                                map, ``fc`` identity classifier; 2048-d feature
``netE``       non-identity encoder E_n,        `NonIdentityEncoder`: FAN hourglass trunk
               mappings mp_c and mp_p           (``model.*``), ``to_mouth`` (mp_c, 512-d content
                                                feature) + ``mouth_embed`` (500-d style part),
                                                ``to_headpose`` + ``headpose_embed`` (mp_p, the
                                                12-d pose code)
``netA_sync``  audio content encoder E_c^a      `AudioEncoder`: ResNetSE34 on (1, 80, 20) mel
                                                windows -> 512-d content feature
``netG``       generator G                      `ModulatedGenerator`: demodulated modulated convs
                                                from the 512x7x7 identity map to 224 px, style =
                                                [identity 2048, mouth 500, pose 12] = 2560
=============  ===============================  ==================================================

The discriminator (``netD``, `MultiscaleDiscriminator`) is only needed for training; it lives in
the LightningModule (`talkinghead.methods.pcavs.module`) and is never part of a generation
checkpoint (the official release has no ``latest_net_D.pth`` either). `PCAVSConfig.discriminator`
still sizes it, so one config describes a whole run.

Data flow (images RGB in [-1, 1], (B, 3, S, S), S = ``image_size``; mel windows (N, 1, 80, 20)):

* identity:  ``netV(reference)`` -> feature f_i (B, F), map (B, C0, s0, s0), logits
* content:   audio  ``netA_sync.forward_feature(mel)`` -> F_c^a (N, H)
             visual ``netE.to_mouth(netE.forward_feature(frame))`` -> F_c^v (N, H)
             style part ``netE.mouth_embed(F_c)`` -> (N, M) (the official code applies E_n's
             ``mouth_embed`` to the *audio* feature too: one shared mapping, so F_c^a and F_c^v
             are interchangeable in the generator)
* pose:      ``netE.headpose_embed(netE.to_headpose(netE.forward_feature(frame)))`` -> (N, P);
             a zero code is the frontal face (official "frontalisation")
* generator: ``netG(cat[f_i, mouth, pose], identity_map=map)`` -> (N, 3, S, S) in (-1, 1)

Official inference conventions kept here: the audio content feature is multiplied by
``audio_scale`` before ``mouth_embed`` (official 1.2, `PCAVSConfig.audio_scale`); the fixed-pose
mode takes the pose code of the reference image itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from torch import nn

from talkinghead.nn.config import ConfigDict
from talkinghead.nn.discriminators import MultiscaleDiscriminator, MultiscaleDiscriminatorConfig
from talkinghead.nn.fan import FANConfig, NonIdentityEncoder, NonIdentityEncoderConfig
from talkinghead.nn.resnet import IdentityEncoder, IdentityEncoderConfig, ResNetConfig
from talkinghead.nn.resnetse import AudioEncoder, AudioEncoderConfig, ResNetSEConfig
from talkinghead.nn.stylegan2 import ModulatedGenerator, ModulatedGeneratorConfig

__all__ = ["PCAVS", "PCAVSConfig", "PCAVSEncodings", "SUBMODULES", "build_discriminator"]

#: The official submodule names of the generation model (one ``latest_net_<X>.pth`` each).
SUBMODULES = ("netV", "netE", "netA_sync", "netG")


@dataclass(frozen=True)
class PCAVSConfig(ConfigDict):
    """Sizes of every PC-AVS network. `PCAVSConfig.paper()` is the published model
    (reference-facts "PC-AVS networks"); `PCAVSConfig.tiny()` a CPU-trainable one.

    image_size:    side of the square RGB frames every network works on (paper 224).
    identity:      E_i (``netV``); its ``feature_dim`` (2048) starts the style vector, its map
                   (``map_channels`` x ``map_size``^2, 512x7x7) is the generator's input.
    nonidentity:   E_n (``netE``) with mp_c (``to_mouth``/``mouth_embed``, 500) and mp_p
                   (``to_headpose``/``headpose_embed``, 12).
    audio:         E_c^a (``netA_sync``); its embedding (512) must equal ``nonidentity.hidden``
                   (the shared speech-content space).
    generator:     G (``netG``); ``style_dim`` = identity feature + mouth + pose (2560),
                   ``channels[0]`` = identity map channels, ``start_size`` = identity map size,
                   output size = ``image_size``.
    discriminator: D (training only).
    audio_scale:   factor on the audio content feature before ``mouth_embed`` at generation
                   time (official inference 1.2; training always uses 1).
    identity_size: side of the reference image E_i sees (None: ``image_size``, as the paper).
                   A tiny model can generate small frames while E_i still sees the 224 px
                   reference, so that its map (``map_size``) carries real spatial detail.
    content_size:  side of the frames E_n encodes (None: ``image_size``, as the paper). A tiny
                   model can read speech content and pose from frames smaller than it generates.
    """

    image_size: int = 224
    identity: IdentityEncoderConfig = field(default_factory=IdentityEncoderConfig)
    nonidentity: NonIdentityEncoderConfig = field(default_factory=NonIdentityEncoderConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    generator: ModulatedGeneratorConfig = field(default_factory=ModulatedGeneratorConfig.pcavs)
    discriminator: MultiscaleDiscriminatorConfig = field(default_factory=MultiscaleDiscriminatorConfig.pcavs)
    audio_scale: float = 1.2
    identity_size: int | None = None
    content_size: int | None = None

    def __post_init__(self) -> None:
        converters = {
            "identity": IdentityEncoderConfig.from_dict,
            "nonidentity": NonIdentityEncoderConfig.from_dict,
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
        """Side of the images E_i encodes (``identity_size`` or ``image_size``)."""
        return int(self.identity_size or self.image_size)

    @property
    def content_input_size(self) -> int:
        """Side of the frames E_n encodes (``content_size`` or ``image_size``)."""
        return int(self.content_size or self.image_size)

    @property
    def identity_dim(self) -> int:
        return self.identity.feature_dim

    @property
    def content_dim(self) -> int:
        """Size of the speech-content space (F_c^v and F_c^a, official 512)."""
        return self.nonidentity.hidden

    @property
    def mouth_dim(self) -> int:
        return self.nonidentity.mouth_dim

    @property
    def pose_dim(self) -> int:
        return self.nonidentity.pose_dim

    @property
    def style_dim(self) -> int:
        return self.identity_dim + self.mouth_dim + self.pose_dim

    @property
    def num_identities(self) -> int:
        return self.identity.num_identities

    def validate(self) -> None:
        """Raise ValueError naming every size that does not fit the others."""
        problems = []
        if self.image_size < 8:
            problems.append(f"image_size must be >= 8, got {self.image_size}")
        if self.nonidentity.trunk.image_size != self.content_input_size:
            problems.append(f"nonidentity.trunk.image_size {self.nonidentity.trunk.image_size} != content_size "
                            f"{self.content_input_size}")
        if self.generator.image_size != self.image_size:
            problems.append(f"generator output {self.generator.image_size} px (start_size x 2^levels) != image_size "
                            f"{self.image_size}")
        if self.generator.style_dim != self.style_dim:
            problems.append(f"generator.style_dim {self.generator.style_dim} != identity {self.identity_dim} + mouth "
                            f"{self.mouth_dim} + pose {self.pose_dim} = {self.style_dim}")
        if self.generator.channels[0] != self.identity.map_channels:
            problems.append(f"generator.channels[0] {self.generator.channels[0]} != identity.map_channels "
                            f"{self.identity.map_channels}")
        if self.generator.start_size != self.identity.map_size:
            problems.append(f"generator.start_size {self.generator.start_size} != identity.map_size {self.identity.map_size}")
        if self.audio.backbone.embedding != self.content_dim:
            problems.append(f"audio.backbone.embedding {self.audio.backbone.embedding} != nonidentity.hidden "
                            f"{self.content_dim} (the shared speech-content space)")
        if self.audio.mouth_dim is not None:
            problems.append("audio.mouth_dim must be null for PC-AVS (E_n's mouth_embed maps the audio feature)")
        if self.audio_scale <= 0:
            problems.append(f"audio_scale must be > 0, got {self.audio_scale}")
        if self.identity_size is not None and self.identity_size < 32:
            problems.append(f"identity_size must be >= 32 or null, got {self.identity_size}")
        if self.content_size is not None and self.content_size < 8:
            problems.append(f"content_size must be >= 8 or null, got {self.content_size}")
        if problems:
            raise ValueError("inconsistent PC-AVS config: " + "; ".join(problems))

    # -- presets ----------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides: Any) -> "PCAVSConfig":
        """The published PC-AVS networks at 224 px (reference-facts; official checkpoint shapes)."""
        return replace(cls(), **overrides) if overrides else cls()

    @classmethod
    def tiny(cls, image_size: int = 56, num_identities: int = 8, identity_size: int | None = None,
             map_size: int | None = None, content_size: int | None = None, **overrides: Any) -> "PCAVSConfig":
        """A CPU-trainable PC-AVS: the same layout with narrow widths.

        image_size:    generated frame side = map_size * 2^k (k = 1..5).
        map_size:      side of the identity map the generator starts from (default image_size / 4).
        identity_size: side of the reference E_i sees (None: image_size). E_i's layer4 map has
                       1/32 of it with torchvision's strides; the SynthTalk config sets E_i's
                       ``backbone.strides`` to 1, 2, 1, 1 for a 28 x 28 map of the 224 px reference.
        content_size:  side of the frames E_n sees (None: image_size).
        """
        start = int(map_size or max(1, image_size // 4))
        levels = (image_size // start).bit_length() - 1
        if start * 2 ** levels != image_size or not 1 <= levels <= 5:
            raise ValueError(f"PCAVSConfig.tiny: image_size must be map_size * 2^k (k = 1..5), got {image_size} "
                             f"and map_size {start}")
        width, content, pose = 64, 64, 12
        cfg = cls(
            image_size=image_size,
            identity=IdentityEncoderConfig(
                backbone=ResNetConfig(block="basic", layers=(1, 1, 1, 1), widths=(16, 32, 64, width), stem_width=16,
                                      groups=1, width_per_group=64, num_classes=8),
                map_channels=width, map_size=start, num_identities=num_identities),
            nonidentity=NonIdentityEncoderConfig(
                trunk=FANConfig(stem_width=16, widths=(16, 32, 32), hourglass_depth=2, num_heatmaps=16,
                                feature_dim=content, image_size=int(content_size or image_size), dropout=0.0),
                hidden=content, mouth_dim=content - pose, pose_dim=pose, num_identities=num_identities),
            audio=AudioEncoderConfig(
                backbone=ResNetSEConfig(channels=(8, 16, 32, 32), layers=(1, 1, 1, 1), reduction=4,
                                        attention_hidden=16, embedding=content),
                num_identities=num_identities),
            generator=ModulatedGeneratorConfig(style_dim=width + content, start_size=start,
                                               channels=(width,) + (48, 32, 32, 16, 16)[:levels], n_mlp=0),
            discriminator=MultiscaleDiscriminatorConfig.tiny(),
            audio_scale=1.0,
            identity_size=identity_size,
            content_size=content_size,
        )
        return replace(cfg, **overrides) if overrides else cfg


class PCAVSEncodings(NamedTuple):
    """What `PCAVS.encode` returns for N generated frames (identity repeated per frame).

    identity: (N, F) f_i of the reference; identity_map: (N, C0, s0, s0); mouth: (N, M) the
    mouth style part; pose: (N, P) the pose code."""

    identity: torch.Tensor
    identity_map: torch.Tensor
    mouth: torch.Tensor
    pose: torch.Tensor


def build_discriminator(config: PCAVSConfig) -> MultiscaleDiscriminator:
    """The training discriminator ``netD`` sized by ``config.discriminator``."""
    return MultiscaleDiscriminator(config.discriminator)


class PCAVS(nn.Module):
    """The PC-AVS generation model: ``netV``, ``netE``, ``netA_sync``, ``netG`` (see the module docstring)."""

    def __init__(self, config: PCAVSConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = PCAVSConfig.paper()
        elif isinstance(config, dict):
            config = PCAVSConfig.from_dict(config)
        self.config = config
        self.netV = IdentityEncoder(config.identity)
        self.netE = NonIdentityEncoder(config.nonidentity)
        self.netA_sync = AudioEncoder(config.audio)
        self.netG = ModulatedGenerator(config.generator)

    # -- encoders ---------------------------------------------------------------------------
    def identity(self, reference: torch.Tensor):
        """Reference images (B, 3, S, S) or (B, R, 3, S, S) -> `IdentityOutput` (feature, map, logits)."""
        return self.netV(reference)

    def audio_content(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel windows (N, 1, 80, 20) or (B, T, 1, 80, 20) -> F_c^a (N or B*T, content_dim)."""
        return self.netA_sync.forward_feature(mel)

    def nonidentity(self, images: torch.Tensor):
        """Frames (N, 3, Sc, Sc) or (B, T, 3, Sc, Sc) (Sc = ``content_input_size``) -> `NonIdentityOutput`
        (F_n, F_c^v, mouth style, pose)."""
        return self.netE(images)

    def pose_code(self, images: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, Sc, Sc) or (B, T, 3, Sc, Sc) -> pose codes (N or B*T, pose_dim)."""
        return self.netE.pose(self.netE.forward_feature(images))

    def mouth_style(self, content: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Speech-content features (N, content_dim) -> mouth style part (N, mouth_dim)."""
        return self.netE.mouth_embed(content * scale if scale != 1.0 else content)

    # -- generator --------------------------------------------------------------------------
    def style(self, identity: torch.Tensor, mouth: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """The style vector f_cat = [f_i, mouth, pose]: (N, F), (N, M), (N, P) -> (N, style_dim)."""
        return torch.cat([identity, mouth, pose], dim=1)

    def render(self, identity: torch.Tensor, identity_map: torch.Tensor, mouth: torch.Tensor, pose: torch.Tensor,
               noise_mode: str | None = None) -> torch.Tensor:
        """G(f_cat, identity map) -> (N, 3, S, S) in (-1, 1)."""
        return self.netG(self.style(identity, mouth, pose), identity_map=identity_map, noise_mode=noise_mode)

    def forward(self, reference: torch.Tensor, mel: torch.Tensor, pose_images: torch.Tensor | None = None,
                pose: torch.Tensor | None = None, audio_scale: float | None = None,
                noise_mode: str | None = None) -> torch.Tensor:
        """Audio-driven generation of T frames for one identity.

        reference: (1, 3, Sr, Sr) or (1, R, 3, Sr, Sr) (Sr = ``reference_size``); mel: (T, 1, 80, 20)
        windows of the driving audio; pose_images: (T, 3, Sc, Sc) pose-source frames (Sc =
        ``content_input_size``), or pose: (T, P) / (1, P) codes; neither = the reference's own pose
        (fixed pose, the reference resized to Sc).
        audio_scale: None = ``config.audio_scale``.
        Returns (T, 3, S, S) in (-1, 1).
        """
        t = mel.shape[0]
        ident = self.netV(reference)
        if pose is None:
            if pose_images is None:
                pose_images = reference if reference.dim() == 4 else reference[:, 0]
                size = self.config.content_input_size
                if pose_images.shape[-1] != size:
                    pose_images = torch.nn.functional.interpolate(pose_images, size=(size, size), mode="bilinear",
                                                                  align_corners=False, antialias=True)
            pose = self.pose_code(pose_images)
        pose = pose.expand(t, -1) if pose.shape[0] == 1 else pose
        scale = self.config.audio_scale if audio_scale is None else audio_scale
        mouth = self.mouth_style(self.audio_content(mel), scale)
        return self.render(ident.feature.expand(t, -1), ident.feature_map.expand(t, -1, -1, -1), mouth, pose,
                           noise_mode=noise_mode)
