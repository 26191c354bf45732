"""PC-AVS target-frame augmentation (Zhou et al., CVPR 2021, Sec. 3.1 "target frame augmentation").

The frames fed to PC-AVS's non-identity encoder E_n go through `PCAVSAugment`: colour transfer,
the paper's perspective transformation and a centred random crop. The three building blocks are
generic and live in `talkinghead.data.transforms` (`ColorTransfer`, `PaperPerspective`,
`CenteredRandomCrop`; conventions in that module's docstring: frames ``(T, 3, H, W)`` or
``(B, T, 3, H, W)`` in [0, 1], randomness from torch's global CPU generator). The data module
takes an instance as ``TalkingHeadDataModule(augment=PCAVSAugment())`` (`talkinghead.methods.pcavs.method`
builds it from the config's ``data.augment: pcavs``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from talkinghead.data.transforms import (
    CenteredRandomCrop,
    ColorTransfer,
    Compose,
    PaperPerspective,
    flatten_frames,
    paper_perspective_matrix,
    restore_frames,
    warp_clips,
)

__all__ = ["PCAVSAugment"]


class PCAVSAugment(Compose):
    """PC-AVS target-frame augmentation for the non-identity encoder input.

    ``ColorTransfer`` -> ``PaperPerspective`` -> ``CenteredRandomCrop``, each enabled by
    its flag and applied per clip with its probability (parameters shared by all
    frames of a clip).  Keyword defaults are those of the three classes.  Pre-built
    instances may be passed instead (``color_transfer=...`` etc.), then the matching
    range / probability keywords are ignored.

    Speed: the colour transfer runs as one 3x3 channel matrix plus offset per clip, and the
    perspective warp and the centred crop are composed into one homography per clip, so each
    frame is resampled once (`talkinghead.data.transforms.warp_clips`) instead of twice.  Pixels that the perspective
    brings in from outside the image are filled by its ``padding_mode``; the centred crop never
    samples outside.  The single resampling is slightly sharper than two successive bilinear
    ones; otherwise the result equals applying the three transforms in order.
    """

    def __init__(
        self,
        color: bool = True,
        perspective: bool = True,
        crop: bool = True,
        p_color: float = 1.0,
        p_perspective: float = 1.0,
        p_crop: float = 1.0,
        gain_range: Sequence[float] = (0.7, 1.3),
        offset_range: Sequence[float] = (-0.1, 0.1),
        permute: bool = True,
        max_margin: float = 0.1,
        max_step: float = 0.1,
        min_scale: float = 0.8,
        padding_mode: str = "reflection",
        color_transfer: ColorTransfer | None = None,
        paper_perspective: PaperPerspective | None = None,
        centered_crop: CenteredRandomCrop | None = None,
    ):
        self.color_transfer = color_transfer or ColorTransfer(gain_range, offset_range, permute=permute, p=p_color)
        self.paper_perspective = paper_perspective or PaperPerspective(
            max_margin, max_step, padding_mode=padding_mode, p=p_perspective
        )
        self.centered_crop = centered_crop or CenteredRandomCrop(min_scale, 1.0, p=p_crop)
        chain: list[Callable[[torch.Tensor], torch.Tensor]] = []
        if color:
            chain.append(self.color_transfer)
        if perspective:
            chain.append(self.paper_perspective)
        if crop:
            chain.append(self.centered_crop)
        super().__init__(chain)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x, b, t = flatten_frames(frames)
        h, w = x.shape[-2:]
        x = x.view(b, t, 3, h, w)
        if self.color_transfer in self.transforms:
            x = self._color(x)
        forward = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
        warped = torch.zeros(b, dtype=torch.bool)
        if self.paper_perspective in self.transforms:
            params = self.paper_perspective.sample_params(b, h, w)
            gate = torch.rand(b) < self.paper_perspective.p
            m = paper_perspective_matrix(params["r_s"], params["r_t"], h, w)
            forward = torch.where(gate.view(-1, 1, 1), m, forward)
            warped |= gate
        if self.centered_crop in self.transforms:
            s = self.centered_crop.sample_params(b)["scale"]
            gate = torch.rand(b) < self.centered_crop.p
            crop = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
            crop[:, 0, 0] = crop[:, 1, 1] = 1.0 / s  # output = c + (input - c) / s
            crop[:, 0, 2] = (w - 1) / 2.0 * (1.0 - 1.0 / s)
            crop[:, 1, 2] = (h - 1) / 2.0 * (1.0 - 1.0 / s)
            forward = torch.where(gate.view(-1, 1, 1), crop @ forward, forward)
            warped |= gate
        if bool(warped.all()):
            x = warp_clips(x, forward.to(x.device), self.paper_perspective.padding_mode)
        elif bool(warped.any()):
            out = warp_clips(x, forward.to(x.device), self.paper_perspective.padding_mode)
            x = torch.where(warped.to(x.device).view(-1, 1, 1, 1, 1), out, x)
        return restore_frames(x, frames)

    def _color(self, x: torch.Tensor) -> torch.Tensor:
        """Colour transfer of ``(B, T, 3, H, W)`` as ``out = clamp(C @ rgb + o)`` with one 3x3 C per clip."""
        b, t, _, h, w = x.shape
        params = self.color_transfer.sample_params(b)
        gate = torch.rand(b) < self.color_transfer.p
        if not bool(gate.any()):
            return x
        matrix = torch.zeros(b, 3, 3, dtype=torch.float64)
        matrix.scatter_(2, params["perm"].long().view(b, 3, 1), params["gain"].view(b, 3, 1))
        offset = params["offset"]
        matrix = torch.where(gate.view(-1, 1, 1), matrix, torch.eye(3, dtype=torch.float64))
        offset = torch.where(gate.view(-1, 1), offset, torch.zeros_like(offset))
        out = torch.matmul(matrix.to(x).view(b, 1, 3, 3), x.reshape(b, t, 3, h * w))  # (B, T, 3, H*W)
        out += offset.to(x).view(b, 1, 3, 1)
        return out.clamp_(0.0, 1.0).view(b, t, 3, h, w)
