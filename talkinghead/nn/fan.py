"""FAN-style hourglass encoder ("FAN_use") and the PC-AVS / PD-FGC non-identity (motion) encoders.

`FAN(FANConfig())` is the official ``FAN_use`` trunk of PC-AVS (``models/networks/
FAN_feature_extractor.py``; PD-FGC ships the same file) with the official module names:

* ``conv1`` Conv2d 3->64, 7x7/2, pad 3, bias; ``bn1``; ReLU
* ``conv2`` ConvBlock 64->128, then max-pool 2; ``conv3`` ConvBlock 128->128; ``conv4`` ConvBlock 128->256
* ``m0`` one hourglass of depth 4 over 256-channel ConvBlocks (modules ``b1_<l>``, ``b2_<l>``,
  ``b3_<l>`` per level l = 4..1 and ``b2_plus_1``; dropout 0.5 on the upper branch; lower branch
  max-pool 2, bilinear upsampling back)
* ``top_m_0`` ConvBlock 256->256; ``conv_last0`` Conv 1x1 256->256 (bias); ``bn_end0``; ReLU;
  ``l0`` Conv 1x1 256->68 (the landmark heatmaps); ``bn5``; ReLU
* ``conv6`` Conv 68->1, 3x3/2, pad 1 -> (B, 1, 28, 28) at 224 px; flatten; ReLU; ``fc`` 784->512.

ConvBlock (``conv2``, ``conv3``, ... and every hourglass module) is the pre-activation block of
Bulat & Tzimiropoulos: ``bn1``-ReLU-``conv1`` (3x3, out/2), ``bn2``-ReLU-``conv2`` (3x3, out/4),
``bn3``-ReLU-``conv3`` (3x3, out/4), the three outputs concatenated (= out channels), plus the
input or, when the widths differ, ``downsample`` = Sequential(BN, ReLU, Conv 1x1 no bias) at
indices 0, 1, 2. Convs inside ConvBlocks have no bias.

`NonIdentityEncoder` is PC-AVS's E_n (official ``netE``, class ``FanEncoder``): the trunk under
``model.*`` and the heads ``to_mouth``, ``mouth_embed``, ``to_headpose``, ``headpose_embed`` plus
the training-only classifiers ``classifier``, ``mouth_fc``, ``headpose_fc``. `MotionEncoder` is
PD-FGC's motion encoder (the same trunk, heads with BatchNorm1d, eye and emotion branches, and
optionally the training-only heads of its checkpoint). Both are `HeadedFANEncoder`s: the trunk
under ``model`` plus named heads ``to_<name>`` (mapper) -> ``<name>_embed`` (code), declared in
the official registration order, and the shared training classifiers.

Deviations: none in the official configuration. The official ``F.upsample(mode='bilinear')``
(PyTorch >= 0.4.0 semantics) is ``F.interpolate(..., align_corners=False)`` here. The unused,
parameter-free ``avgpool`` attribute of ``FAN_use`` is not created. For other image sizes the
``fc`` input is the size ``conv6`` leaves (``FANConfig.fc_in``), official 28 x 28 = 784.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nn.config import ConfigDict

__all__ = [
    "FAN",
    "FANConfig",
    "ConvBlock",
    "HeadedFANEncoder",
    "HourGlass",
    "MotionEncoder",
    "MotionEncoderConfig",
    "MotionOutput",
    "NonIdentityEncoder",
    "NonIdentityEncoderConfig",
    "NonIdentityOutput",
]


def _conv3x3(inp: int, out: int) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """Pre-activation multi-scale residual block: (B, in, H, W) -> (B, out, H, W); out % 4 == 0."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        if out_planes % 4:
            raise ValueError(f"ConvBlock out_planes must be a multiple of 4, got {out_planes}")
        half, quarter = out_planes // 2, out_planes // 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        self.downsample = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_planes),
                nn.ReLU(True),
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), 1) + residual


