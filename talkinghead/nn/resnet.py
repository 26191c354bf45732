"""ResNet / ResNeXt with torchvision's parameter names, and the PC-AVS / PD-FGC identity encoder.

`ResNet(ResNetConfig())` is torchvision's ``resnext50_32x4d`` layer for layer: the same module
names (``conv1``, ``bn1``, ``layer1``..``layer4`` of ``Bottleneck`` blocks with ``conv1..3``,
``bn1..3`` and ``downsample.0`` (1x1 conv) / ``downsample.1`` (BN), ``fc``), the same shapes and
the same initialisation, so torchvision's ImageNet file (asset ``"resnext50_32x4d"``) loads with
``strict=True``. Other configs change the stage widths / depths / groups for a tiny CPU model.

`IdentityEncoder` is the identity encoder E_i of PC-AVS (official ``netV``, ``ResNeXtEncoder``)
and the appearance encoder of PD-FGC: the ResNeXt under ``model.*`` (its 1000-way ``model.fc``
is kept, unused, because the official checkpoints hold it), ``conv1x1`` (2048->512, 1x1, bias)
and ``fc`` (2048 -> identities: 5830 for PC-AVS, 5995 for PD-FGC). Its state-dict keys equal the
official ones, so the published ``latest_net_V.pth`` / ``appearance_model.pth`` load with an
identity key map.

Input range: the official encoders get the [-1, 1] RGB face crop directly (no ImageNet
normalisation, although ``model.*`` is initialised from ImageNet weights); so do ours.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nn.config import ConfigDict

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "IdentityEncoder",
    "IdentityEncoderConfig",
    "IdentityOutput",
    "ResNet",
    "ResNetConfig",
    "load_imagenet",
    "resnext50_32x4d",
]


def _conv3x3(inp: int, out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet-18/34 block: 3x3 conv-BN-ReLU, 3x3 conv-BN, + identity/downsample, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64 (as torchvision)")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 v1.5 / ResNeXt bottleneck (stride on the 3x3 conv).

    1x1 conv (inplanes -> width) BN ReLU, 3x3 grouped conv (width -> width, stride) BN ReLU,
    1x1 conv (width -> planes * 4) BN, + identity/downsample, ReLU;
    width = int(planes * width_per_group / 64) * groups (ResNeXt50-32x4d: 128, 256, 512, 1024).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _as_ints(values: Sequence[int], name: str, length: int) -> tuple[int, ...]:
    items = tuple(int(v) for v in values)
    if len(items) != length or min(items) < 1:
        raise ValueError(f"{name} needs {length} positive integers, got {values!r}")
    return items


@dataclass(frozen=True)
class ResNetConfig(ConfigDict):
    """Sizes of a torchvision-style ResNet. The defaults are ``resnext50_32x4d``.

    block:           ``"bottleneck"`` (ResNet-50+/ResNeXt) or ``"basic"`` (ResNet-18/34).
    layers:          blocks per stage ``layer1..layer4`` (ResNeXt50: 3, 4, 6, 3).
    widths:          ``planes`` of each stage (64, 128, 256, 512); a stage outputs
                     ``planes * expansion`` channels (bottleneck: x4, so 2048 at the end).
    stem_width:      output channels of the 7x7/2 stem conv (64).
    groups:          grouped-conv cardinality of the bottleneck 3x3 convs (ResNeXt 32; ResNet 1).
    width_per_group: torchvision's ``width_per_group`` (ResNeXt 4; ResNet 64).
    num_classes:     outputs of ``fc`` (ImageNet 1000).
    in_channels:     image channels (3).
    strides:         stride of each stage ``layer1..layer4`` (torchvision: 1, 2, 2, 2). As in
                     torchvision, a stage of stride 1 whose width does not change has no
                     ``downsample`` branch; no other parameter depends on it. The tiny PC-AVS
                     identity encoder uses 1, 2, 1, 1 to keep a 28 x 28 map at 224 px.

    Tiny example: ``ResNetConfig(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_width=8,
    groups=1, width_per_group=64, num_classes=10)``.
    """

    block: str = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64
    groups: int = 32
    width_per_group: int = 4
    num_classes: int = 1000
    in_channels: int = 3
    strides: tuple[int, ...] = (1, 2, 2, 2)

    def __post_init__(self) -> None:
        if self.block not in _BLOCKS:
            raise ValueError(f"ResNetConfig.block must be one of {sorted(_BLOCKS)}, got {self.block!r}")
        object.__setattr__(self, "layers", _as_ints(self.layers, "ResNetConfig.layers", 4))
        object.__setattr__(self, "widths", _as_ints(self.widths, "ResNetConfig.widths", 4))
        object.__setattr__(self, "strides", _as_ints(self.strides, "ResNetConfig.strides", 4))
        if any(s not in (1, 2) for s in self.strides):
            raise ValueError(f"ResNetConfig.strides must be 1 or 2 per stage, got {self.strides}")
        for name in ("stem_width", "groups", "width_per_group", "num_classes", "in_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ResNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.block == "basic" and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError("ResNetConfig: block='basic' needs groups=1 and width_per_group=64")
        for planes in self.widths:
            if int(planes * (self.width_per_group / 64.0)) < 1:
                raise ValueError(f"ResNetConfig: stage width {planes} x width_per_group {self.width_per_group} / 64 "
                                 "rounds to 0 channels per group; raise width_per_group")

    @property
    def expansion(self) -> int:
        return _BLOCKS[self.block].expansion

    @property
    def out_channels(self) -> int:
        """Channels of the layer4 map and of the pooled feature (ResNeXt50: 2048)."""
        return self.widths[-1] * self.expansion

    @property
    def is_resnext50_32x4d(self) -> bool:
        return self == ResNetConfig()


class ResNet(nn.Module):
    """torchvision's ResNet with the same module names (stage strides ``config.strides``,
    torchvision's 1, 2, 2, 2 by default).

    forward: (B, C, H, W) -> (B, num_classes) logits.
    forward_features: (B, C, H, W) -> layer4 map (B, out_channels, H/32, W/32) (7x7 at 224), H/s
    for another product s of 4 and the stage strides.
    pool: layer4 map -> (B, out_channels) global average.
    Initialisation as torchvision: kaiming-normal (fan_out) convs, BN weight 1 bias 0,
    PyTorch's default Linear.
    """

    def __init__(self, config: ResNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or ResNetConfig()
        block = _BLOCKS[cfg.block]
        self.inplanes = cfg.stem_width
        self.conv1 = nn.Conv2d(cfg.in_channels, cfg.stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, cfg.widths[0], cfg.layers[0], cfg.strides[0])
        self.layer2 = self._make_layer(block, cfg.widths[1], cfg.layers[1], cfg.strides[1])
        self.layer3 = self._make_layer(block, cfg.widths[2], cfg.layers[2], cfg.strides[2])
        self.layer4 = self._make_layer(block, cfg.widths[3], cfg.layers[3], cfg.strides[3])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cfg.out_channels, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        cfg = self.config
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, cfg.groups, cfg.width_per_group)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=cfg.groups, base_width=cfg.width_per_group))
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(features), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.forward_features(x)))


def resnext50_32x4d(num_classes: int = 1000, **overrides: Any) -> ResNet:
    """torchvision's ResNeXt50-32x4d (25.0 M parameters at 1000 classes); `overrides` replace
    `ResNetConfig` fields (e.g. ``layers=(1, 1, 1, 1)`` for a test-size model)."""
    return ResNet(ResNetConfig(num_classes=num_classes, **overrides))


def load_imagenet(model: nn.Module, asset: str = "resnext50_32x4d", required: bool = True) -> bool:
    """Initialise a `ResNet` (or an `IdentityEncoder`'s ``model``) from torchvision's ImageNet file.

    The file is found through `talkinghead.weights` (``$TALKINGHEAD_HOME/resnext50_32x4d-7cdf4587.pth``).
    When it is absent: with `required` a `talkinghead.weights.MissingWeightsError` naming it is
    raised; without, nothing is loaded and False is returned (the caller keeps the random
    initialisation and should say so). All tensors are loaded (``strict=True``, so the config must
    be the ``resnext50_32x4d`` one with 1000 classes), including the 1000-way ``fc``; BatchNorm
    ``num_batches_tracked`` counters absent from old torchvision files are filled with 0 by
    PyTorch. A file whose shapes do not fit is a ValueError listing them. Returns True when loaded.
    """
    from talkinghead import weights

    target = model.model if isinstance(model, IdentityEncoder) else model
    if not isinstance(target, ResNet):
        raise TypeError(f"load_imagenet needs a ResNet or IdentityEncoder, got {type(model).__name__}")
    if not required and not weights.is_available(asset):
        return False
    state = weights.load(asset)
    ours = target.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
             for k, v in state.items() if k in ours and tuple(v.shape) != tuple(ours[k].shape)]
    if wrong:
        raise ValueError(f"{weights.asset(asset).file} does not fit this ResNet config ({target.config}); "
                         f"mismatched shapes: {wrong[:5]}{' ...' if len(wrong) > 5 else ''}")
    target.load_state_dict(dict(state), strict=True)
    return True


# ---------------------------------------------------------------------------------------------
# PC-AVS / PD-FGC identity (appearance) encoder
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentityEncoderConfig(ConfigDict):
    """Sizes of the identity encoder. The defaults are the official PC-AVS ``netV``.

    backbone:       the ResNet under ``model.*`` (ResNeXt50-32x4d with its 1000-way ``fc``).
    map_channels:   output channels of ``conv1x1`` on the layer4 map (512).
    map_size:       side of the adaptive-average-pooled identity map (7, what the generator
                    starts from; the layer4 map is already 7x7 at 224 px).
    num_identities: classes of the identity classifier ``fc`` (PC-AVS 5830, PD-FGC 5995).
    """

    backbone: ResNetConfig = field(default_factory=ResNetConfig)
    map_channels: int = 512
    map_size: int = 7
    num_identities: int = 5830

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            object.__setattr__(self, "backbone", ResNetConfig.from_dict(self.backbone))
        for name in ("map_channels", "map_size", "num_identities"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"IdentityEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def feature_dim(self) -> int:
        """Size of the pooled identity feature (official 2048)."""
        return self.backbone.out_channels

    @classmethod
    def pdfgc(cls) -> "IdentityEncoderConfig":
        """The PD-FGC appearance encoder: as PC-AVS but 5995 identities."""
        return cls(num_identities=5995)


class IdentityOutput(NamedTuple):
    """feature: (B, 2048) pooled layer4 feature (the identity part of the style vector);
    feature_map: (B, 512, 7, 7) `conv1x1` of layer4, adaptive-pooled (the generator's input map);
    logits: (B, num_identities) identity classifier scores."""

    feature: torch.Tensor
    feature_map: torch.Tensor
    logits: torch.Tensor


class IdentityEncoder(nn.Module):
    """PC-AVS identity encoder E_i (official ``netV``) / PD-FGC appearance encoder.

    Submodules (= official state-dict prefixes): ``model`` (ResNeXt50-32x4d, torchvision names,
    1000-way ``model.fc`` present but unused), ``conv1x1`` (Conv2d 2048->512, 1x1, bias),
    ``fc`` (Linear 2048 -> num_identities).

    forward(images): images (B, 3, H, W) or (B, N, 3, H, W), RGB in [-1, 1] (official 224x224).
    With N reference frames (official ``num_inputs``), the pooled features and the maps are
    averaged over N before the classifier, as in the official code. Returns `IdentityOutput`.
    """

    def __init__(self, config: IdentityEncoderConfig | None = None):
        super().__init__()
        self.config = cfg = config or IdentityEncoderConfig()
        self.model = ResNet(cfg.backbone)
        self.conv1x1 = nn.Conv2d(cfg.feature_dim, cfg.map_channels, kernel_size=1, padding=0)
        self.fc = nn.Linear(cfg.feature_dim, cfg.num_identities)

    def forward_feature(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> pooled feature (B, 2048), conv1x1 map (B, 512, H/32, W/32) (not resized)."""
        x = self.model.forward_features(images)
        return self.model.pool(x), self.conv1x1(x)

    def forward(self, images: torch.Tensor) -> IdentityOutput:
        if images.dim() == 5:
            b, n = images.shape[:2]
            images = images.reshape(b * n, *images.shape[2:])
        elif images.dim() == 4:
            b, n = images.shape[0], 1
        else:
            raise ValueError(f"IdentityEncoder expects (B, 3, H, W) or (B, N, 3, H, W), got {tuple(images.shape)}")
        feature, fmap = self.forward_feature(images)
        size = self.config.map_size
        fmap = F.adaptive_avg_pool2d(fmap, (size, size))
        feature = feature.view(b, n, -1).mean(1)
        fmap = fmap.view(b, n, *fmap.shape[1:]).mean(1)
        return IdentityOutput(feature, fmap, self.fc(feature))

    def load_imagenet(self, required: bool = True) -> bool:
        """Initialise ``model.*`` from torchvision's ImageNet ResNeXt50 when present (see
        `load_imagenet`); ``conv1x1`` and the identity ``fc`` keep their initialisation."""
        return load_imagenet(self, required=required)
