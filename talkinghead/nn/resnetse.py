"""ResNetSE34 ("thin ResNet-34 + squeeze-excitation", voxceleb_trainer) and the PC-AVS / PD-FGC audio encoders.

`ResNetSE(ResNetSEConfig())` is the network of PC-AVS's ``models/networks/audio_network.py``
(voxceleb_trainer's ``ResNetSE34V2`` without the built-in waveform front end), built with
``SEBasicBlock``, channels 32/64/128/256, blocks 3/4/6/3, strides 1/2/2/2, SE reduction 8:

* ``conv1`` Conv2d 1->32 3x3 pad 1 (**with** bias), then ReLU, then ``bn1`` (ReLU before BN, as
  the official code); ``layer1``..``layer4`` of SEBasicBlocks (``conv1`` 3x3/stride no bias,
  ReLU, ``bn1``, ``conv2`` 3x3, ``bn2``, ``se``, + identity or ``downsample`` = (1x1 conv no
  bias, BN) at indices 0, 1, ReLU); ``se.fc`` = Linear(C, C/8), ReLU, Linear(C/8, C), Sigmoid.
* The (B, 256, 10, T') map (80 mel bins / 8 = 10) is reshaped to (B, 2560, T') and pooled over
  time with attention weights from ``attention`` = Conv1d(2560, 128, 1), ReLU, BatchNorm1d(128),
  Conv1d(128, 2560, 1), Softmax over time.
* **Self-attentive pooling (SAP)**: sum_t w_t x_t -> (B, 2560), then ``fc`` 2560 -> 512. The
  official encoders never pass ``encoder_type``, so the voxceleb_trainer default "SAP" is what the
  checkpoints hold (fc 2560 -> 512); attentive *statistics* pooling ("ASP", mean and std, fc
  5120 -> 512) is available as ``pooling="ASP"`` but is not the official one.

Input: (B, 1, 80, 20) windows of the PC-AVS / PD-FGC log-mel (values in [0, 1], 80 bins, 20 mel
frames = 0.2 s, see ``talkinghead.data.audio``), or (B, T, 1, 80, 20) flattened to (B*T, ...).
The official code has an ``instancenorm`` attribute (InstanceNorm1d, no parameters) that its
forward never uses; it is not created here.

Wrappers with the official checkpoint prefixes:
* `AudioEncoder(AudioEncoderConfig())` = PC-AVS ``netA_sync`` (``ResSESyncEncoder``):
  ``model.*`` (ResNetSE, 512-d output) and ``fc`` Linear(512, 5830) (identity / word classifier
  used only in training).
* `AudioEncoder(AudioEncoderConfig.pdfgc())` = PD-FGC ``audio_model.pth`` as its inference code
  builds it: ``model.*`` and ``mouth_embed`` (ReLU, Linear 512->500). The official loader skips
  ``fc.*`` and ``model.layer4_exp`` / ``model.attention_exp`` / ``model.fc_exp`` / ``exp_embed``
  keys (a classifier and an expression branch of training that the published file may hold).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from talkinghead.nn.config import ConfigDict

__all__ = [
    "AudioEncoder",
    "AudioEncoderConfig",
    "AudioOutput",
    "ResNetSE",
    "ResNetSEConfig",
    "SEBasicBlock",
    "SELayer",
]


class SELayer(nn.Module):
    """Squeeze-excitation: channel weights from the global average, (B, C, H, W) -> same."""

    def __init__(self, channel: int, reduction: int = 8):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)


class SEBasicBlock(nn.Module):
    """voxceleb_trainer's SE basic block (conv - ReLU - BN order in the first half, as official)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 reduction: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes, reduction)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.relu(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + residual)


def _stride2(size: int) -> int:
    """Output size of a 3x3 / stride 2 / pad 1 conv."""
    return (size - 1) // 2 + 1