class HourGlass(nn.Module):
    """One hourglass of `depth` levels over `features`-channel ConvBlocks; (B, C, H, W) -> same shape.

    Level l (from `depth` down to 1): upper branch ``b1_l`` + dropout; lower branch max-pool 2,
    ``b2_l``, then the level below (or ``b2_plus_1`` at l = 1), ``b3_l``, bilinear upsampling to
    the upper branch's size; the two branches are added. H and W must be >= 2**depth.
    """

    def __init__(self, depth: int, features: int, dropout: float = 0.5):
        super().__init__()
        self.depth = depth
        self.features = features
        self.dropout = nn.Dropout(dropout)
        self._generate(depth)

    def _generate(self, level: int) -> None:
        # registration order follows the official recursion (state-dict order is the same)
        self.add_module(f"b1_{level}", ConvBlock(self.features, self.features))
        self.add_module(f"b2_{level}", ConvBlock(self.features, self.features))
        if level > 1:
            self._generate(level - 1)
        else:
            self.add_module(f"b2_plus_{level}", ConvBlock(self.features, self.features))
        self.add_module(f"b3_{level}", ConvBlock(self.features, self.features))

    def _forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up1 = self.dropout(self._modules[f"b1_{level}"](x))
        low = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        if level > 1:
            low = self._forward(level - 1, low)
        else:
            low = self._modules[f"b2_plus_{level}"](low)
        low = self._modules[f"b3_{level}"](low)
        return up1 + F.interpolate(low, size=up1.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.depth, x)


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


