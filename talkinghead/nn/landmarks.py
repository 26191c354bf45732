"""A landmark network: the FAN hourglass's 68 heatmaps read out by a soft-argmax.

`LandmarkNet` maps (B, 3, S, S) RGB in [-1, 1] to (B, 68, 2) landmark positions (x, y) in the input's
pixels (pixel centres at integers, the clip store's convention). It is the `talkinghead.nn.fan.FAN`
trunk up to its landmark heatmaps (``l0``, at S / 4; the trunk's ``conv6`` / ``fc`` feature head is
not built), followed by a spatial softmax of each heatmap (a learnt inverse temperature, started at
``temperature``) whose expectation over the cell centres is the landmark. Face-alignment's FAN
reads its landmarks from the same heatmaps by arg-max; the soft version is differentiable in the
input, which is what a loss on generated frames needs (PD-FGC's motion stage,
``loss.motion_landmarks``). No published weights load into it: it is trained here, on a store's
landmarks.
"""
from __future__ import annotations

import torch
from torch import nn

from talkinghead.nn.fan import FAN, FANConfig

__all__ = ["LandmarkNet", "soft_argmax"]


def soft_argmax(heatmaps: torch.Tensor, beta: torch.Tensor | float, input_size: int) -> torch.Tensor:
    """(B, K, H, W) heatmaps -> (B, K, 2) expected (x, y) under softmax(beta * heatmap), in the pixels
    of an `input_size` image the heatmaps cover (cell centre j at (j + 0.5) * input_size / W - 0.5)."""
    b, k, h, w = heatmaps.shape
    prob = torch.softmax(heatmaps.flatten(2) * beta, dim=-1).view(b, k, h, w)
    xs = (torch.arange(w, dtype=prob.dtype, device=prob.device) + 0.5) * (input_size / w) - 0.5
    ys = (torch.arange(h, dtype=prob.dtype, device=prob.device) + 0.5) * (input_size / h) - 0.5
    return torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], dim=-1)


class LandmarkNet(nn.Module):
    """FAN heatmaps + soft-argmax (module docstring): forward (B, 3, S, S) -> (B, 68, 2) in input pixels.

    config: the trunk's `FANConfig` (``image_size`` the side of the frames it reads; ``num_heatmaps``
            must be 68; ``feature_dim`` is unused).
    temperature: the softmax's starting inverse temperature (learnt as a log).
    """

    def __init__(self, config: FANConfig, temperature: float = 1.0):
        super().__init__()
        if config.num_heatmaps != 68:
            raise ValueError(f"LandmarkNet needs 68 heatmaps, got FANConfig.num_heatmaps {config.num_heatmaps}")
        self.config = config
        trunk = FAN(config)
        del trunk.conv6, trunk.fc, trunk.bn5  # the feature head: not part of the landmark network
        self.trunk = trunk
        self.log_beta = nn.Parameter(torch.tensor(float(temperature)).log())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if tuple(images.shape[-2:]) != (size, size):
            raise ValueError(f"LandmarkNet built for {size} px frames, got {tuple(images.shape)}")
        return soft_argmax(self.trunk.heatmaps(images), self.log_beta.exp(), size)
