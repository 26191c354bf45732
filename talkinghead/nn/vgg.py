"""VGG19 ``features`` with torchvision's parameter names, and the pix2pixHD / PC-AVS perceptual loss.

`VGG19()` holds ``features``, an ``nn.Sequential`` with torchvision's indices (convs at 0, 2, 5,
7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34; in-place ReLU after each; max-pools at 4, 9,
18, 27, 36), so the keys are ``features.0.weight``, ``features.0.bias``, ... exactly as in
torchvision's ``vgg19-dcbb9e9d.pth``. `load_vgg19_imagenet` loads that file through
`talkinghead.weights` (asset ``"vgg19"``); its ``classifier.{0,3,6}.{weight,bias}`` tensors (the
ImageNet FC head) are ignored, as are the ``features.*`` tensors past a truncated ``features``.

`VGGPerceptualLoss` is the official PC-AVS ``VGGLoss`` (from pix2pixHD / SPADE): the outputs of
relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (``features`` indices 1, 6, 11, 20, 29; the network is
truncated after 29), L1 distance per layer (mean over elements), weighted 1/32, 1/16, 1/8, 1/4, 1,
the target's features detached, VGG frozen. The method multiplies it by lambda_vgg (10).

Input convention: `x` and `y` are RGB images in [-1, 1], (B, 3, H, W). By default they are mapped
to [0, 1] and normalised with the ImageNet mean / std that torchvision's weights expect.
**Deviation**: the official code (as pix2pixHD) feeds the [-1, 1] images to VGG unnormalised;
``imagenet_normalize=False`` reproduces that exactly.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYER_WEIGHTS",
    "RELU_X_1",
    "VGG19",
    "VGG19_WIDTHS",
    "VGGPerceptualLoss",
    "load_vgg19_imagenet",
    "vgg19_layout",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Widths of VGG19's five blocks (torchvision cfg "E": 2, 2, 4, 4, 4 convs per block).
VGG19_WIDTHS = (64, 128, 256, 512, 512)
_CONVS_PER_BLOCK = (2, 2, 4, 4, 4)
#: ``features`` indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
RELU_X_1 = (1, 6, 11, 20, 29)
#: pix2pixHD / PC-AVS per-layer weights of the perceptual loss.
LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def vgg19_layout(widths: Sequence[int] = VGG19_WIDTHS) -> list[tuple[str, int, int]]:
    """The 37 modules of VGG19 ``features``: ("conv", in, out) / ("relu", 0, 0) / ("pool", 0, 0)."""
    widths = tuple(int(w) for w in widths)
    if len(widths) != 5 or min(widths) < 1:
        raise ValueError(f"VGG19 needs 5 positive block widths, got {widths!r}")
    layout: list[tuple[str, int, int]] = []
    channels = 3
    for width, convs in zip(widths, _CONVS_PER_BLOCK):
        for _ in range(convs):
            layout += [("conv", channels, width), ("relu", 0, 0)]
            channels = width
        layout.append(("pool", 0, 0))
    return layout


class VGG19(nn.Module):
    """VGG19 ``features`` (torchvision names), optionally truncated to its first `depth` modules.

    widths: the five block widths (torchvision 64, 128, 256, 512, 512; smaller for tests).
    depth:  number of ``features`` modules kept (37 = all; 30 = up to relu5_1).
    forward(x): (B, 3, H, W) -> the output of the last kept module.
    Initialisation as torchvision: kaiming-normal (fan_out) conv weights, zero biases.
    """

    def __init__(self, widths: Sequence[int] = VGG19_WIDTHS, depth: int = 37):
        super().__init__()
        layout = vgg19_layout(widths)
        if not 1 <= depth <= len(layout):
            raise ValueError(f"VGG19 depth must be in [1, {len(layout)}], got {depth}")
        self.widths = tuple(int(w) for w in widths)
        modules: list[nn.Module] = []
        for kind, cin, cout in layout[:depth]:
            if kind == "conv":
                conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                modules.append(conv)
            elif kind == "relu":
                modules.append(nn.ReLU(inplace=True))
            else:
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def load_vgg19_imagenet(model: VGG19, asset: str = "vgg19") -> VGG19:
    """Load torchvision's ImageNet VGG19 (``$TALKINGHEAD_HOME/vgg19-dcbb9e9d.pth``) into `model`.

    Only ``features.<i>.*`` tensors with i < len(model.features) are used; ``classifier.*`` and
    the tensors of truncated layers are ignored. Every tensor of `model` must be present with
    the same shape (so the widths must be torchvision's). A missing file raises
    `talkinghead.weights.MissingWeightsError` naming it. Returns `model`.
    """
    from talkinghead import weights

    state = weights.load(asset)
    ours = model.state_dict()
    wanted = {k: v for k, v in state.items() if k in ours}
    missing = sorted(set(ours) - set(wanted))
    if missing:
        raise ValueError(f"{weights.asset(asset).file} lacks {missing[:5]} - not torchvision's VGG19 file?")
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
             for k, v in wanted.items() if tuple(v.shape) != tuple(ours[k].shape)]
    if wrong:
        raise ValueError(f"{weights.asset(asset).file} does not fit VGG19 widths {model.widths}: {wrong[:5]}")
    model.load_state_dict(wanted, strict=True)
    return model


class VGGPerceptualLoss(nn.Module):
    """pix2pixHD / PC-AVS VGG19 perceptual loss: sum_i w_i * L1(VGG_i(x), VGG_i(y).detach()).

    pretrained:         load torchvision's ImageNet VGG19 (asset "vgg19"); when the file is
                        missing the constructor raises `talkinghead.weights.MissingWeightsError`.
                        False keeps the random initialisation (tests, tiny configs).
    widths:             block widths (torchvision's by default; others only with pretrained=False).
    layer_weights:      weights of relu1_1..relu5_1 (1/32, 1/16, 1/8, 1/4, 1).
    imagenet_normalize: map [-1, 1] inputs to ImageNet-normalised ones (default); False feeds
                        them unchanged, as the official code.

    forward(x, y, start_layer=0): x, y (B, 3, H, W) RGB in [-1, 1] (H, W >= 16) -> scalar loss;
    layers before `start_layer` are skipped (the official ``layer`` argument). Gradients flow to
    `x` only; the VGG parameters are frozen (``requires_grad=False``).
    """

    def __init__(self, pretrained: bool = True, widths: Sequence[int] = VGG19_WIDTHS,
                 layer_weights: Sequence[float] = LAYER_WEIGHTS, imagenet_normalize: bool = True):
        super().__init__()
        if len(layer_weights) != len(RELU_X_1):
            raise ValueError(f"layer_weights needs {len(RELU_X_1)} values, got {len(layer_weights)}")
        self.vgg = VGG19(widths, depth=RELU_X_1[-1] + 1)
        if pretrained:
            load_vgg19_imagenet(self.vgg)
        self.vgg.requires_grad_(False)
        self.vgg.eval()
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.imagenet_normalize = bool(imagenet_normalize)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.imagenet_normalize:
            return ((x + 1.0) * 0.5 - self.mean) / self.std
        return x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """relu1_1 .. relu5_1 outputs of `x` ((B, 3, H, W) in [-1, 1])."""
        out = []
        h = self._prepare(x)
        start = 0
        for stop in RELU_X_1:
            h = self.vgg.features[start:stop + 1](h)
            out.append(h)
            start = stop + 1
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor, start_layer: int = 0) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"VGGPerceptualLoss: x {tuple(x.shape)} and y {tuple(y.shape)} differ")
        fx = self.features(x)
        with torch.no_grad():
            fy = self.features(y)
        loss = x.new_zeros(())
        for i, (a, b) in enumerate(zip(fx, fy)):
            if i >= start_layer:
                loss = loss + self.layer_weights[i] * F.l1_loss(a, b.detach())
        return loss

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        """The VGG has no train-time behaviour; it stays in eval mode."""
        super().train(mode)
        self.vgg.eval()
        return self
