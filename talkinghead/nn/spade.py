"""SPADE building blocks with spectral norm: the layers of the few-shot-vid2vid family of generators.

Method-agnostic pieces (Park et al. 2019 SPADE; Wang et al. 2019 few-shot-vid2vid), named so a
state dict has the keys the NVIDIA few-shot-vid2vid code (and the methods built on it) write:

* `SNConv2d` / `SNLinear`: a convolution / linear layer under spectral normalisation, with the
  tensors ``torch.nn.utils.spectral_norm`` registers: parameter ``weight_orig`` (+ ``bias``),
  buffers ``weight_u`` / ``weight_v``. Same arithmetic as that hook (one power iteration per
  training forward, updating ``weight_u`` / ``weight_v`` in place; none in eval mode; eps 1e-12;
  dim 0), written as a plain forward so the module stays copyable (``copy.deepcopy`` fails on a
  module under the hook once it has run a forward with autograd on: its ``weight`` attribute is
  then a non-leaf tensor). One difference at construction: ``weight_u`` / ``weight_v`` start from
  three power iterations instead of staying random until the first training forward
  (`_SpectralNorm.reset_spectral_vectors`), so an untrained network also works in eval mode.
* `SNConvBlock`: the official ``SPADEConv2d`` = spectral-norm 3x3 conv -> BatchNorm2d (affine) ->
  LeakyReLU(0.2); attributes ``conv``, ``bn``.
* `SPADE`: parameter-free normalisation (BatchNorm2d or InstanceNorm2d, affine=False, attribute
  ``batch_norm``) followed, for each conditioning map m_i in order, by
  ``x <- x * (1 + gamma_i(m_i)) + beta_i(m_i)`` with 1-conv(m_i) ``mlp_gamma{i}`` / ``mlp_beta{i}``
  (suffix '' for map 0, then '2', '3', ...). Map 0's convs can instead be given per sample
  (``param_free_first``: their weights come from another network; bias-free, as the official
  ``batch_conv`` call passes only the weight).
* `SPADEResBlock`: the official ``SPADEResnetBlock``: ``shortcut(x) + conv_1(lrelu(n_1(conv_0(
  lrelu(n_0(x))))))``, spectral-norm convs ``conv_0`` / ``conv_1`` (3x3, padding 1) and a learned
  1x1 bias-free ``conv_s`` after ``bn_s`` when fin != fout; the norms ``bn_0`` / ``bn_1`` / ``bn_s``
  are `SPADE` (``hidden_nc`` given) or plain affine BatchNorm2d (``hidden_nc=None``).
* `SPADEParallelResBlock`: the official ``SPADEResnetBlockConcat``: one single-map SPADE per
  conditioning map in each of the two residual layers (``bn_0_{j}``, ``bn_1_{j}``); the activated
  denormalised features are averaged over the maps present, then convolved; the shortcut's
  ``bn_s`` is a multi-map `SPADE` (sequential over the maps).
* `per_sample_conv2d` / `per_sample_conv_transpose2d`: convolutions whose weights differ per batch
  element (the official ``batch_conv`` loop, as one grouped convolution).

Tensor conventions: feature maps (N, C, H, W); conditioning maps (N, C_i, H_i, W_i), resized
bilinearly (align_corners=False) to the feature size when they differ; a map given as None is
skipped. Per-sample conv weights (N, C_out, C_in, k, k), biases (N, C_out).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SNConv2d",
    "SNConvBlock",
    "SNLinear",
    "SPADE",
    "SPADEParallelResBlock",
    "SPADEResBlock",
    "lrelu",
    "per_sample_conv2d",
    "per_sample_conv_transpose2d",
    "spectral_normalised",
]

#: Slope of the LeakyReLU used throughout (official ``actvn``).
LRELU_SLOPE = 0.2


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2), not in place (official ``actvn``)."""
    return F.leaky_relu(x, LRELU_SLOPE)


# ---------------------------------------------------------------------------------------------
# spectral norm
# ---------------------------------------------------------------------------------------------
def spectral_normalised(module: nn.Module, eps: float = 1e-12) -> torch.Tensor:
    """``weight_orig / sigma`` of `module` (holding ``weight_orig``, ``weight_u``, ``weight_v``).

    In training mode one power iteration first updates ``weight_u`` / ``weight_v`` in place (no
    gradient through them), exactly as ``torch.nn.utils.spectral_norm`` does; in eval mode the
    stored vectors are used as they are."""
    weight = module.weight_orig
    mat = weight.flatten(1)
    u, v = module.weight_u, module.weight_v
    if module.training:
        with torch.no_grad():
            v = F.normalize(torch.mv(mat.t(), u), dim=0, eps=eps, out=v)
            u = F.normalize(torch.mv(mat, v), dim=0, eps=eps, out=u)
            u = u.clone(memory_format=torch.contiguous_format)
            v = v.clone(memory_format=torch.contiguous_format)
    sigma = torch.dot(u, torch.mv(mat, v))
    return weight / sigma