@dataclass(frozen=True)
class FANConfig(ConfigDict):
    """Sizes of the FAN trunk. The defaults are the official ``FAN_use``.

    stem_width:      output channels of ``conv1`` (64).
    widths:          outputs of the ConvBlocks ``conv2``, ``conv3``, ``conv4`` (128, 128, 256); the
                     hourglass and ``top_m_0`` / ``conv_last0`` work at ``widths[-1]``. Multiples of 4.
    hourglass_depth: levels of the hourglass ``m0`` (4).
    num_heatmaps:    output channels of ``l0`` (68 landmark heatmaps).
    feature_dim:     output of ``fc`` (512).
    image_size:      square input side (224); the ``fc`` input is `fc_in` (784 at 224).
    dropout:         dropout on the hourglass's upper branches (0.5).

    Tiny example: ``FANConfig(stem_width=8, widths=(16, 16, 32), hourglass_depth=2,
    num_heatmaps=8, feature_dim=64, image_size=64)``.
    """

    stem_width: int = 64
    widths: tuple[int, ...] = (128, 128, 256)
    hourglass_depth: int = 4
    num_heatmaps: int = 68
    feature_dim: int = 512
    image_size: int = 224
    dropout: float = 0.5

    def __post_init__(self) -> None:
        widths = tuple(int(w) for w in self.widths)
        if len(widths) != 3 or min(widths) < 4 or any(w % 4 for w in widths):
            raise ValueError(f"FANConfig.widths needs 3 positive multiples of 4, got {self.widths!r}")
        object.__setattr__(self, "widths", widths)
        for name in ("stem_width", "hourglass_depth", "num_heatmaps", "feature_dim", "image_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"FANConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"FANConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.hourglass_size < 2 ** self.hourglass_depth:
            raise ValueError(f"FANConfig: image_size {self.image_size} leaves {self.hourglass_size} px at the "
                             f"hourglass, fewer than 2**hourglass_depth = {2 ** self.hourglass_depth}")

    @property
    def hourglass_size(self) -> int:
        """Side of the hourglass's input: conv 7x7/2 then max-pool 2 (56 at 224)."""
        return _conv_out(self.image_size, 7, 2, 3) // 2

    @property
    def heatmap_size(self) -> int:
        """Side of ``conv6``'s output (28 at 224)."""
        return _conv_out(self.hourglass_size, 3, 2, 1)

    @property
    def fc_in(self) -> int:
        """Input size of ``fc`` (784 at 224)."""
        return self.heatmap_size ** 2


class FAN(nn.Module):
    """The official ``FAN_use`` trunk: (B, 3, S, S) RGB in [-1, 1] -> (B, feature_dim) (official 512).

    `heatmaps(x)` gives the (B, num_heatmaps, S/4, S/4) maps after ``l0`` (before ``bn5``).
    Initialisation: PyTorch defaults (the official code overwrites them with its global init or a
    pretrained FAN landmark model that is not published with PC-AVS), except ``conv6``: its weights
    and bias start non-negative (the default values' magnitudes). ``conv6`` maps the ReLU'd (so
    non-negative) heatmaps to ONE channel that goes through a ReLU into ``fc``, so with default
    signs its output is negative at almost every position for about half the seeds (measured: 6 of
    12 seeds of the tiny trunk open the ReLU at < 2% of positions, 3 at 0%); the ReLU is then shut,
    no gradient reaches the trunk and the feature is the same for every image (a PD-FGC synth run
    trained to the end with a constant unified motion feature). Started non-negative, the ReLU is
    open everywhere and training moves the signs from there. Loaded weights replace all of this.
    """

    def __init__(self, config: FANConfig | None = None):
        super().__init__()
        self.config = cfg = config or FANConfig()
        w1, w2, w3 = cfg.widths
        self.conv1 = nn.Conv2d(3, cfg.stem_width, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(cfg.stem_width)
        self.conv2 = ConvBlock(cfg.stem_width, w1)
        self.conv3 = ConvBlock(w1, w2)
        self.conv4 = ConvBlock(w2, w3)
        self.m0 = HourGlass(cfg.hourglass_depth, w3, cfg.dropout)
        self.top_m_0 = ConvBlock(w3, w3)
        self.conv_last0 = nn.Conv2d(w3, w3, kernel_size=1, stride=1, padding=0)
        self.l0 = nn.Conv2d(w3, cfg.num_heatmaps, kernel_size=1, stride=1, padding=0)
        self.bn_end0 = nn.BatchNorm2d(w3)
        self.conv6 = nn.Conv2d(cfg.num_heatmaps, 1, 3, 2, 1)
        with torch.no_grad():  # an open ReLU after the one-channel map (see the class docstring)
            self.conv6.weight.abs_()
            self.conv6.bias.abs_()
        self.fc = nn.Linear(cfg.fc_in, cfg.feature_dim)
        self.bn5 = nn.BatchNorm2d(cfg.num_heatmaps)
        self.relu = nn.ReLU(True)

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.conv2(x), 2)
        x = self.conv4(self.conv3(x))
        x = self.top_m_0(self.m0(x))
        x = self.bn_end0(self.conv_last0(x))
        return self.l0(F.relu(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.conv6(self.relu(self.bn5(self.heatmaps(x))))
        net = self.relu(net.flatten(1))
        return self.fc(net)


def _mapper(width_in: int, hidden: int, batchnorm: bool) -> nn.Sequential:
    """Linear-ReLU-Linear (PC-AVS) or Linear-ReLU-BatchNorm1d-Linear (PD-FGC)."""
    layers: list[nn.Module] = [nn.Linear(width_in, hidden), nn.ReLU()]
    if batchnorm:
        layers.append(nn.BatchNorm1d(hidden))
    layers.append(nn.Linear(hidden, hidden))
    return nn.Sequential(*layers)


def _embed(hidden: int, out: int) -> nn.Sequential:
    """ReLU then Linear (module indices 0, 1 as the official ``*_embed`` / ``*_fc``)."""
    return nn.Sequential(nn.ReLU(), nn.Linear(hidden, out))


def _flatten_images(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.dim() == 5:
        x = x.reshape(-1, *x.shape[2:])
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W) or (B, T, 3, H, W), got {tuple(x.shape)}")
    if x.shape[-2:] != (size, size):
        raise ValueError(f"the FAN trunk was built for {size}x{size} images, got {tuple(x.shape[-2:])}")
    return x


class HeadedFANEncoder(nn.Module):
    """The FAN trunk (``model``) plus named heads: ``to_<name>`` (Linear-ReLU-[BatchNorm1d]-Linear,
    hidden wide) and ``<name>_embed`` (ReLU, Linear hidden -> code size), and the training-only
    classifiers ``classifier`` / ``mouth_fc`` / ``headpose_fc`` shared by PC-AVS's E_n and PD-FGC's
    motion encoder. Subclasses register their modules in the official order with `_add_head` /
    `_add_classifier` / `_add_head_classifiers` (so state dicts and parameter orders are the official ones).

    `config` must have ``trunk``, ``hidden``, ``pose_dim``, ``num_identities`` and ``clip_len``.
    Images: (B, 3, S, S) or (B, T, 3, S, S), RGB in [-1, 1], S = ``trunk.image_size``.
    """

    #: The head names, in registration order (filled by `_add_head`).
    heads: tuple[str, ...]

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.heads = ()
        self.training_heads = False
        self.model = FAN(config.trunk)

    def _add_head(self, name: str, dim: int, batchnorm: bool) -> None:
        """Register ``to_<name>`` (trunk feature -> hidden) and ``<name>_embed`` (hidden -> dim)."""
        cfg = self.config
        self.add_module(f"to_{name}", _mapper(cfg.trunk.feature_dim, cfg.hidden, batchnorm))
        self.add_module(f"{name}_embed", _embed(cfg.hidden, dim))
        self.heads = self.heads + (name,)

    def _add_classifier(self) -> None:
        """``classifier`` = Linear(feat, hidden), ReLU, Linear(hidden, num_identities)."""
        cfg = self.config
        self.classifier = nn.Sequential(nn.Linear(cfg.trunk.feature_dim, cfg.hidden), nn.ReLU(),
                                        nn.Linear(cfg.hidden, cfg.num_identities))
        self.training_heads = True

    def _add_head_classifiers(self, which: str) -> None:
        """``mouth_fc`` (ReLU, Linear(hidden * clip_len, ids)) or ``headpose_fc`` (ReLU,
        Linear(pose_dim * clip_len, ids))."""
        cfg = self.config
        width = cfg.hidden if which == "mouth" else cfg.pose_dim
        self.add_module(f"{which}_fc", _embed(width * cfg.clip_len, cfg.num_identities))

    def forward_feature(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) or (B, T, 3, S, S) -> F_n (B or B*T, trunk.feature_dim)."""
        return self.model(_flatten_images(images, self.config.trunk.image_size))

    def embed(self, name: str, feature: torch.Tensor) -> torch.Tensor:
        """F_n (N, feat) -> the code of head `name`: ``<name>_embed(to_<name>(F_n))``."""
        if name not in self.heads:
            raise ValueError(f"{type(self).__name__} has heads {self.heads}, not {name!r}")
        return self._modules[f"{name}_embed"](self._modules[f"to_{name}"](feature))

    def pose(self, feature: torch.Tensor) -> torch.Tensor:
        """F_n (N, feat) -> pose code (N, pose_dim)."""
        return self.embed("headpose", feature)

    def _require_heads(self) -> None:
        if not self.training_heads:
            raise RuntimeError(f"this {type(self).__name__} was built without its training-only heads")

    def identity_logits(self, feature: torch.Tensor, num_clips: int = 1) -> torch.Tensor:
        """``classifier`` on F_n (B * num_clips, feat) averaged over the clips: (B, num_identities)."""
        self._require_heads()
        return self.classifier(feature.reshape(-1, num_clips, feature.shape[-1]).mean(1))

    def mouth_logits(self, mouth: torch.Tensor) -> torch.Tensor:
        """``mouth_fc`` on (B * clip_len, hidden) ``to_mouth`` features: (B, num_identities)."""
        self._require_heads()
        return self.mouth_fc(mouth.reshape(-1, self.config.clip_len * mouth.shape[-1]))

    def pose_logits(self, pose: torch.Tensor) -> torch.Tensor:
        """``headpose_fc`` on (B * clip_len, pose_dim) pose codes: (B, num_identities)."""
        self._require_heads()
        return self.headpose_fc(pose.reshape(-1, self.config.clip_len * pose.shape[-1]))


# ---------------------------------------------------------------------------------------------
# PC-AVS non-identity encoder
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NonIdentityEncoderConfig(ConfigDict):
    """Sizes of PC-AVS's E_n. The defaults are the official ``netE`` of the published checkpoint.

    trunk:            the FAN trunk (``model.*``); its ``feature_dim`` (512) feeds every head.
    hidden:           width of ``to_mouth`` / ``to_headpose`` (512, = the visual speech-content
                      feature compared with the audio feature, so it must equal the audio
                      encoder's embedding size).
    mouth_dim:        output of ``mouth_embed`` (official 512 - pose_dim = 500).
    pose_dim:         output of ``headpose_embed``, the pose code (12).
    num_identities:   classes of the training-only classifiers (official ``num_classes`` 5830).
    clip_len:         frames per training clip: ``mouth_fc`` takes clip_len x hidden inputs,
                      ``headpose_fc`` clip_len x pose_dim (the published checkpoint: 1).
    classifier_heads: build ``classifier``, ``mouth_fc``, ``headpose_fc`` (True; they are in the
                      official checkpoint; False drops them for inference-only models).
    """

    trunk: FANConfig = field(default_factory=FANConfig)
    hidden: int = 512
    mouth_dim: int = 500
    pose_dim: int = 12
    num_identities: int = 5830
    clip_len: int = 1
    classifier_heads: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.trunk, dict):
            object.__setattr__(self, "trunk", FANConfig.from_dict(self.trunk))
        for name in ("hidden", "mouth_dim", "pose_dim", "num_identities", "clip_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"NonIdentityEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")


class NonIdentityOutput(NamedTuple):
    """feature: (N, 512) non-identity feature F_n; mouth: (N, 512) visual speech-content feature
    F_c^v (``to_mouth``, in the audio feature's space); mouth_embed: (N, 500) its style part
    (``mouth_embed``); pose: (N, 12) pose code (``headpose_embed(to_headpose(F_n))``).
    N = B, or B*T for (B, T, 3, H, W) input (frames flattened in order)."""

    feature: torch.Tensor
    mouth: torch.Tensor
    mouth_embed: torch.Tensor
    pose: torch.Tensor


class NonIdentityEncoder(HeadedFANEncoder):
    """PC-AVS non-identity encoder E_n (official ``netE`` = ``FanEncoder``).

    Submodules (= official state-dict prefixes):
      ``model``           FAN trunk (`FAN`)
      ``to_mouth``        Linear(512, 512), ReLU, Linear(512, 512)          (keys .0, .2)
      ``mouth_embed``     ReLU, Linear(512, 500)                             (key .1)
      ``to_headpose``     Linear(512, 512), ReLU, Linear(512, 512)          (keys .0, .2)
      ``headpose_embed``  ReLU, Linear(512, 12)                              (key .1)
      training only (``classifier_heads``):
      ``classifier``      Linear(512, 512), ReLU, Linear(512, 5830): identity from F_n, averaged
                          over the clips of a sample                          (keys .0, .2)
      ``mouth_fc``        ReLU, Linear(512 * clip_len, 5830): word/identity scores of the
                          clip's concatenated ``to_mouth`` features          (key .1)
      ``headpose_fc``     ReLU, Linear(12 * clip_len, 5830): scores of the clip's concatenated
                          pose codes (a disentanglement adversary)           (key .1)

    Images: (B, 3, S, S) or (B, T, 3, S, S), RGB in [-1, 1], S = ``trunk.image_size`` (224).
    PC-AVS inference scales the *audio* content feature by 1.2 before ``mouth_embed`` (a method
    concern, not done here).
    """

    def __init__(self, config: NonIdentityEncoderConfig | None = None):
        cfg = config or NonIdentityEncoderConfig()
        super().__init__(cfg)
        # registration order = the official FanEncoder's (state-dict and parameter order)
        if cfg.classifier_heads:
            self._add_classifier()
        self._add_head("mouth", cfg.mouth_dim, batchnorm=False)
        if cfg.classifier_heads:
            self._add_head_classifiers("mouth")
        self._add_head("headpose", cfg.pose_dim, batchnorm=False)
        if cfg.classifier_heads:
            self._add_head_classifiers("headpose")

    def mouth(self, feature: torch.Tensor) -> torch.Tensor:
        """F_n (N, 512) -> visual speech-content feature (N, 512)."""
        return self.to_mouth(feature)

    def forward(self, images: torch.Tensor) -> NonIdentityOutput:
        feature = self.forward_feature(images)
        mouth = self.to_mouth(feature)
        return NonIdentityOutput(feature, mouth, self.mouth_embed(mouth), self.pose(feature))


# ---------------------------------------------------------------------------------------------
# PD-FGC motion encoder
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MotionEncoderConfig(ConfigDict):
    """Sizes of PD-FGC's motion encoder. The defaults are what the official inference code builds
    from ``motion_model.pth`` (``FanEncoder`` of Dorniwang/PD-FGC-inference, configs/inference.yaml).

    trunk:          the FAN trunk (same as PC-AVS).
    hidden:         width of the ``to_*`` mappers (512; the ``to_mouth`` feature is compared with
                    the 512-d audio feature, so it must equal the audio encoder's embedding).
    mouth_dim:      ``mouth_embed`` output (official 512 - pose_dim - eye_dim = 500).
    pose_dim:       ``headpose_embed`` output (6).
    eye_dim:        ``eye_embed`` output (6: blink in dims 0, 1, 4, 5, gaze in dims 2, 3).
    emo_dim:        ``emo_embed`` output (30).
    training_heads: also build the training-only heads the published checkpoint holds and the
                    official loader skips (``classifier``, ``mouth_fc``, ``headpose_fc``,
                    ``to_feature``, ``to_embed``; False = the official inference module).
    num_identities: classes of ``classifier`` / ``mouth_fc`` / ``headpose_fc`` (official
                    ``data.num_classes`` 5995).
    clip_len:       frames per training clip concatenated by ``mouth_fc`` / ``headpose_fc`` (1).
    motion_dim:     output of ``to_embed``, the stage-1 unified motion code (512).
    """

    trunk: FANConfig = field(default_factory=FANConfig)
    hidden: int = 512
    mouth_dim: int = 500
    pose_dim: int = 6
    eye_dim: int = 6
    emo_dim: int = 30
    training_heads: bool = False
    num_identities: int = 5995
    clip_len: int = 1
    motion_dim: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.trunk, dict):
            object.__setattr__(self, "trunk", FANConfig.from_dict(self.trunk))
        for name in ("hidden", "mouth_dim", "pose_dim", "eye_dim", "emo_dim", "num_identities", "clip_len",
                     "motion_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MotionEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")


class MotionOutput(NamedTuple):
    """feature: (N, 512) F_n; mouth: (N, 512) ``to_mouth`` feature (compared with the audio);
    pose: (N, 6); eye: (N, 6); emo: (N, 30) embeddings."""

    feature: torch.Tensor
    mouth: torch.Tensor
    pose: torch.Tensor
    eye: torch.Tensor
    emo: torch.Tensor


class MotionEncoder(HeadedFANEncoder):
    """PD-FGC motion encoder (official ``FanEncoder`` of PD-FGC-inference).

    Submodules (= official state-dict prefixes): ``model`` (FAN trunk); ``to_mouth``,
    ``to_headpose``, ``to_eye``, ``to_emo`` = Linear(512, 512), ReLU, BatchNorm1d(512),
    Linear(512, 512) (keys .0, .2, .3); ``mouth_embed`` (ReLU, Linear 512->500),
    ``headpose_embed`` (->6), ``eye_embed`` (->6), ``emo_embed`` (->30) (key .1).

    With ``training_heads`` also the training-only heads whose names the official loader skips.
    Their shapes are not in the released code (only their names are); they are built as the
    PC-AVS ``FanEncoder`` they descend from, and they are never loaded from the official file:
      ``classifier``   Linear(512, 512), ReLU, Linear(512, ids): identity from F_n  (keys .0, .2)
      ``mouth_fc``     ReLU, Linear(512 * clip_len, ids) on ``to_mouth`` features   (key .1)
      ``headpose_fc``  ReLU, Linear(6 * clip_len, ids) on pose codes               (key .1)
      ``to_feature``   Linear(512, 512), ReLU, BatchNorm1d(512), Linear(512, 512): the unified
                       motion feature of stage 1 (as the other mappers)             (keys .0, .2, .3)
      ``to_embed``     ReLU, Linear(512, motion_dim): its code for the stage-1 generator (key .1)

    Images: (B, 3, S, S) or (B, T, 3, S, S), RGB in [-1, 1]. The BatchNorm1d heads need N > 1 in
    training mode.
    """

    def __init__(self, config: MotionEncoderConfig | None = None):
        cfg = config or MotionEncoderConfig()
        super().__init__(cfg)
        self._add_head("mouth", cfg.mouth_dim, batchnorm=True)
        self._add_head("headpose", cfg.pose_dim, batchnorm=True)
        self._add_head("eye", cfg.eye_dim, batchnorm=True)
        self._add_head("emo", cfg.emo_dim, batchnorm=True)
        if cfg.training_heads:
            self._add_classifier()
            self._add_head_classifiers("mouth")
            self._add_head_classifiers("headpose")
            self.to_feature = _mapper(cfg.trunk.feature_dim, cfg.hidden, batchnorm=True)
            self.to_embed = _embed(cfg.hidden, cfg.motion_dim)

    def unified(self, feature: torch.Tensor) -> torch.Tensor:
        """F_n (N, 512) -> the stage-1 unified motion code ``to_embed(to_feature(F_n))`` (N, motion_dim)."""
        self._require_heads()
        return self.to_embed(self.to_feature(feature))

    def forward(self, images: torch.Tensor) -> MotionOutput:
        feature = self.forward_feature(images)
        return MotionOutput(
            feature,
            self.to_mouth(feature),
            self.embed("headpose", feature),
            self.embed("eye", feature),
            self.embed("emo", feature),
        )
