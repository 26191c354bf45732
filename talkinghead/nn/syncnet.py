"""SyncNet (Chung & Zisserman 2016, "Out of time"), the network behind LSE-C / LSE-D.

`SyncNet()` is the official `syncnet_v2` architecture (joonson/syncnet_python `SyncNetModel.S`):
submodules `netcnnaud`, `netcnnlip`, `netfcaud`, `netfclip` with the same Sequential indices, so
the official state dict loads with ``strict=True`` (see `talkinghead.metrics.syncnet_expert`).
`SyncNet(SyncNetConfig(...))` keeps that layout with other widths / input size, for experts we
train ourselves (a tiny one trains on two CPU cores in minutes).

Inputs
------
* audio: (N, 1, 13, 20) float, 13 MFCCs x 20 MFCC frames (0.2 s) of the int16-scale 16 kHz
  signal (`audio_features` + `talkinghead.data.audio.mfcc_windows`).
* lips:  (N, 3, 5, H, W) float, 5 consecutive 25 fps frames, **BGR**, raw 0-255
  (`lip_frames` turns RGB [0, 1] frames into that). Official: H = W = 224, the whole face crop.

Both towers end in a (N, D) embedding (official D = 1024); lip-sync distance is the Euclidean
distance between them. `FusedSyncNet(net)` is an inference-only copy with the same outputs
(BatchNorms folded, the lip tower as 2-D convolutions), what the LSE metric runs.

Deviations (only for non-official configs, stated in `SyncNetConfig`): the lip tower's last
convolution kernel is sized to whatever spatial extent is left for the configured image size
(official: 6x6 at 224 px), and `crop` may select a mouth region of the aligned face before the
resize (official: the whole 224 px face crop).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.data.audio import INT16_SCALE, MFCC_CEPS, MFCC_WINDOW, mfcc
from talkinghead.nn.config import ConfigDict

__all__ = [
    "FusedSyncNet",
    "SyncNet",
    "SyncNetConfig",
    "LIP_FRAMES",
    "audio_features",
    "lip_feature_size",
    "lip_frames",
    "lip_windows",
    "quantize_int16",
]

#: Frames per lip window (the official temporal kernel of the first lip convolution).
LIP_FRAMES = 5


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    items = tuple(int(v) for v in value)
    if len(items) != 2:
        raise ValueError(f"SyncNetConfig.{name} must be an int or (height, width), got {value!r}")
    return items


def _pool_out(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def lip_feature_size(image: tuple[int, int]) -> tuple[int, int]:
    """Spatial size (h, w) the lip tower has left before its last conv, for an (H, W) input.

    conv 7/2 -> maxpool 3/2 -> conv 5/2 pad 1 -> maxpool 3/2 pad 1 -> 3 convs 3 pad 1 -> maxpool 3/2.
    224 -> 109 -> 54 -> 26 -> 13 -> 13 -> 6 (so the official last kernel is 6x6).
    """
    out = []
    for s in image:
        s = _pool_out(s, 7, 2)
        s = _pool_out(s, 3, 2)
        s = _pool_out(s, 5, 2, 1)
        s = _pool_out(s, 3, 2, 1)
        s = _pool_out(s, 3, 2)
        out.append(s)
    return out[0], out[1]


@dataclass(frozen=True)
class SyncNetConfig(ConfigDict):
    """Sizes of a SyncNet. The defaults are the official `syncnet_v2` sizes.

    audio_channels: the six conv widths of `netcnnaud` (official 64, 192, 384, 256, 256, 512).
    lip_channels:   the six conv widths of `netcnnlip` (official 96, 256, 256, 256, 256, 512).
    fc_hidden:      hidden width of `netfcaud` / `netfclip` (official 512).
    embedding:      output size D of both heads (official 1024).
    image_size:     (H, W) of the lip frames fed to the net (official 224 x 224). Smaller sizes
                    change only the kernel of the last lip conv (to the spatial size left, see
                    `lip_feature_size`); at least 51 x 51 (the last maxpool needs a 3 x 3 input).
    crop:           region of the (aligned) input frame to use, as fractions (top, bottom, left,
                    right) of its height / width, cropped before resizing to `image_size`; None =
                    the whole frame (official: the whole 224 px face crop).
    """

    audio_channels: tuple[int, ...] = (64, 192, 384, 256, 256, 512)
    lip_channels: tuple[int, ...] = (96, 256, 256, 256, 256, 512)
    fc_hidden: int = 512
    embedding: int = 1024
    image_size: tuple[int, int] = (224, 224)
    crop: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "audio_channels", tuple(int(c) for c in self.audio_channels))
        object.__setattr__(self, "lip_channels", tuple(int(c) for c in self.lip_channels))
        object.__setattr__(self, "image_size", _pair(self.image_size, "image_size"))
        for name in ("audio_channels", "lip_channels"):
            widths = getattr(self, name)
            if len(widths) != 6 or min(widths) < 1:
                raise ValueError(f"SyncNetConfig.{name} needs 6 positive conv widths, got {widths}")
        if self.fc_hidden < 1 or self.embedding < 1:
            raise ValueError(f"SyncNetConfig: fc_hidden and embedding must be >= 1, got {self.fc_hidden}, {self.embedding}")
        h, w = lip_feature_size(self.image_size)
        if h < 1 or w < 1:
            raise ValueError(f"SyncNetConfig.image_size {self.image_size} is too small for the lip tower (min 51 x 51)")
        if self.crop is not None:
            crop = tuple(float(c) for c in self.crop)
            if len(crop) != 4 or not (0.0 <= crop[0] < crop[1] <= 1.0 and 0.0 <= crop[2] < crop[3] <= 1.0):
                raise ValueError(f"SyncNetConfig.crop must be (top, bottom, left, right) fractions with top < bottom, "
                                 f"left < right in [0, 1], got {self.crop!r}")
            object.__setattr__(self, "crop", crop)

    @property
    def lip_last_kernel(self) -> tuple[int, int]:
        """Spatial kernel of the last lip conv: (6, 6) at the official 224 px."""
        return lip_feature_size(self.image_size)

    @property
    def is_official(self) -> bool:
        return self == SyncNetConfig()

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "SyncNetConfig":
        """`ConfigDict.from_dict`, with the list-valued sizes of a YAML or JSON file made tuples."""
        values = dict(values or {})
        for key in ("audio_channels", "lip_channels", "image_size", "crop"):
            if values.get(key) is not None and not isinstance(values[key], int):
                values[key] = tuple(values[key])
        return super().from_dict(values)


def _conv_bn(conv: nn.Module, bn: nn.Module) -> list[nn.Module]:
    return [conv, bn, nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """Two-tower SyncNet: `forward_aud` (MFCC windows) and `forward_lip` (5-frame BGR windows).

    Layer layout (Sequential indices match the official checkpoint; conv/BN pairs at
    0/1, 4/5, 8/9, 11/12, 14/15, 18/19 in both towers):

    * netcnnaud: conv 3x3 p1 + BN + ReLU, maxpool 1x1, conv 3x3 p1 + BN + ReLU, maxpool 3x3 stride
      (1, 2), three conv 3x3 p1 + BN + ReLU, maxpool 3x3 stride 2, conv (5, 4) + BN + ReLU:
      (N, 1, 13, 20) -> (N, C, 1, 1).
    * netcnnlip: Conv3d (5, 7, 7) stride (1, 2, 2) + BN + ReLU, maxpool (1, 3, 3)/(1, 2, 2), conv
      (1, 5, 5)/(1, 2, 2) p(0, 1, 1) + BN + ReLU, maxpool (1, 3, 3)/(1, 2, 2) p(0, 1, 1), three conv
      (1, 3, 3) p(0, 1, 1) + BN + ReLU, maxpool (1, 3, 3)/(1, 2, 2), conv (1, kh, kw) + BN + ReLU,
      kh x kw = `config.lip_last_kernel` (6 x 6 at 224 px): (N, 3, 5, H, W) -> (N, C, 1, 1, 1).
    * netfcaud / netfclip: Linear(C, hidden), BN1d, ReLU, Linear(hidden, D).
    """

    def __init__(self, config: SyncNetConfig | None = None):
        super().__init__()
        self.config = config or SyncNetConfig()
        a = self.config.audio_channels
        v = self.config.lip_channels
        kh, kw = self.config.lip_last_kernel
        self.netcnnaud = nn.Sequential(
            *_conv_bn(nn.Conv2d(1, a[0], 3, 1, 1), nn.BatchNorm2d(a[0])),
            nn.MaxPool2d(kernel_size=1, stride=1),
            *_conv_bn(nn.Conv2d(a[0], a[1], 3, 1, 1), nn.BatchNorm2d(a[1])),
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            *_conv_bn(nn.Conv2d(a[1], a[2], 3, padding=1), nn.BatchNorm2d(a[2])),
            *_conv_bn(nn.Conv2d(a[2], a[3], 3, padding=1), nn.BatchNorm2d(a[3])),
            *_conv_bn(nn.Conv2d(a[3], a[4], 3, padding=1), nn.BatchNorm2d(a[4])),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_bn(nn.Conv2d(a[4], a[5], (5, 4)), nn.BatchNorm2d(a[5])),
        )
        self.netcnnlip = nn.Sequential(
            *_conv_bn(nn.Conv3d(3, v[0], (LIP_FRAMES, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(v[0])),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn(nn.Conv3d(v[0], v[1], (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(v[1])),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv_bn(nn.Conv3d(v[1], v[2], (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(v[2])),
            *_conv_bn(nn.Conv3d(v[2], v[3], (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(v[3])),
            *_conv_bn(nn.Conv3d(v[3], v[4], (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(v[4])),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn(nn.Conv3d(v[4], v[5], (1, kh, kw)), nn.BatchNorm3d(v[5])),
        )
        hidden, dim = self.config.fc_hidden, self.config.embedding
        self.netfcaud = nn.Sequential(nn.Linear(a[5], hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, dim))
        self.netfclip = nn.Sequential(nn.Linear(v[5], hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, dim))

    @property
    def embedding_size(self) -> int:
        return self.config.embedding

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the lip frames the net takes."""
        return self.config.image_size

    def forward_aud(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """MFCC windows (N, 1, 13, 20) float -> audio embeddings (N, D)."""
        x = mfcc_windows
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, MFCC_CEPS, MFCC_WINDOW):
            raise ValueError(f"SyncNet.forward_aud expects (N, 1, {MFCC_CEPS}, {MFCC_WINDOW}) MFCC windows, "
                             f"got {tuple(x.shape)}")
        mid = self.netcnnaud(x)
        return self.netfcaud(mid.flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """Lip windows (N, 3, 5, H, W) float, BGR 0-255 -> lip embeddings (N, D)."""
        x = frames
        h, w = self.config.image_size
        if x.dim() != 5 or tuple(x.shape[1:]) != (3, LIP_FRAMES, h, w):
            raise ValueError(f"SyncNet.forward_lip expects (N, 3, {LIP_FRAMES}, {h}, {w}) BGR 0-255 windows, "
                             f"got {tuple(x.shape)}")
        mid = self.netcnnlip(x)
        return self.netfclip(mid.flatten(1))

    def forward(self, mfcc_windows: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio embeddings (N, D), lip embeddings (N, D))."""
        return self.forward_aud(mfcc_windows), self.forward_lip(frames)


# ---------------------------------------------------------------------------------------------
# input preparation (the one place that turns clip arrays into SyncNet inputs)
# ---------------------------------------------------------------------------------------------
def quantize_int16(audio) -> torch.Tensor:
    """Float audio in [-1, 1] -> int16-valued int32 tensor: clip(round(x * 32768), -32768, 32767).

    The reference pipeline reads 16-bit PCM written by ffmpeg (whose float -> s16 conversion
    rounds to nearest and saturates), so MFCCs are computed on exactly these integers.
    Integer input is returned as is (as int32).
    """
    x = audio if isinstance(audio, torch.Tensor) else torch.as_tensor(np.asarray(audio))
    if not x.is_floating_point():
        return x.to(torch.int32)
    x = torch.round(x.to(torch.float64) * INT16_SCALE).clamp_(-32768, 32767)
    return x.to(torch.int32)


def audio_features(audio) -> torch.Tensor:
    """SyncNet MFCCs of a 16 kHz clip: (N,) float in [-1, 1] (or int16 values) -> (M, 13) float32.

    python_speech_features defaults on the int16-quantised signal (`quantize_int16`), computed by
    `talkinghead.data.audio.mfcc`; M = 1 + ceil((N - 400) / 160). Window v of the net is rows
    4v .. 4v+19 (`talkinghead.data.audio.mfcc_windows`).
    """
    x = audio if isinstance(audio, torch.Tensor) else torch.as_tensor(np.asarray(audio))
    if x.dim() != 1:
        raise ValueError(f"audio_features expects a mono (N,) signal, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("audio_features: empty audio")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("audio_features: audio contains NaN/inf samples")
    return mfcc(quantize_int16(x))


def lip_frames(frames: torch.Tensor, config: SyncNetConfig, quantize: bool = True) -> torch.Tensor:
    """RGB frames (T, 3, H, W) in [0, 1] (float) or (T, H, W, 3) uint8 -> net input (T, 3, h, w) BGR 0-255.

    Steps: `config.crop` (fractions of H, W), resize to `config.image_size` (bilinear with
    antialiasing, only when the size differs; the reference crops are already 224 px), RGB -> BGR,
    x 255. With `quantize` the values are rounded to integers, as the reference reads its frames
    back from 8-bit images. Output float32 on the input's device.
    """
    x = frames
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dtype == torch.uint8:
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be (T, H, W, 3) RGB, got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float()
        scale = 1.0
    else:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"float frames must be (T, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        x = x.float().clamp(0.0, 1.0)
        scale = 255.0
    height, width = x.shape[-2:]
    if config.crop is not None:
        top, bottom, left, right = config.crop
        r0, r1 = int(round(top * height)), int(round(bottom * height))
        c0, c1 = int(round(left * width)), int(round(right * width))
        if r1 - r0 < 1 or c1 - c0 < 1:
            raise ValueError(f"crop {config.crop} of a {height}x{width} frame is empty")
        x = x[..., r0:r1, c0:c1]
    size = tuple(config.image_size)
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    x = x.flip(1) * scale
    if quantize:
        x = x.round_().clamp_(0.0, 255.0)
    return x.contiguous()


def lip_windows(frames: torch.Tensor, starts: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
    """Net-ready frames (T, 3, h, w) -> 5-frame windows (N, 3, 5, h, w); window v = frames v .. v+4.

    `starts` selects windows (default: all T - 4). A copy is made only of the selected windows.
    """
    if frames.dim() != 4:
        raise ValueError(f"lip_windows expects (T, 3, h, w) frames, got {tuple(frames.shape)}")
    num = frames.shape[0] - LIP_FRAMES + 1
    if num < 1:
        raise ValueError(f"lip_windows: {frames.shape[0]} frames, need at least {LIP_FRAMES}")
    view = frames.unfold(0, LIP_FRAMES, 1)  # (num, 3, h, w, 5)
    if starts is not None:
        idx = torch.as_tensor(starts, dtype=torch.long, device=frames.device)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num):
            raise IndexError(f"lip window starts {int(idx.min())}..{int(idx.max())} outside 0..{num - 1}")
        view = view[idx]
    return view.permute(0, 1, 4, 2, 3).contiguous()


# ---------------------------------------------------------------------------------------------
# inference-only fused copy (what the lip-sync metric runs)
# ---------------------------------------------------------------------------------------------
def _fold(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows a conv / linear into its weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return w, (b - bn.running_mean) * scale + bn.bias


class FusedSyncNet(nn.Module):
    """Inference-only copy of a `SyncNet` in eval mode, for fast scoring (same inputs and outputs).

    Every BatchNorm is folded into the conv / linear before it, the lip tower runs as 2-D
    convolutions (its first Conv3d spans all 5 frames, so it is a Conv2d over the 15 stacked
    channels (colour, time); the later ones have temporal kernel 1) in channels-last layout,
    and ReLUs are in place. Outputs equal `net.eval()`'s to float32 rounding (~1e-6 relative).
    A snapshot: later changes to the source net are not seen. No gradients.
    """

    def __init__(self, net: SyncNet):
        super().__init__()
        self.config = net.config
        with torch.no_grad():
            self.aud = nn.ParameterList()
            self.lip = nn.ParameterList()
            self._aud_meta: list[tuple] = []
            self._lip_meta: list[tuple] = []
            for index in (0, 4, 8, 11, 14, 18):
                conv, bn = net.netcnnaud[index], net.netcnnaud[index + 1]
                w, b = _fold(conv.weight, conv.bias, bn)
                self.aud.extend([nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False)])
                self._aud_meta.append((conv.stride, conv.padding))
                conv, bn = net.netcnnlip[index], net.netcnnlip[index + 1]
                w, b = _fold(conv.weight, conv.bias, bn)
                w = w.reshape(w.shape[0], -1, *w.shape[-2:]) if index == 0 else w[:, :, 0]
                self.lip.extend([nn.Parameter(w.contiguous(memory_format=torch.channels_last), requires_grad=False),
                                 nn.Parameter(b, requires_grad=False)])
                self._lip_meta.append((conv.stride[1:], conv.padding[1:]))
            self.fc = nn.ParameterList()
            for head in (net.netfcaud, net.netfclip):
                w, b = _fold(head[0].weight, head[0].bias, head[1])
                self.fc.extend([nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False),
                                nn.Parameter(head[3].weight.detach().clone(), requires_grad=False),
                                nn.Parameter(head[3].bias.detach().clone(), requires_grad=False)])
        self.eval()

    @property
    def image_size(self) -> tuple[int, int]:
        return self.config.image_size

    def _head(self, x: torch.Tensor, k: int) -> torch.Tensor:
        w1, b1, w2, b2 = self.fc[4 * k: 4 * k + 4]
        return F.linear(F.relu_(F.linear(x, w1, b1)), w2, b2)

    def forward_aud(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, D), as `SyncNet.forward_aud` in eval mode."""
        x = mfcc_windows
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, MFCC_CEPS, MFCC_WINDOW):
            raise ValueError(f"forward_aud expects (N, 1, {MFCC_CEPS}, {MFCC_WINDOW}), got {tuple(x.shape)}")
        for k, (stride, padding) in enumerate(self._aud_meta):
            x = F.relu_(F.conv2d(x, self.aud[2 * k], self.aud[2 * k + 1], stride, padding))
            if k == 1:
                x = F.max_pool2d(x, 3, (1, 2))
            elif k == 4:
                x = F.max_pool2d(x, 3, 2)
        return self._head(x.flatten(1), 0)

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, H, W) BGR 0-255 windows -> (N, D), as `SyncNet.forward_lip` in eval mode."""
        x = frames
        h, w = self.config.image_size
        if x.dim() != 5 or tuple(x.shape[1:]) != (3, LIP_FRAMES, h, w):
            raise ValueError(f"forward_lip expects (N, 3, {LIP_FRAMES}, {h}, {w}), got {tuple(x.shape)}")
        x = x.reshape(x.shape[0], 3 * LIP_FRAMES, h, w).contiguous(memory_format=torch.channels_last)
        for k, (stride, padding) in enumerate(self._lip_meta):
            x = F.relu_(F.conv2d(x, self.lip[2 * k], self.lip[2 * k + 1], stride, padding))
            if k == 0:
                x = F.max_pool2d(x, 3, 2)
            elif k == 1:
                x = F.max_pool2d(x, 3, 2, 1)
            elif k == 4:
                x = F.max_pool2d(x, 3, 2)
        return self._head(x.flatten(1), 1)