class _SpectralNorm(nn.Module):
    """Shared registration: ``bias`` (or None), ``weight_orig``, buffers ``weight_u`` (rows) and
    ``weight_v`` (fan-in), the latter two initialised as normalised Gaussian vectors."""

    def _register(self, shape: tuple[int, ...], bias: bool) -> None:
        fan_in = math.prod(shape[1:])
        self.bias = nn.Parameter(torch.empty(shape[0])) if bias else None
        self.weight_orig = nn.Parameter(torch.empty(shape))
        self.register_buffer("weight_u", F.normalize(torch.randn(shape[0]), dim=0, eps=1e-12))
        self.register_buffer("weight_v", F.normalize(torch.randn(fan_in), dim=0, eps=1e-12))
        # PyTorch's default Conv2d / Linear initialisation
        nn.init.kaiming_uniform_(self.weight_orig, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        self.reset_spectral_vectors()

    @torch.no_grad()
    def reset_spectral_vectors(self, n_power_iterations: int = 3, eps: float = 1e-12) -> None:
        """Power iterations from fresh Gaussian vectors on the current ``weight_orig``.

        ``torch.nn.utils.spectral_norm`` leaves ``weight_u`` / ``weight_v`` random until the first
        training forward, so an untrained network used in eval mode divides by u . W v of random
        vectors (near zero or negative; deep networks overflow); a few iterations at construction
        (and after re-initialising ``weight_orig``) avoid that. Loaded weights bring their own."""
        mat = self.weight_orig.flatten(1)
        u = F.normalize(torch.randn(mat.shape[0], device=mat.device, dtype=mat.dtype), dim=0, eps=eps)
        for _ in range(n_power_iterations):
            v = F.normalize(torch.mv(mat.t(), u), dim=0, eps=eps)
            u = F.normalize(torch.mv(mat, v), dim=0, eps=eps)
        if n_power_iterations:
            self.weight_u.copy_(u)
            self.weight_v.copy_(v)


class SNConv2d(_SpectralNorm):
    """``spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias))``
    with the same state-dict keys (``bias``, ``weight_orig``, ``weight_u``, ``weight_v``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0, bias: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self._register((out_channels, in_channels, kernel_size, kernel_size), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, spectral_normalised(self), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")


class SNLinear(_SpectralNorm):
    """``spectral_norm(nn.Linear(in_features, out_features))`` with the same state-dict keys."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._register((out_features, in_features), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, spectral_normalised(self), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


# ---------------------------------------------------------------------------------------------
# per-sample convolutions
# ---------------------------------------------------------------------------------------------
def per_sample_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      stride: int = 1, padding: int | None = None) -> torch.Tensor:
    """Convolve sample n of x (N, C_in, H, W) with weight[n] (N, C_out, C_in, k, k) (+ bias[n],
    (N, C_out)); padding defaults to k // 2 (the official ``batch_conv``)."""
    n, cin, h, w = x.shape
    cout, k = weight.shape[1], weight.shape[-1]
    padding = k // 2 if padding is None else padding
    out = F.conv2d(x.reshape(1, n * cin, h, w), weight.reshape(n * cout, cin, k, weight.shape[-1]),
                   None if bias is None else bias.reshape(n * cout), stride=stride, padding=padding, groups=n)
    return out.reshape(n, cout, out.shape[-2], out.shape[-1])


