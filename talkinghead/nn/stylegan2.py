"""StyleGAN2-style modulated-convolution generator of PC-AVS (CVPR 2021) and PD-FGC (CVPR 2023).

Both methods use the same generator (official class ``ModulateGenerator`` in
``models/networks/generator.py`` of Hangz-nju-cuhk/Talking-Face_PC-AVS, copied unchanged into
Dorniwang/PD-FGC-inference). It is the rosinality StyleGAN2 generator with three changes:

* it starts from the identity encoder's 512 x 7 x 7 feature map instead of a learned constant
  (``identity_map``; the learned constant ``input.input`` is still in the module and in the
  checkpoints but is used only when no identity map is given);
* the start size is 7 (224 = 7 * 2^5), channels 512 @ 7, 14, 28, 56, 256 @ 112, 128 @ 224;
* the output goes through ``tanh`` (range (-1, 1)).

The style vector is the concatenation of the codes of the modularised spaces and is fed,
unchanged, to every layer (``input_is_latent=True`` in the official code, so the 8-layer
``style.*`` mapping MLP is never applied):

* PC-AVS:  [identity 2048, mouth 500, pose 12]                   -> ``style_dim`` 2560
* PD-FGC:  [appearance 2048, mouth 500, emotion 30, eye 6, pose 6] -> ``style_dim`` 2590

Parameter names follow the official module tree, so an official ``latest_net_G.pth`` (PC-AVS) or
``generator_model.pth`` (PD-FGC) loads with ``strict=True`` into
``ModulatedGenerator(ModulatedGeneratorConfig.pcavs())`` / ``.pdfgc()``::

    style.{1..8}.weight  (S, S)      style.{1..8}.bias (S,)        # mapping MLP, unused
    input.input          (1, 512, 7, 7)                            # learned constant, unused
    conv1.conv.weight    (1, 512, 512, 3, 3)
    conv1.conv.modulation.weight (512, S)   conv1.conv.modulation.bias (512,)
    conv1.noise.weight   (1,)               conv1.activate.bias (1, 512, 1, 1)
    to_rgb1.conv.weight  (1, 3, 512, 1, 1)  to_rgb1.conv.modulation.{weight,bias}  to_rgb1.bias (1, 3, 1, 1)
    convs.{0..9}.*       as conv1; even indices upsample and hold the buffer conv.blur.kernel (4, 4)
    to_rgbs.{0..4}.*     as to_rgb1, plus the buffer upsample.kernel (4, 4)
    noises.noise_{0..10} (1, 1, r, r), r = 7 * 2^((i + 1) // 2)    # fixed noise buffers

(S = ``style_dim``). ``style.*`` and ``input.input`` are kept only so the official state dict
loads strictly; they cost 52 M parameters at paper size, so configs that never load an official
checkpoint may set ``n_mlp=0`` (the importer then has to drop ``style.*``).

Implementation notes / deviations from the official code
--------------------------------------------------------
* Everything is pure PyTorch (the official code also uses the native ``upfirdn2d``; no CUDA ops).
  Upsampling is the StyleGAN2 one: a stride-2 transposed modulated 3x3 convolution followed by a
  [1, 3, 3, 1] blur (x4 gain) for the upsampling ``StyledConv``; zero-insertion + blur for the
  ToRGB skip path. Shapes and arithmetic follow the official code, so weights are interchangeable.
* Noise: the official PC-AVS forward draws fresh N(0, 1) noise per sample at every call, also at
  inference (``randomize_noise=True``); PD-FGC's inference copy draws one map per layer on the
  first call and reuses it for every later frame and batch item. Both are available
  (``noise_mode`` "random" / "persistent"), plus "const" (the stored ``noises.*`` buffers) and
  "none" (no noise, deterministic).
* Initialisation: by default the StyleGAN2 one (weights N(0, 1) with the runtime equalised-lr
  scale, modulation bias 1, noise strength 0). The official PC-AVS training script re-initialised
  every ``*Conv*`` / ``*Linear*`` module afterwards with ``xavier_normal_(gain=0.02)`` and zero
  biases (``BaseNetwork.init_weights``, options ``init_type=xavier``, ``init_variance=0.02``);
  ``init="pcavs"`` reproduces that.
* The official ``style.*`` MLP maps ``feature_encoded_dim -> style_dim`` in every layer (so it can
  only be chained when both are equal, which they are in every released config); here both are
  ``style_dim``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nn.config import ConfigDict

__all__ = [
    "ModulatedGenerator",
    "ModulatedGeneratorConfig",
    "ModulatedConv2d",
    "StyledConv",
    "ToRGB",
    "NoiseInjection",
    "ConstantInput",
    "EqualLinear",
    "FusedLeakyReLU",
    "PixelNorm",
    "Blur",
    "Upsample",
    "fused_leaky_relu",
    "make_blur_kernel",
    "upfirdn2d",
    "NOISE_MODES",
    "pcavs_init_",
]

#: How `ModulatedGenerator` feeds its noise injections (see the module docstring).
NOISE_MODES = ("random", "persistent", "const", "none")

_SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- primitives


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = _SQRT2) -> torch.Tensor:
    """``leaky_relu(x + bias) * scale`` (StyleGAN2's "fused" bias + activation, here unfused).

    ``bias`` broadcasts against ``x``: (1, C, 1, 1) for (B, C, H, W) maps, (C,) for (B, C) vectors.
    The sqrt(2) gain keeps the second moment of unit-variance inputs near 1.
    """
    return F.leaky_relu(x + bias, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias, shaped (1, C, 1, 1) as in the official code, then scaled leaky ReLU."""

    def __init__(self, channels: int, negative_slope: float = 0.2, scale: float = _SQRT2) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class PixelNorm(nn.Module):
    """Normalise each vector to unit root-mean-square over dim 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def make_blur_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D ``taps`` (outer product), normalised to sum 1."""
    k = torch.as_tensor(list(taps), dtype=torch.float32)
    if k.ndim == 1:
        k = torch.outer(k, k)
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter, downsample (StyleGAN2's ``upfirdn2d``).

    x: (B, C, H, W); kernel: (kh, kw), applied depthwise as a true convolution (flipped). The
    same ``pad = (before, after)`` is used on both axes; negative values crop. Output size per
    axis: ``(H * up + pad[0] + pad[1] - kh) // down + 1``.
    """
    b, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(b, c, h, up, w, up)
        z[:, :, :, 0, :, 0] = x
        x = z.reshape(b, c, h * up, w * up)
    p0, p1 = int(pad[0]), int(pad[1])
    if p0 or p1:
        x = F.pad(x, [p0, p1, p0, p1])
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device)
    x = F.conv2d(x, weight.expand(c, 1, kh, kw), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


class Blur(nn.Module):
    """FIR blur with buffer ``kernel`` (kh, kw); gain ``upsample_factor**2`` after an upsampling conv."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        kernel = make_blur_kernel(taps)
        if upsample_factor > 1:
            kernel = kernel * upsample_factor ** 2
        self.register_buffer("kernel", kernel)
        self.pad = (int(pad[0]), int(pad[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 (``factor``) upsampling by zero insertion + FIR blur; buffer ``kernel`` (kh, kw). (B,C,H,W) -> (B,C,2H,2W)."""

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        kernel = make_blur_kernel(taps) * factor ** 2
        self.register_buffer("kernel", kernel)
        p = kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: ``x @ (weight * scale).T + bias * lr_mul``.

    weight (out, in) is stored as N(0, 1) / lr_mul and scaled by ``lr_mul / sqrt(in)`` at run time.
    ``activation="fused_lrelu"`` applies `fused_leaky_relu` with the bias.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, bias if bias is not None else 0.0)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class ModulatedConv2d(nn.Module):
    """Modulated (and by default demodulated) convolution, StyleGAN2 eq. 1-3 / PC-AVS eq. 4.

    Parameters: ``weight`` (1, out, in, k, k) stored N(0, 1) and scaled by 1/sqrt(in*k*k) at run
    time; ``modulation`` = EqualLinear(style_dim -> in, bias_init=1). For a style s (B, style_dim):
    m = modulation(s) (B, in); w'[b,o,i] = scale * weight[o,i] * m[b,i]; with ``demodulate``
    w'' = w' / sqrt(sum_{i,kh,kw} w'^2 + 1e-8), so unit-variance i.i.d. inputs give unit-variance
    outputs. ``upsample=True`` doubles the resolution (transposed stride-2 conv + blur).

    forward(x (B, in, H, W), style (B, style_dim)) -> (out (B, out, H', W'), m (B, 1, in, 1, 1)).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.eps = 1e-8
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"demodulate={self.demodulate}, upsample={self.upsample}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"ModulatedConv2d expects {self.in_channels} input channels, got {tuple(x.shape)}")
        m = self.modulation(style).view(b, 1, c, 1, 1)
        weight = self.scale * self.weight * m  # (B, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + self.eps)
            weight = weight * demod.view(b, self.out_channels, 1, 1, 1)
        k = self.kernel_size
        x = x.reshape(1, b * c, h, w)
        if self.upsample:
            # conv_transpose2d wants (in, out/groups, k, k) per group
            weight = weight.transpose(1, 2).reshape(b * c, self.out_channels, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            out = out.view(b, self.out_channels, out.shape[-2], out.shape[-1])
            out = self.blur(out)
        else:
            weight = weight.reshape(b * self.out_channels, c, k, k)
            out = F.conv2d(x, weight, padding=self.padding, groups=b)
            out = out.view(b, self.out_channels, out.shape[-2], out.shape[-1])
        return out, m


class NoiseInjection(nn.Module):
    """``x + weight * noise`` with a learned scalar ``weight`` (1,) (init 0).

    noise: (B or 1, 1, H, W); None draws fresh N(0, 1) noise per sample.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """Learned constant ``input`` (1, C, size, size), repeated over the batch."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """ModulatedConv2d (``conv``) -> NoiseInjection (``noise``) -> FusedLeakyReLU (``activate``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 demodulate: bool = True) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.conv(x, style)
        out = self.noise(out, noise=noise)
        return self.activate(out)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation to ``out_channels`` (3) + ``bias`` (1, 3, 1, 1);
    adds the upsampled previous RGB ``skip`` (module ``upsample`` exists iff ``upsample=True``).

    forward(x, style, skip=None) -> (rgb (B, 3, H, W), modulation (B, 1, C, 1, 1)).
    """

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), out_channels: int = 3) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                skip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out, m = self.conv(x, style)
        out = out + self.bias
        if skip is not None:
            if not hasattr(self, "upsample"):
                raise ValueError("this ToRGB was built without upsampling and takes no skip input")
            out = out + self.upsample(skip)
        return out, m


# ----------------------------------------------------------------------------- generator


@dataclass(frozen=True)
class ModulatedGeneratorConfig(ConfigDict):
    """Sizes of a `ModulatedGenerator`. Defaults are the official PC-AVS generator.

    style_dim:    length S of the style vector (concatenated codes). PC-AVS 2560, PD-FGC 2590.
    start_size:   spatial size of the identity map the generator starts from (official 7).
    channels:     widths per resolution, start_size * 2^i for i = 0..L; len(channels) - 1 = L
                  upsampling levels. Official (512, 512, 512, 512, 256, 128) -> 7..224.
                  channels[0] must equal the identity map's channels.
    out_channels: image channels (official 3).
    n_mlp:        layers of the (unused) ``style.*`` mapping MLP (official 8; 0 = none).
    lr_mlp:       its equalised-lr multiplier (official 0.01).
    blur_kernel:  FIR taps for upsampling (official 1, 3, 3, 1).
    input_is_latent: if True (official), the style is fed to the layers as is; if False it is
                  first mapped by ``style.*``.
    noise_mode:   default noise mode of `forward` (one of `NOISE_MODES`); "random" = official PC-AVS.
    init:         "stylegan2" (default) or "pcavs" (xavier_normal gain 0.02 + zero biases on
                  every modulated conv and linear layer, as the official training script did).
    """

    style_dim: int = 2560
    start_size: int = 7
    channels: tuple[int, ...] = (512, 512, 512, 512, 256, 128)
    out_channels: int = 3
    n_mlp: int = 8
    lr_mlp: float = 0.01
    blur_kernel: tuple[float, ...] = (1, 3, 3, 1)
    input_is_latent: bool = True
    noise_mode: str = "random"
    init: str = "stylegan2"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "blur_kernel", tuple(float(t) for t in self.blur_kernel))
        if len(self.channels) < 1 or min(self.channels) < 1:
            raise ValueError(f"ModulatedGeneratorConfig.channels needs >= 1 positive widths, got {self.channels}")
        if self.style_dim < 1 or self.start_size < 1 or self.out_channels < 1 or self.n_mlp < 0:
            raise ValueError(f"ModulatedGeneratorConfig: bad sizes {self}")
        if self.noise_mode not in NOISE_MODES:
            raise ValueError(f"ModulatedGeneratorConfig.noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}")
        if self.init not in ("stylegan2", "pcavs"):
            raise ValueError(f"ModulatedGeneratorConfig.init must be 'stylegan2' or 'pcavs', got {self.init!r}")
        if not self.input_is_latent and self.n_mlp == 0:
            raise ValueError("ModulatedGeneratorConfig: input_is_latent=False needs a mapping MLP (n_mlp >= 1)")

    @property
    def num_levels(self) -> int:
        """Number of x2 upsampling levels (official 5)."""
        return len(self.channels) - 1

    @property
    def image_size(self) -> int:
        """Output resolution: start_size * 2^num_levels (official 224)."""
        return self.start_size * 2 ** self.num_levels

    @property
    def n_latent(self) -> int:
        """Number of per-layer style slots (official 12): conv1, to_rgb1, then 2 per level."""
        return 2 * self.num_levels + 2

    @property
    def num_noise_layers(self) -> int:
        """Number of noise injections / ``noises.noise_i`` buffers (official 11)."""
        return 2 * self.num_levels + 1

    @classmethod
    def pcavs(cls, **overrides) -> "ModulatedGeneratorConfig":
        """Official PC-AVS size: style 2560 = identity 2048 + mouth 500 + pose 12, 224 px."""
        return replace(cls(), **overrides)

    @classmethod
    def pdfgc(cls, **overrides) -> "ModulatedGeneratorConfig":
        """Official PD-FGC size: style 2590 = appearance 2048 + mouth 500 + emo 30 + eye 6 + pose 6."""
        return replace(cls(style_dim=2590), **overrides)

    @classmethod
    def tiny(cls, **overrides) -> "ModulatedGeneratorConfig":
        """A CPU-trainable size: 4 x 4 start, 64 px output, narrow channels, no mapping MLP."""
        base = cls(style_dim=96, start_size=4, channels=(64, 64, 32, 32, 16), n_mlp=0)
        return replace(base, **overrides)


class ModulatedGenerator(nn.Module):
    """The PC-AVS / PD-FGC generator G (see the module docstring for the layout and key names).

    forward(style, identity_map=None, noise=None, noise_mode=None, return_rgb_styles=False)

    * style: (B, S) concatenated codes, used by every layer; or (B, n_latent, S) per-layer styles
      (slot 0: conv1, 1: to_rgb1, then for level l = 1..L: convs[2l-2] slot 2l-1, convs[2l-1]
      slot 2l, to_rgbs[l-1] slot 2l+1, as in the official code).
    * identity_map: (B, channels[0], start_size, start_size), the identity encoder's map (official
      512 x 7 x 7); None uses the learned constant ``input.input`` (unused by PC-AVS / PD-FGC).
    * noise: optional list of ``num_noise_layers`` tensors (B or 1, 1, r, r) overriding noise_mode.
    * noise_mode: "random" | "persistent" | "const" | "none"; None = config.noise_mode.

    Returns the image (B, out_channels, image_size, image_size) in (-1, 1) (tanh); with
    ``return_rgb_styles`` also the list of the ToRGB modulation vectors, each (B, C_level).
    """

    def __init__(self, config: ModulatedGeneratorConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModulatedGeneratorConfig()
        self.config = cfg
        s = cfg.style_dim
        blur = cfg.blur_kernel
        ch = cfg.channels

        layers: list[nn.Module] = [PixelNorm()]
        for _ in range(cfg.n_mlp):
            layers.append(EqualLinear(s, s, lr_mul=cfg.lr_mlp, activation="fused_lrelu"))
        self.style = nn.Sequential(*layers)

        self.input = ConstantInput(ch[0], cfg.start_size)
        self.conv1 = StyledConv(ch[0], ch[0], 3, s, blur_kernel=blur)
        self.to_rgb1 = ToRGB(ch[0], s, upsample=False, blur_kernel=blur, out_channels=cfg.out_channels)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(cfg.num_noise_layers):
            r = cfg.start_size * 2 ** ((i + 1) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        for level in range(1, cfg.num_levels + 1):
            cin, cout = ch[level - 1], ch[level]
            self.convs.append(StyledConv(cin, cout, 3, s, upsample=True, blur_kernel=blur))
            self.convs.append(StyledConv(cout, cout, 3, s, blur_kernel=blur))
            self.to_rgbs.append(ToRGB(cout, s, upsample=True, blur_kernel=blur, out_channels=cfg.out_channels))

        self._persistent_noise: dict[int, torch.Tensor] = {}
        if cfg.init == "pcavs":
            pcavs_init_(self)

    # -- helpers ---------------------------------------------------------------------------

    def map_style(self, z: torch.Tensor) -> torch.Tensor:
        """Apply the ``style.*`` mapping MLP (PixelNorm + n_mlp EqualLinear+lrelu). (B, S) -> (B, S).

        Unused by the official PC-AVS / PD-FGC generators (``input_is_latent=True``).
        """
        return self.style(z)

    def reset_noise(self) -> None:
        """Forget the maps drawn by ``noise_mode="persistent"`` (new ones are drawn on the next call)."""
        self._persistent_noise.clear()

    def _noise_list(self, mode: str, ref: torch.Tensor) -> list[torch.Tensor | None]:
        n = self.config.num_noise_layers
        if mode == "random":
            return [None] * n
        if mode == "const":
            return [getattr(self.noises, f"noise_{i}") for i in range(n)]
        if mode == "none":
            return [ref.new_zeros(1, 1, 1, 1)] * n
        if mode == "persistent":
            out = []
            for i in range(n):
                buf = getattr(self.noises, f"noise_{i}")
                cached = self._persistent_noise.get(i)
                if cached is None or cached.device != ref.device or cached.dtype != ref.dtype:
                    cached = torch.randn(buf.shape, device=ref.device, dtype=ref.dtype)
                    self._persistent_noise[i] = cached
                out.append(cached)
            return out
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")

    # -- forward -----------------------------------------------------------------------------

    def forward(self, style: torch.Tensor, identity_map: torch.Tensor | None = None,
                noise: Sequence[torch.Tensor | None] | None = None, noise_mode: str | None = None,
                return_rgb_styles: bool = False):
        cfg = self.config
        if style.ndim == 2:
            if style.shape[1] != cfg.style_dim:
                raise ValueError(f"style must be (B, {cfg.style_dim}), got {tuple(style.shape)}")
            if not cfg.input_is_latent:
                style = self.map_style(style)
            latent = style.unsqueeze(1).expand(-1, cfg.n_latent, -1)
        elif style.ndim == 3:
            if style.shape[1:] != (cfg.n_latent, cfg.style_dim):
                raise ValueError(f"per-layer style must be (B, {cfg.n_latent}, {cfg.style_dim}), got {tuple(style.shape)}")
            latent = style if cfg.input_is_latent else self.map_style(style.flatten(0, 1)).view_as(style)
        else:
            raise ValueError(f"style must be (B, S) or (B, n_latent, S), got {tuple(style.shape)}")
        b = latent.shape[0]

        if identity_map is None:
            x = self.input(b)
        else:
            want = (b, cfg.channels[0], cfg.start_size, cfg.start_size)
            if tuple(identity_map.shape) != want:
                raise ValueError(f"identity_map must be {want}, got {tuple(identity_map.shape)}")
            x = identity_map

        if noise is None:
            noise = self._noise_list(noise_mode or cfg.noise_mode, latent)
        elif len(noise) != cfg.num_noise_layers:
            raise ValueError(f"noise must hold {cfg.num_noise_layers} tensors, got {len(noise)}")

        rgb_styles = []
        x = self.conv1(x, latent[:, 0], noise=noise[0])
        skip, m = self.to_rgb1(x, latent[:, 1])
        rgb_styles.append(m.flatten(1))
        i = 1
        for level in range(cfg.num_levels):
            up, same, to_rgb = self.convs[2 * level], self.convs[2 * level + 1], self.to_rgbs[level]
            x = up(x, latent[:, i], noise=noise[i])
            x = same(x, latent[:, i + 1], noise=noise[i + 1])
            skip, m = to_rgb(x, latent[:, i + 2], skip)
            rgb_styles.append(m.flatten(1))
            i += 2
        image = torch.tanh(skip)
        if return_rgb_styles:
            return image, rgb_styles
        return image


def pcavs_init_(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Re-initialise like the official PC-AVS ``BaseNetwork.init_weights('xavier', 0.02)``.

    Every submodule whose class name contains "Conv" or "Linear" and has a ``weight`` gets
    ``xavier_normal_(weight, gain)`` and a zero ``bias`` (this includes the modulation layers, whose
    StyleGAN2 bias init of 1 is thereby replaced by 0). Returns ``module``.
    """
    with torch.no_grad():
        for m in module.modules():
            name = type(m).__name__
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor) and ("Conv" in name or "Linear" in name):
                nn.init.xavier_normal_(w, gain=gain)
                b = getattr(m, "bias", None)
                if isinstance(b, torch.Tensor):
                    b.zero_()
    return module
