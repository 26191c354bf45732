"""Multi-scale patch discriminator of PC-AVS (pix2pixHD / SPADE style).

Official: ``MultiscaleDiscriminator`` + ``NLayerDiscriminator`` in ``models/networks/discriminator.py``
of Hangz-nju-cuhk/Talking-Face_PC-AVS, options ``--netD multiscale --num_D 2 --n_layers_D 4
--ndf 64 --norm_D spectralinstance --D_input single --gan_mode hinge``.

What D sees: with the default ``D_input="single"`` only the RGB image (real target or generated
frame), 3 channels in [-1, 1]; no conditioning is concatenated (the "concat" branch would prepend
the reference image, but the official generator step calls D on the image alone, so only
"single" is consistent). ``in_channels`` is configurable for other uses.

Layout of one scale (``NLayerDiscriminator``, kernel 4, padding 2, LeakyReLU 0.2), paper size::

    model0: Conv(3 -> 64, stride 2)                                   + LeakyReLU   (plain conv, bias)
    model1: SpectralNorm(Conv(64 -> 128, stride 2), no bias) + InstanceNorm + LeakyReLU
    model2: SpectralNorm(Conv(128 -> 256, stride 2), no bias) + InstanceNorm + LeakyReLU
    model3: SpectralNorm(Conv(256 -> 512, stride 1), no bias) + InstanceNorm + LeakyReLU
    model4: Conv(512 -> 1, stride 1)                                                 (patch logits)

(width doubles per layer, capped at 512; the last hidden layer has stride 1). Between scales the
input is downsampled by ``avg_pool2d(3, stride 2, padding 1, count_include_pad=False)``.
Spatial sizes at 224 px: 224 -> 113 -> 57 -> 29 -> 30 -> 31; second scale 112 -> 57 -> 29 -> 15 -> 16 -> 17.

State-dict names (official): ``discriminator_{s}.model0.0.{weight,bias}``,
``discriminator_{s}.model{1..3}.0.0.{weight_orig,weight_u,weight_v}`` (spectral norm through
``torch.nn.utils.spectral_norm``; InstanceNorm has no parameters), ``discriminator_{s}.model4.0.{weight,bias}``.
The released PC-AVS checkpoints contain no discriminator (``save`` never writes ``net_D``).

Returned features: for each scale a list ``[input, f0, f1, f2, f3, logits]``. Note that the
official ``NLayerDiscriminator`` returns ``results[0:]``, i.e. **including its own input** as the
first element (SPADE returns ``results[1:]``); the feature-matching loss then treats that input
like a feature, which amounts to an L1 image loss at every scale (weighted by ``lambda_image``).
``include_input=False`` gives the SPADE convention.

Initialisation: as the official ``create_network`` + ``BaseNetwork.init_weights('xavier', 0.02)``
ended up doing on GPU: ``xavier_normal_`` (gain 0.02) and zero bias on the plain convs (model0 and
the logit conv). For the spectral-norm convs the official init wrote into the stale ``weight``
attribute left by ``spectral_norm`` (the net had already been moved to CUDA, so that tensor no
longer shares storage with ``weight_orig``), so they keep PyTorch's default conv init; we do the same.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nn.config import ConfigDict

__all__ = ["MultiscaleDiscriminator", "MultiscaleDiscriminatorConfig", "NLayerDiscriminator", "NORMS"]

#: Supported ``norm`` values (the official ``get_nonspade_norm_layer`` names).
NORMS = ("spectralinstance", "spectral", "instance", "none")


@dataclass(frozen=True)
class MultiscaleDiscriminatorConfig(ConfigDict):
    """Sizes of a `MultiscaleDiscriminator`; defaults are the official PC-AVS ones.

    in_channels:   channels of what D sees (official 3: the RGB image only).
    ndf:           width of the first conv (official 64); doubles per layer up to ``max_channels``.
    n_layers:      convs before the logit conv (official 4).
    num_scales:    number of discriminators / image scales (official 2).
    max_channels:  width cap (official 512).
    norm:          "spectralinstance" (official), "spectral", "instance" or "none" (layers 1..n-1;
                   the first and the logit conv are never normalised).
    include_input: return the scale's input as feature 0 (official PC-AVS behaviour).
    """

    in_channels: int = 3
    ndf: int = 64
    n_layers: int = 4
    num_scales: int = 2
    max_channels: int = 512
    norm: str = "spectralinstance"
    include_input: bool = True

    def __post_init__(self) -> None:
        if min(self.in_channels, self.ndf, self.n_layers, self.num_scales, self.max_channels) < 1:
            raise ValueError(f"MultiscaleDiscriminatorConfig: sizes must be >= 1, got {self}")
        if self.norm not in NORMS:
            raise ValueError(f"MultiscaleDiscriminatorConfig.norm must be one of {NORMS}, got {self.norm!r}")

    @classmethod
    def pcavs(cls, **overrides) -> "MultiscaleDiscriminatorConfig":
        """Official PC-AVS discriminator (2 scales x 4 layers, ndf 64, spectral + instance norm)."""
        return replace(cls(), **overrides)

    @classmethod
    def tiny(cls, **overrides) -> "MultiscaleDiscriminatorConfig":
        """A CPU-sized discriminator: ndf 16, width cap 64, 3 layers, 2 scales."""
        return replace(cls(ndf=16, n_layers=3, max_channels=64), **overrides)


def _normed_conv(conv: nn.Conv2d, norm: str) -> nn.Module:
    """Wrap ``conv`` like the official ``get_nonspade_norm_layer``: spectral norm, and for a sub-norm
    drop the conv bias and return Sequential(conv, InstanceNorm2d(affine=False))."""
    if norm.startswith("spectral"):
        conv = nn.utils.spectral_norm(conv)
        sub = norm[len("spectral"):]
    else:
        sub = norm
    if sub in ("", "none"):
        return conv
    if conv.bias is not None:
        del conv.bias
        conv.register_parameter("bias", None)
    return nn.Sequential(conv, nn.InstanceNorm2d(conv.out_channels, affine=False))


class NLayerDiscriminator(nn.Module):
    """PatchGAN with submodules ``model0 .. model{n_layers}`` (kernel 4, padding 2).

    forward(x (B, C, H, W)) -> list: [x] (if include_input) + n_layers hidden maps + logits (B, 1, h, w).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 4, norm: str = "spectralinstance",
                 max_channels: int = 512, include_input: bool = True) -> None:
        super().__init__()
        self.include_input = include_input
        kw, pad = 4, 2
        nf = ndf
        groups: list[list[nn.Module]] = [[nn.Conv2d(in_channels, nf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2)]]
        for n in range(1, n_layers):
            prev, nf = nf, min(nf * 2, max_channels)
            stride = 1 if n == n_layers - 1 else 2
            conv = nn.Conv2d(prev, nf, kw, stride=stride, padding=pad)
            groups.append([_normed_conv(conv, norm), nn.LeakyReLU(0.2)])
        groups.append([nn.Conv2d(nf, 1, kw, stride=1, padding=pad)])
        for i, group in enumerate(groups):
            self.add_module(f"model{i}", nn.Sequential(*group))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [x] if self.include_input else []
        h = x
        for block in self.children():
            h = block(h)
            out.append(h)
        return out


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` NLayerDiscriminators (``discriminator_0``, ...) on successively 2x avg-pooled inputs.

    forward(x (B, in_channels, H, W), image in [-1, 1]) -> list over scales of feature lists (see
    `NLayerDiscriminator`); the last element of each list is that scale's patch logits.
    """

    def __init__(self, config: MultiscaleDiscriminatorConfig | None = None) -> None:
        super().__init__()
        cfg = config or MultiscaleDiscriminatorConfig()
        self.config = cfg
        for i in range(cfg.num_scales):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(
                cfg.in_channels, cfg.ndf, cfg.n_layers, cfg.norm, cfg.max_channels, cfg.include_input))
        init_weights_(self)

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)) by 3x3 average pooling, stride 2, padding 1."""
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"MultiscaleDiscriminator expects (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        results = []
        for i, d in enumerate(self.children()):
            if i:
                x = self.downsample(x)
            results.append(d(x))
        return results


def init_weights_(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Official-equivalent init: ``xavier_normal_(gain)`` + zero bias on every plain ``nn.Conv2d``;
    spectral-norm convs (those with ``weight_orig``) keep PyTorch's default init (see the module
    docstring for why that is what the official GPU training ran with). Returns ``module``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d) and not hasattr(m, "weight_orig"):
                nn.init.xavier_normal_(m.weight, gain=gain)
                if m.bias is not None:
                    m.bias.zero_()
    return module