def per_sample_conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                                stride: int = 2, padding: int | None = None,
                                output_padding: int = 1) -> torch.Tensor:
    """Transposed convolution of sample n of x (N, C_in, H, W) with weight[n] (N, C_in, C_out, k, k)
    (PyTorch's transposed layout) + bias[n] (N, C_out); padding defaults to k // 2, output padding
    1 (the official ``batch_conv`` with ``stride=0.5``): (H, W) -> (stride H, stride W) for odd k."""
    n, cin, h, w = x.shape
    cout, k = weight.shape[2], weight.shape[-1]
    padding = k // 2 if padding is None else padding
    out = F.conv_transpose2d(x.reshape(1, n * cin, h, w), weight.reshape(n * cin, cout, k, weight.shape[-1]),
                             None if bias is None else bias.reshape(n * cout), stride=stride, padding=padding,
                             output_padding=output_padding, groups=n)
    return out.reshape(n, cout, out.shape[-2], out.shape[-1])


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------
class SNConvBlock(nn.Module):
    """Spectral-norm conv (k x k, padding k // 2, with bias) -> BatchNorm2d (affine) -> LeakyReLU(0.2)
    (the official ``SPADEConv2d`` with a non-SPADE norm); attributes ``conv``, ``bn``."""

    def __init__(self, fin: int, fout: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = SNConv2d(fin, fout, kernel_size, stride=stride, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(fout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrelu(self.bn(self.conv(x)))


def _param_free_norm(channels: int, norm: str) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    raise ValueError(f"SPADE norm must be 'batch' or 'instance', got {norm!r}")


def _resize_to(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if m.shape[-2:] == x.shape[-2:]:
        return m
    return F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SPADE(nn.Module):
    """Spatially-adaptive denormalisation over one or more conditioning maps, applied in sequence.

    norm_nc:          channels of the normalised feature.
    hidden_nc:        channels of each conditioning map (an int: one map).
    kernel_size:      of the gamma / beta convs (padding k // 2).
    param_free_first: map 0 has no ``mlp_gamma`` / ``mlp_beta``; its conv weights are passed to
                      `forward` per sample.
    norm:             "batch" (BatchNorm2d, affine=False) or "instance" (InstanceNorm2d).
    """

    def __init__(self, norm_nc: int, hidden_nc: int | Sequence[int], kernel_size: int = 1,
                 param_free_first: bool = False, norm: str = "batch") -> None:
        super().__init__()
        self.hidden_nc = [int(hidden_nc)] if isinstance(hidden_nc, int) else [int(h) for h in hidden_nc]
        self.param_free_first = param_free_first
        for i, nhidden in enumerate(self.hidden_nc):
            if param_free_first and i == 0:
                continue
            s = str(i + 1) if i > 0 else ""
            setattr(self, f"mlp_gamma{s}", nn.Conv2d(nhidden, norm_nc, kernel_size, padding=kernel_size // 2))
            setattr(self, f"mlp_beta{s}", nn.Conv2d(nhidden, norm_nc, kernel_size, padding=kernel_size // 2))
        self.batch_norm = _param_free_norm(norm_nc, norm)

    def forward(self, x: torch.Tensor, maps: torch.Tensor | Sequence[torch.Tensor | None],
                weights: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (N, norm_nc, H, W); maps: one map or a list (None entries skipped); weights: per-sample
        (gamma weight, beta weight), each (N, norm_nc, hidden_nc[0], k, k), for map 0 (required
        with ``param_free_first``, ignored otherwise only if None)."""
        maps = [maps] if isinstance(maps, torch.Tensor) else list(maps)
        if len(maps) > len(self.hidden_nc):
            raise ValueError(f"SPADE built for {len(self.hidden_nc)} maps got {len(maps)}")
        out = self.batch_norm(x)
        for i, m in enumerate(maps):
            if m is None:
                continue
            m = _resize_to(m, x)
            if i == 0 and weights is not None:
                gamma = per_sample_conv2d(m, weights[0])
                beta = per_sample_conv2d(m, weights[1])
            elif i == 0 and self.param_free_first:
                raise ValueError("SPADE with param_free_first needs per-sample weights for map 0")
            else:
                s = str(i + 1) if i > 0 else ""
                gamma = getattr(self, f"mlp_gamma{s}")(m)
                beta = getattr(self, f"mlp_beta{s}")(m)
            out = out * (1 + gamma) + beta
        return out


def _norm(channels: int, hidden_nc: Sequence[int] | None, spade_ks: int, param_free: bool) -> nn.Module:
    if hidden_nc is None:
        return nn.BatchNorm2d(channels)
    return SPADE(channels, hidden_nc, spade_ks, param_free_first=param_free)


NormWeights = tuple[torch.Tensor, torch.Tensor] | None


class SPADEResBlock(nn.Module):
    """Pre-activation residual block with spectral-norm convs and SPADE (or BatchNorm) norms.

    fin, fout:   channels in / out; hidden fin -> min(fin, fout) -> fout; a learned 1x1 shortcut
                 (``bn_s`` + bias-free ``conv_s``) when fin != fout, identity otherwise.
    hidden_nc:   channels of the conditioning maps (`SPADE`); None: plain affine BatchNorm2d.
    spade_ks:    kernel of the SPADE gamma / beta convs.
    param_free_norm: the SPADE norms take map 0's weights per sample (`forward` ``norm_weights``).
    """

    def __init__(self, fin: int, fout: int, hidden_nc: int | Sequence[int] | None = None, spade_ks: int = 1,
                 param_free_norm: bool = False) -> None:
        super().__init__()
        fhidden = min(fin, fout)
        self.learned_shortcut = fin != fout
        hidden = None if hidden_nc is None else ([hidden_nc] if isinstance(hidden_nc, int) else list(hidden_nc))
        self.conv_0 = SNConv2d(fin, fhidden, 3, padding=1)
        self.conv_1 = SNConv2d(fhidden, fout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SNConv2d(fin, fout, 1, bias=False)
        self.bn_0 = _norm(fin, hidden, spade_ks, param_free_norm)
        self.bn_1 = _norm(fhidden, hidden, spade_ks, param_free_norm)
        if self.learned_shortcut:
            self.bn_s = _norm(fin, hidden, spade_ks, param_free_norm)
        self.spade = hidden is not None

    def _n(self, norm: nn.Module, x: torch.Tensor, maps, weights: NormWeights) -> torch.Tensor:
        return norm(x, maps, weights) if self.spade else norm(x)

    def forward(self, x: torch.Tensor, maps=None,
                norm_weights: Sequence[NormWeights] | None = None) -> torch.Tensor:
        """x (N, fin, H, W); maps: the SPADE conditioning map(s); norm_weights: per-sample map-0 SPADE
        weights for (bn_0, bn_1, bn_s), each (gamma weight, beta weight) or None."""
        w0, w1, ws = norm_weights if norm_weights is not None else (None, None, None)
        x_s = self.conv_s(self._n(self.bn_s, x, maps, ws)) if self.learned_shortcut else x
        dx = self.conv_0(lrelu(self._n(self.bn_0, x, maps, w0)))
        dx = self.conv_1(lrelu(self._n(self.bn_1, dx, maps, w1)))
        return x_s + dx


class SPADEParallelResBlock(nn.Module):
    """Residual block whose two layers denormalise with each conditioning map in parallel.

    For layer l in (0, 1): ``mean_j lrelu(bn_l_j(h, map_j))`` over the maps present, then ``conv_l``;
    map 0's SPADE (``bn_0_0`` / ``bn_1_0``) may take per-sample weights (``param_free_norm``); the
    other maps' SPADEs have their own convs. Hidden width min(3 fin, fout); learned shortcut
    ``conv_s(bn_s(x, maps))`` (``bn_s`` a sequential multi-map `SPADE`) when fin != fout.
    """

    def __init__(self, fin: int, fout: int, hidden_nc: Sequence[int], spade_ks: int = 1,
                 param_free_norm: bool = False) -> None:
        super().__init__()
        fhidden = min(fin * 3, fout)
        self.learned_shortcut = fin != fout
        self.n_maps = len(hidden_nc)
        self.conv_0 = SNConv2d(fin, fhidden, 3, padding=1)
        self.conv_1 = SNConv2d(fhidden, fout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SNConv2d(fin, fout, 1, bias=False)
        for j, nhidden in enumerate(hidden_nc):
            free = param_free_norm and j == 0
            setattr(self, f"bn_0_{j}", SPADE(fin, [nhidden], spade_ks, param_free_first=free))
            setattr(self, f"bn_1_{j}", SPADE(fhidden, [nhidden], spade_ks, param_free_first=free))
        if self.learned_shortcut:
            self.bn_s = SPADE(fin, list(hidden_nc), spade_ks, param_free_first=param_free_norm)

    def forward(self, x: torch.Tensor, maps, norm_weights: Sequence[NormWeights] | None = None) -> torch.Tensor:
        """x (N, fin, H, W); maps: a map or a list of up to ``n_maps`` (None entries skipped; map 0
        must be present); norm_weights: per-sample map-0 weights for (bn_0_0, bn_1_0, bn_s)."""
        maps = [maps] if isinstance(maps, torch.Tensor) else list(maps)
        w0, w1, ws = norm_weights if norm_weights is not None else (None, None, None)
        x_s = self.conv_s(self.bn_s(x, maps, ws)) if self.learned_shortcut else x
        present = [(j, m) for j, m in enumerate(maps) if m is not None]
        dxs = [lrelu(getattr(self, f"bn_0_{j}")(x, m, w0 if j == 0 else None)) for j, m in present]
        dx = self.conv_0(sum(dxs) / len(dxs))
        outs = [lrelu(getattr(self, f"bn_1_{j}")(dx, m, w1 if j == 0 else None)) for j, m in present]
        return x_s + self.conv_1(sum(outs) / len(outs))