@dataclass(frozen=True)
class ResNetSEConfig(ConfigDict):
    """Sizes of a ResNetSE. The defaults are PC-AVS's ``netA_sync.model`` (ResNetSE34).

    channels:         widths of layer1..layer4 (32, 64, 128, 256); layer1 also sets the stem width.
    layers:           SE blocks per stage (3, 4, 6, 3).
    reduction:        SE reduction (8); every channel width must be >= reduction.
    n_mels:           mel bins of the input (80); the pooled size is channels[-1] x `freq_out`.
    attention_hidden: hidden width of the attention (128).
    embedding:        output of ``fc`` (512).
    pooling:          "SAP" (official) or "ASP" (attentive statistics; doubles the fc input).

    Tiny example: ``ResNetSEConfig(channels=(8, 16, 16, 32), layers=(1, 1, 1, 1), reduction=4,
    attention_hidden=16, embedding=64)``.
    """

    channels: tuple[int, ...] = (32, 64, 128, 256)
    layers: tuple[int, ...] = (3, 4, 6, 3)
    reduction: int = 8
    n_mels: int = 80
    attention_hidden: int = 128
    embedding: int = 512
    pooling: str = "SAP"

    def __post_init__(self) -> None:
        for name in ("channels", "layers"):
            items = tuple(int(v) for v in getattr(self, name))
            if len(items) != 4 or min(items) < 1:
                raise ValueError(f"ResNetSEConfig.{name} needs 4 positive integers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, items)
        for name in ("reduction", "n_mels", "attention_hidden", "embedding"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ResNetSEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if min(self.channels) < self.reduction:
            raise ValueError(f"ResNetSEConfig: every channel width must be >= reduction {self.reduction}, got {self.channels}")
        if self.pooling not in ("SAP", "ASP"):
            raise ValueError(f"ResNetSEConfig.pooling must be 'SAP' or 'ASP', got {self.pooling!r}")

    @property
    def freq_out(self) -> int:
        """Mel bins left after layer4 (three stride-2 stages): 10 for 80 mels."""
        return _stride2(_stride2(_stride2(self.n_mels)))

    @property
    def attention_channels(self) -> int:
        """Channels x frequency of the reshaped map (official 256 x 10 = 2560)."""
        return self.channels[-1] * self.freq_out

    @property
    def fc_in(self) -> int:
        """Input of ``fc``: 2560 (SAP) or 5120 (ASP) officially."""
        return self.attention_channels * (2 if self.pooling == "ASP" else 1)


class ResNetSE(nn.Module):
    """ResNetSE34 with the official names: (B, 1, n_mels, T) -> (B, embedding).

    Initialisation as the official class: kaiming-normal (fan_out) Conv2d weights, BatchNorm2d
    weight 1 bias 0, PyTorch defaults elsewhere.
    """

    def __init__(self, config: ResNetSEConfig | None = None):
        super().__init__()
        self.config = cfg = config or ResNetSEConfig()
        self.inplanes = cfg.channels[0]
        self.conv1 = nn.Conv2d(1, cfg.channels[0], kernel_size=3, stride=1, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.bn1 = nn.BatchNorm2d(cfg.channels[0])
        self.layer1 = self._make_layer(cfg.channels[0], cfg.layers[0], 1)
        self.layer2 = self._make_layer(cfg.channels[1], cfg.layers[1], 2)
        self.layer3 = self._make_layer(cfg.channels[2], cfg.layers[2], 2)
        self.layer4 = self._make_layer(cfg.channels[3], cfg.layers[3], 2)
        att = cfg.attention_channels
        self.attention = nn.Sequential(
            nn.Conv1d(att, cfg.attention_hidden, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(cfg.attention_hidden),
            nn.Conv1d(cfg.attention_hidden, att, kernel_size=1),
            nn.Softmax(dim=2),
        )
        self.fc = nn.Linear(cfg.fc_in, cfg.embedding)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [SEBasicBlock(self.inplanes, planes, stride, downsample, self.config.reduction)]
        self.inplanes = planes
        for _ in range(1, blocks):
            layers.append(SEBasicBlock(planes, planes, reduction=self.config.reduction))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.config.n_mels:
            raise ValueError(f"ResNetSE expects (B, 1, {self.config.n_mels}, T) mel windows, got {tuple(x.shape)}")
        x = self.bn1(self.relu(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        w = self.attention(x)
        mu = torch.sum(x * w, dim=2)
        if self.config.pooling == "ASP":
            sg = torch.sqrt((torch.sum((x ** 2) * w, dim=2) - mu ** 2).clamp(min=1e-5))
            mu = torch.cat((mu, sg), 1)
        return self.fc(mu)


@dataclass(frozen=True)
class AudioEncoderConfig(ConfigDict):
    """An audio encoder = ResNetSE (``model``) + optional heads. Defaults: PC-AVS ``netA_sync``.

    backbone:       the ResNetSE; its ``embedding`` (512) is the audio content feature F_c^a.
    num_identities: classes of the training-only classifier ``fc`` (PC-AVS 5830); None: no ``fc``.
    mouth_dim:      output of ``mouth_embed`` (ReLU, Linear embedding -> mouth_dim); PD-FGC 500;
                    None (PC-AVS): no ``mouth_embed`` here (PC-AVS applies ``netE.mouth_embed``
                    to the audio feature).
    """

    backbone: ResNetSEConfig = field(default_factory=ResNetSEConfig)
    num_identities: int | None = 5830
    mouth_dim: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            object.__setattr__(self, "backbone", ResNetSEConfig.from_dict(self.backbone))
        for name in ("num_identities", "mouth_dim"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"AudioEncoderConfig.{name} must be >= 1 or None, got {value}")

    @classmethod
    def pdfgc(cls) -> "AudioEncoderConfig":
        """PD-FGC's audio encoder as its inference code builds it (``model`` + ``mouth_embed`` 500)."""
        return cls(num_identities=None, mouth_dim=500)


class AudioOutput(NamedTuple):
    """feature: (N, 512) audio content feature; mouth_embed: (N, mouth_dim) or None;
    logits: (N, num_identities) or None."""

    feature: torch.Tensor
    mouth_embed: torch.Tensor | None
    logits: torch.Tensor | None


class AudioEncoder(nn.Module):
    """PC-AVS ``netA_sync`` / PD-FGC audio encoder: ``model`` (ResNetSE) + ``fc`` / ``mouth_embed``.

    forward_feature(mels): (B, 1, 80, 20) or (B, T, 1, 80, 20) -> (B or B*T, 512) (official
    ``forward_feature``; frames flattened in order). forward(mels) -> `AudioOutput`.
    """

    def __init__(self, config: AudioEncoderConfig | None = None):
        super().__init__()
        self.config = cfg = config or AudioEncoderConfig()
        dim = cfg.backbone.embedding
        self.model = ResNetSE(cfg.backbone)
        if cfg.num_identities is not None:
            self.fc = nn.Linear(dim, cfg.num_identities)
        if cfg.mouth_dim is not None:
            self.mouth_embed = nn.Sequential(nn.ReLU(), nn.Linear(dim, cfg.mouth_dim))

    def forward_feature(self, mels: torch.Tensor) -> torch.Tensor:
        if mels.dim() == 5:
            mels = mels.reshape(-1, *mels.shape[2:])
        return self.model(mels)

    def forward(self, mels: torch.Tensor) -> AudioOutput:
        feature = self.forward_feature(mels)
        mouth = self.mouth_embed(feature) if self.config.mouth_dim is not None else None
        logits = self.fc(feature) if self.config.num_identities is not None else None
        return AudioOutput(feature, mouth, logits)
