"""Training-time frame augmentations: generic building blocks that the methods compose.

Nothing here is specific to one method; a method builds the augmentation it needs from these
(e.g. `talkinghead.methods.pcavs.augment.PCAVSAugment`) and hands it to the data module as
``TalkingHeadDataModule(augment=...)``. Where a transform follows a paper's description, its
docstring says which.

Conventions
-----------
* **Frames** are floating-point tensors shaped ``(T, 3, H, W)`` (one clip) or
  ``(B, T, 3, H, W)`` (a batch of clips), RGB, values in ``[0, 1]``.  Every
  transform returns a tensor of the same shape, dtype and device, clamped to
  ``[0, 1]``; the input is never modified in place.  Half-precision input is
  processed in float32 and cast back.
* **Landmarks** are ``(T, 68, 2)`` (or ``(..., 68, 2)``) pixel coordinates
  ``(x, y)`` in the same frames, dlib 68-point indexing (jaw 0-16, brows 17-26,
  nose 27-35, eyes 36-47, mouth 48-67).  Pixel ``(x, y)`` is the centre of
  column ``x`` / row ``y`` (kornia / OpenCV convention, ``align_corners=True``).
* **Randomness** is drawn exclusively from torch's *global CPU* generator
  (``torch.rand`` / ``torch.randn`` without a ``generator``), on the CPU, and only
  then moved to the frames' device.  The data module wraps every sample in
  ``torch.random.fork_rng`` with a per-sample seed, so a given seed reproduces a
  given augmentation exactly, whatever the device.  Nothing here uses numpy or
  Python's ``random``.
* **Parameter sharing.**  Each transform is a small class: ``__init__`` holds the
  ranges, ``__call__(frames)`` draws parameters and applies them.  Unless a
  class says it is *per-frame*, one parameter set is drawn per clip and applied
  identically to all ``T`` frames of that clip (for ``(B, T, ...)`` input each of
  the ``B`` clips gets its own independent set).  ``InWindowAugment`` and
  ``ColorJitter(per_frame=True)`` are per-frame: every frame gets its own set.
  Every transform also has a deterministic ``apply(frames, **params)`` taking
  explicit parameters (scalars, or tensors with a leading dimension of ``B`` or
  ``B*T``), and ``sample_params(n, height, width)`` returning ``n`` parameter
  sets.  ``p`` is the per-clip (per-frame for per-frame transforms) probability
  of applying the transform; the gate is drawn even when ``p == 1`` so the
  random stream consumed per call does not depend on ``p``.
* **Geometric padding.**  Warps resample bilinearly; pixels mapped from outside
  the source image are filled by ``padding_mode`` (default ``"reflection"`` so no
  artificial black wedges appear at the borders; ``"zeros"`` reproduces
  OpenCV's default constant border, ``"border"`` replicates edge pixels).

Contents
--------
Colour and geometry (per clip unless stated):

* :class:`ColorTransfer` - random RGB channel permutation with per-channel gain and offset
  (PC-AVS's "colour transfer ... altering RGB channels randomly").
* :class:`PaperPerspective` - the perspective transformation with PC-AVS's source / target
  point construction ``P_s`` / ``P_t`` (:func:`paper_perspective_points`,
  :func:`paper_perspective_matrix`).
* :class:`CenteredRandomCrop` - centred random crop resized back.
* :class:`ColorJitter` - brightness / contrast / saturation / hue jitter (per clip or per frame).
* :class:`RandomPerspective` - generic random perspective (each corner displaced).
* :class:`MotionAppearanceAugment` - colour jitter then perspective: appearance augmentation for
  a motion encoder (PD-FGC's appearance/motion disentanglement stage uses one).
* :class:`InWindowAugment` - in-window decorrelation (**per-frame**): the frames of a window
  around a driving frame each get an independent random rotation, scaling and colour jitter
  (PD-FGC: window size 13).
* :func:`warp_clips` - one homography per clip applied to all its frames with a single sampling
  grid (for fused augmentations).

Eye region (anchor frames for eye-motion contrastive learning, as in PD-FGC):

* :func:`eye_region_mask` / :func:`composite_eye_region` - the eye region of one frame
  composited onto all other regions of another.

Helpers for composing new augmentations: :func:`flatten_frames` (``(T,3,H,W)`` /
``(B,T,3,H,W)`` -> a float ``(B*T,3,H,W)`` working tensor, B, T) and :func:`restore_frames`
(clamp to [0, 1], back to the input's dtype and shape). :class:`Compose` chains transforms.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
import functools
import math
from typing import Callable, Iterable, Sequence

import torch
from kornia.enhance import adjust_contrast_with_mean_subtraction, adjust_hue, adjust_saturation
from kornia.geometry.transform import (
    crop_and_resize,
    get_perspective_transform,
    get_rotation_matrix2d,
    warp_affine,
    warp_perspective,
)

__all__ = [
    "BROW_EYE_INDICES",
    "CenteredRandomCrop",
    "ColorJitter",
    "ColorTransfer",
    "Compose",
    "InWindowAugment",
    "MotionAppearanceAugment",
    "PaperPerspective",
    "RandomPerspective",
    "composite_eye_region",
    "eye_region_mask",
    "flatten_frames",
    "paper_perspective_matrix",
    "paper_perspective_points",
    "restore_frames",
    "warp_clips",
]

#: dlib-68 indices of the brows (17-26) and eyes (36-47): the eye region (as PD-FGC defines it).
BROW_EYE_INDICES: tuple[int, ...] = tuple(range(17, 27)) + tuple(range(36, 48))

_PADDING_MODES = ("zeros", "border", "reflection")

Params = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- helpers
def flatten_frames(frames: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """``(T,3,H,W)`` or ``(B,T,3,H,W)`` -> ``(B*T, 3, H, W)`` working tensor, B, T."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dim() == 4:
        b, t = 1, frames.shape[0]
    elif frames.dim() == 5:
        b, t = frames.shape[0], frames.shape[1]
    else:
        raise ValueError(f"frames must be (T, 3, H, W) or (B, T, 3, H, W), got shape {tuple(frames.shape)}")
    if frames.shape[-3] != 3:
        raise ValueError(f"frames must have 3 (RGB) channels, got shape {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise TypeError(f"frames must be a floating-point tensor in [0, 1], got {frames.dtype}")
    x = frames.reshape(b * t, *frames.shape[-3:])
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x, b, t


def restore_frames(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0).to(like.dtype).reshape(like.shape)


def _uniform(n: int, low: float, high: float, *shape: int) -> torch.Tensor:
    """``n`` draws of U(low, high) from the global CPU generator, float64."""
    return low + (high - low) * torch.rand(n, *shape, dtype=torch.float64)


def _broadcast(value, b: int, t: int, item_shape: tuple[int, ...] = (), dtype=torch.float64) -> torch.Tensor:
    """Explicit parameter -> tensor with leading dim ``B*T``.

    Accepts a single parameter set (shape ``item_shape``), one per clip
    (``(B, *item_shape)``, repeated over T) or one per frame (``(B*T, *item_shape)``).
    """
    v = torch.as_tensor(value, dtype=dtype).detach().cpu()
    n = b * t
    if v.dim() == len(item_shape):
        return v.expand(n, *item_shape).clone()
    if v.dim() == len(item_shape) + 1:
        if v.shape[0] == n:
            return v.clone()
        if v.shape[0] == b:
            return v.repeat_interleave(t, dim=0)
    raise ValueError(
        f"parameter of shape {tuple(v.shape)} does not match {b} clip(s) x {t} frame(s) "
        f"with per-item shape {item_shape}"
    )


def _check_range(name: str, rng: Sequence[float], low: float | None = None) -> tuple[float, float]:
    lo, hi = float(rng[0]), float(rng[1])
    if lo > hi:
        raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
    if low is not None and lo < low:
        raise ValueError(f"{name}: values must be >= {low}, got {lo}")
    return lo, hi


def _check_p(p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return p


def _check_padding(mode: str) -> str:
    if mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {mode!r}")
    return mode


class _FrameTransform(ABC):
    """Base: draw parameters (per clip or per frame), gate with ``p``, apply.

    Subclasses implement ``sample_params(n, height, width) -> dict`` (CPU tensors with
    leading dim ``n``) and ``_apply(x, params) -> x`` on a ``(N, 3, H, W)`` tensor with
    parameters already expanded to ``N`` and moved to ``x.device``.
    """

    per_frame: bool = False
    p: float = 1.0

    @abstractmethod
    def sample_params(self, n: int, height: int, width: int) -> Params:
        """Random parameters for ``n`` clips (or frames), from the global torch RNG."""

    @abstractmethod
    def _apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Apply ``params`` (expanded to ``N``, on ``x.device``) to ``x`` of shape (N, 3, H, W)."""

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x, b, t = flatten_frames(frames)
        h, w = x.shape[-2:]
        n = b * t if self.per_frame else b
        params = self.sample_params(n, h, w)
        gate = torch.rand(n) < self.p
        if not self.per_frame:
            params = {k: v.repeat_interleave(t, dim=0) for k, v in params.items()}
            gate = gate.repeat_interleave(t, dim=0)
        return restore_frames(self._run(x, params, gate), frames)

    def _run(self, x: torch.Tensor, params: Params, gate: torch.Tensor | None = None) -> torch.Tensor:
        if gate is not None and not bool(gate.any()):
            return x
        params = {k: v.to(x.device) for k, v in params.items()}
        out = self._apply(x, params)
        if gate is not None and not bool(gate.all()):
            out = torch.where(gate.to(x.device).view(-1, 1, 1, 1), out, x)
        return out


class Compose:
    """Apply transforms in order; each draws its own parameters from the global RNG."""

    def __init__(self, transforms: Iterable[Callable[[torch.Tensor], torch.Tensor]]):
        self.transforms = list(transforms)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            frames = transform(frames)
        return frames

    def __repr__(self) -> str:
        inner = ", ".join(type(t).__name__ for t in self.transforms)
        return f"{type(self).__name__}([{inner}])"


# --------------------------------------------------------------------------- colour transfer, perspective, crop
class ColorTransfer(_FrameTransform):
    """PC-AVS colour transfer: "altering RGB channels randomly".

    Per clip: a random permutation of the RGB channels (uniform over all six,
    identity included; disable with ``permute=False``), then a per-channel gain
    ``g_c ~ U(gain_range)`` and offset ``o_c ~ U(offset_range)``:
    ``out_c = clamp(g_c * in_{perm[c]} + o_c, 0, 1)``.  Gains are positive, so
    each output channel is a monotone function of one input channel and the
    spatial structure (edges, intensity ordering) is kept.

    Defaults: ``gain_range=(0.7, 1.3)``, ``offset_range=(-0.1, 0.1)``,
    ``permute=True``, ``p=1.0`` (the paper gives no numeric ranges).
    """

    def __init__(
        self,
        gain_range: Sequence[float] = (0.7, 1.3),
        offset_range: Sequence[float] = (-0.1, 0.1),
        permute: bool = True,
        p: float = 1.0,
    ):
        self.gain_range = _check_range("gain_range", gain_range, low=0.0)
        self.offset_range = _check_range("offset_range", offset_range)
        self.permute = bool(permute)
        self.p = _check_p(p)

    def sample_params(self, n: int, height: int = 0, width: int = 0) -> Params:
        scores = torch.rand(n, 3)
        perm = scores.argsort(dim=1) if self.permute else torch.arange(3).expand(n, 3).clone()
        return {
            "perm": perm,
            "gain": _uniform(n, *self.gain_range, 3),
            "offset": _uniform(n, *self.offset_range, 3),
        }

    def _apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        idx = params["perm"].long().view(-1, 3, 1, 1).expand(-1, 3, *x.shape[-2:])
        permuted = torch.gather(x, 1, idx)
        gain = params["gain"].to(x.dtype).view(-1, 3, 1, 1)
        offset = params["offset"].to(x.dtype).view(-1, 3, 1, 1)
        return (permuted * gain + offset).clamp(0.0, 1.0)

    def apply(self, frames: torch.Tensor, perm=(0, 1, 2), gain=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0)) -> torch.Tensor:
        """Deterministic colour transfer with explicit permutation / gains / offsets."""
        x, b, t = flatten_frames(frames)
        params = {
            "perm": _broadcast(perm, b, t, (3,), dtype=torch.long),
            "gain": _broadcast(gain, b, t, (3,)),
            "offset": _broadcast(offset, b, t, (3,)),
        }
        return restore_frames(self._run(x, params), frames)


def paper_perspective_points(r_s, r_t, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The PC-AVS source and target points (Eq. 1 of the paper), float64 ``(..., 4, 2)``.

    ``P_s = [[-r_s, -r_s], [W + r_s, -r_s], [-r_s, H + r_s], [W + r_s, H + r_s]]`` (points
    outside the image by a margin ``r_s``) and ``P_t`` moves the top-left and
    bottom-right points along x by a step ``r_t``:
    ``P_t = [[-r_s + r_t, -r_s], [W + r_s, -r_s], [-r_s, H + r_s], [W + r_s + r_t, H + r_s]]``.
    ``r_s`` / ``r_t`` may be scalars or tensors of matching shape (batched points).
    """
    r_s = torch.as_tensor(r_s, dtype=torch.float64)
    r_t = torch.as_tensor(r_t, dtype=torch.float64)
    r_s, r_t = torch.broadcast_tensors(r_s, r_t)
    w, h = float(width), float(height)
    zero = torch.zeros_like(r_s)
    p_s = torch.stack(
        [
            torch.stack([-r_s, -r_s], -1),
            torch.stack([w + r_s, -r_s], -1),
            torch.stack([-r_s, h + r_s], -1),
            torch.stack([w + r_s, h + r_s], -1),
        ],
        dim=-2,
    )
    shift = torch.stack(
        [
            torch.stack([r_t, zero], -1),
            torch.stack([zero, zero], -1),
            torch.stack([zero, zero], -1),
            torch.stack([r_t, zero], -1),
        ],
        dim=-2,
    )
    return p_s, p_s + shift


def paper_perspective_matrix(r_s, r_t, height: int, width: int) -> torch.Tensor:
    """3x3 homography (float64, ``(..., 3, 3)``) mapping the paper's ``P_s`` onto ``P_t``.

    Column-vector convention (kornia / OpenCV): ``[x', y', w']^T = M [x, y, 1]^T`` and the
    target point is ``(x'/w', y'/w')``.  The paper writes Eq. (1) with row vectors,
    ``[P_t, e] = [P_s, e] * M_paper``, i.e. ``M_paper = M^T``; since ``P_t`` is not a
    parallelogram for ``r_t != 0`` the map is a true homography, solved from the four
    correspondences (as ``cv2.getPerspectiveTransform`` does) with the projective divide.
    ``r_t == 0`` gives the identity for any ``r_s``.
    """
    p_s, p_t = paper_perspective_points(r_s, r_t, height, width)
    batch_shape = p_s.shape[:-2]
    m = get_perspective_transform(p_s.reshape(-1, 4, 2), p_t.reshape(-1, 4, 2))
    m = m / m[:, 2:3, 2:3]
    return m.reshape(*batch_shape, 3, 3)


class PaperPerspective(_FrameTransform):
    """PC-AVS perspective transformation with the paper's ``P_s`` -> ``P_t`` construction.

    Per clip: ``r_s ~ U(0, max_margin * W)`` and ``r_t ~ U(-max_step * W, max_step * W)``;
    the homography mapping ``P_s`` to ``P_t`` (:func:`paper_perspective_matrix`) warps the
    frames (image content at ``P_s`` moves to ``P_t``), bilinear, output size ``H x W``.
    Pixels that come from outside the image are filled by ``padding_mode``
    (default ``"reflection"``; ``"zeros"`` = OpenCV's constant black border).

    Defaults: ``max_margin=0.1``, ``max_step=0.1``, ``p=1.0`` (not given in the paper).
    """

    def __init__(self, max_margin: float = 0.1, max_step: float = 0.1, padding_mode: str = "reflection", p: float = 1.0):
        if max_margin < 0 or max_step < 0:
            raise ValueError("max_margin and max_step must be non-negative")
        self.max_margin = float(max_margin)
        self.max_step = float(max_step)
        self.padding_mode = _check_padding(padding_mode)
        self.p = _check_p(p)

    def sample_params(self, n: int, height: int, width: int) -> Params:
        return {
            "r_s": _uniform(n, 0.0, self.max_margin * width),
            "r_t": _uniform(n, -self.max_step * width, self.max_step * width),
        }

    @staticmethod
    def matrix(r_s, r_t, height: int, width: int) -> torch.Tensor:
        """See :func:`paper_perspective_matrix`."""
        return paper_perspective_matrix(r_s, r_t, height, width)

    def _apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = paper_perspective_matrix(params["r_s"].cpu(), params["r_t"].cpu(), h, w)
        m = m.to(device=x.device, dtype=x.dtype)
        return warp_perspective(x, m, (h, w), mode="bilinear", padding_mode=self.padding_mode, align_corners=True)

    def apply(self, frames: torch.Tensor, r_s=0.0, r_t=0.0) -> torch.Tensor:
        """Deterministic warp with explicit ``r_s`` / ``r_t`` (pixels)."""
        x, b, t = flatten_frames(frames)
        params = {"r_s": _broadcast(r_s, b, t), "r_t": _broadcast(r_t, b, t)}
        return restore_frames(self._run(x, params), frames)


class CenteredRandomCrop(_FrameTransform):
    """PC-AVS centred random crop (robustness to face-detector scale changes).

    Per clip: ``s ~ U(min_scale, max_scale)``; the centred window of ``s*H x s*W``
    (a square of side ``s*W`` for the square face crops used here; for non-square
    frames the aspect ratio is kept) is resized back to ``H x W`` bilinearly.
    Output pixel ``(x, y)`` samples input ``c + s * ((x, y) - c)`` with
    ``c = ((W-1)/2, (H-1)/2)``: the centre stays put, ``s = 1`` is the identity.

    Defaults: ``min_scale=0.8``, ``max_scale=1.0``, ``p=1.0``.
    """

    def __init__(self, min_scale: float = 0.8, max_scale: float = 1.0, p: float = 1.0):
        lo, hi = _check_range("scale", (min_scale, max_scale))
        if lo <= 0 or hi > 1:
            raise ValueError(f"crop scales must lie in (0, 1], got ({lo}, {hi})")
        self.min_scale, self.max_scale = lo, hi
        self.p = _check_p(p)

    def sample_params(self, n: int, height: int = 0, width: int = 0) -> Params:
        return {"scale": _uniform(n, self.min_scale, self.max_scale)}

    def _apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = params["scale"].to(torch.float64)
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        hx, hy = s * (w - 1) / 2.0, s * (h - 1) / 2.0
        x0, x1, y0, y1 = cx - hx, cx + hx, cy - hy, cy + hy
        # kornia box order: top-left, top-right, bottom-right, bottom-left, as (x, y)
        boxes = torch.stack(
            [torch.stack([x0, y0], -1), torch.stack([x1, y0], -1), torch.stack([x1, y1], -1), torch.stack([x0, y1], -1)],
            dim=1,
        ).to(x.dtype)
        return crop_and_resize(x, boxes, (h, w), mode="bilinear", padding_mode="border", align_corners=True)

    def apply(self, frames: torch.Tensor, scale=1.0) -> torch.Tensor:
        """Deterministic centred crop with an explicit scale ``s`` in (0, 1]."""
        x, b, t = flatten_frames(frames)
        return restore_frames(self._run(x, {"scale": _broadcast(scale, b, t)}), frames)


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> torch.Tensor:
    """Homogeneous pixel coordinates ``(H*W, 3)`` as (x, y, 1), row-major, float64 on the CPU (cached)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(height * width, dtype=torch.float64)], -1)


def warp_clips(x: torch.Tensor, forward: torch.Tensor, padding_mode: str = "reflection") -> torch.Tensor:
    """Warp every frame of each clip by its clip's homography, bilinear, output size = input size.

    ``x`` is ``(B, T, C, H, W)``; ``forward`` is ``(B, 3, 3)`` mapping input pixel coordinates to
    output ones (column vectors, as :func:`warp_perspective`).  Output pixel ``p`` samples input
    ``forward^-1 p``; with ``align_corners=True`` this equals kornia's ``warp_perspective``, but the
    sampling grid is built once per clip and shared by its T frames.
    """
    b, t, c, h, w = x.shape
    inverse = torch.linalg.inv(forward.to(torch.float64))  # (B, 3, 3)
    points = _pixel_grid(h, w).to(x.device)  # (HW, 3)
    src = torch.einsum("bij,pj->bpi", inverse, points)
    src = src[..., :2] / src[..., 2:3]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=torch.float64, device=x.device)
    grid = (src * scale - 1.0).to(x.dtype).view(b, 1, h, w, 2).expand(b, t, h, w, 2).reshape(b * t, h, w, 2)
    out = torch.nn.functional.grid_sample(
        x.reshape(b * t, c, h, w), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True
    )
    return out.view(b, t, c, h, w)


# --------------------------------------------------------------------------- colour jitter, perspective, in-window
class ColorJitter(_FrameTransform):
    """Colour jitter (torchvision semantics, fixed order) built on ``kornia.enhance``.

    Factors: brightness ``b ~ U(1-brightness, 1+brightness)`` (multiplicative),
    contrast ``c ~ U(1-contrast, 1+contrast)`` (blend with the mean grey level),
    saturation ``s ~ U(1-saturation, 1+saturation)``, hue shift ``h ~ U(-hue, hue)``
    in fractions of a full turn (``hue <= 0.5``).  Applied in the order brightness,
    contrast, saturation, hue; lower factor bounds are clipped at 0.

    ``per_frame=False`` (default): one set per clip.  ``per_frame=True``: one per frame.
    Defaults: ``brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=1.0``
    (PD-FGC gives no values).
    """

    def __init__(
        self,
        brightness: float = 0.3,
        contrast: float = 0.3,
        saturation: float = 0.3,
        hue: float = 0.05,
        per_frame: bool = False,
        p: float = 1.0,
    ):
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if v < 0:
                raise ValueError(f"{name} must be non-negative, got {v}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = map(float, (brightness, contrast, saturation, hue))
        self.per_frame = bool(per_frame)
        self.p = _check_p(p)

    def sample_params(self, n: int, height: int = 0, width: int = 0) -> Params:
        def factor(v: float) -> torch.Tensor:
            return _uniform(n, max(0.0, 1.0 - v), 1.0 + v)

        return {
            "brightness": factor(self.brightness),
            "contrast": factor(self.contrast),
            "saturation": factor(self.saturation),
            "hue": _uniform(n, -self.hue, self.hue),
        }

    def _apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        dt = x.dtype
        out = (x * params["brightness"].to(dt).view(-1, 1, 1, 1)).clamp(0.0, 1.0)
        out = adjust_contrast_with_mean_subtraction(out, params["contrast"].to(dt))
        out = adjust_saturation(out, params["saturation"].to(dt))
        out = adjust_hue(out, params["hue"].to(dt) * (2.0 * math.pi))
        return out.clamp(0.0, 1.0)

    def apply(self, frames: torch.Tensor, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0) -> torch.Tensor:
        """Deterministic jitter with explicit factors (``hue`` in fractions of a turn)."""
        x, b, t = flatten_frames(frames)
        params = {
            "brightness": _broadcast(brightness, b, t),
            "contrast": _broadcast(contrast, b, t),
            "saturation": _broadcast(saturation, b, t),
            "hue": _broadcast(hue, b, t),
        }
        return restore_frames(self._run(x, params), frames)


class RandomPerspective(_FrameTransform):
    """Generic random perspective: each image corner displaced independently.

    Per clip, corner ``k`` of the image (``(0,0), (W-1,0), (W-1,H-1), (0,H-1)``) moves by
    ``(U(-d, d) * W, U(-d, d) * H)`` with ``d = distortion``; the homography from the
    original to the displaced corners warps the frames.  Default ``distortion=0.08``,
    ``padding_mode="reflection"``, ``p=1.0``.
    """

    def __init__(self, distortion: float = 0.08, padding_mode: str = "reflection", p: float = 1.0):
        if not 0 <= distortion < 0.5:
            raise ValueError(f"distortion must be in [0, 0.5), got {distortion}")
        self.distortion = float(distortion)
        self.padding_mode = _check_padding(padding_mode)
        self.p = _check_p(p)

    def sample_params(self, n: int, height: int, width: int) -> Params:
        scale = torch.tensor([width, height], dtype=torch.float64)
        return {"offsets": _uniform(n, -self.distortion, self.distortion, 4, 2) * scale}

    @staticmethod
    def corners(height: int, width: int) -> torch.Tensor:
        return torch.tensor([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=torch.float64)

    def _apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        h, w = x.shape[-2:]
        offsets = params["offsets"].cpu().to(torch.float64)
        src = self.corners(h, w).expand_as(offsets)
        m = get_perspective_transform(src, src + offsets).to(device=x.device, dtype=x.dtype)
        return warp_perspective(x, m, (h, w), mode="bilinear", padding_mode=self.padding_mode, align_corners=True)

    def apply(self, frames: torch.Tensor, offsets=None) -> torch.Tensor:
        """Deterministic warp with explicit corner ``offsets`` (``(4, 2)`` pixels)."""
        x, b, t = flatten_frames(frames)
        offsets = torch.zeros(4, 2) if offsets is None else offsets
        return restore_frames(self._run(x, {"offsets": _broadcast(offsets, b, t, (4, 2))}), frames)


class MotionAppearanceAugment(Compose):
    """Appearance augmentation for a motion encoder: colour jitter then perspective, per clip.

    Makes a motion encoder ignore appearance (colour) and mild geometric/identity
    shape cues (PD-FGC augments its motion branch this way in the appearance/motion
    disentanglement stage).  ``jitter`` / ``perspective`` may be replaced by pre-built instances
    (e.g. ``perspective=PaperPerspective()``); otherwise built from the keywords.
    Defaults: ``ColorJitter(0.3, 0.3, 0.3, 0.05)`` and ``RandomPerspective(0.08)``.
    """

    def __init__(
        self,
        brightness: float = 0.3,
        contrast: float = 0.3,
        saturation: float = 0.3,
        hue: float = 0.05,
        distortion: float = 0.08,
        p_jitter: float = 1.0,
        p_perspective: float = 1.0,
        padding_mode: str = "reflection",
        jitter: _FrameTransform | None = None,
        perspective: _FrameTransform | None = None,
    ):
        self.jitter = jitter or ColorJitter(brightness, contrast, saturation, hue, per_frame=False, p=p_jitter)
        self.perspective = perspective or RandomPerspective(distortion, padding_mode=padding_mode, p=p_perspective)
        super().__init__([self.jitter, self.perspective])


class InWindowAugment(_FrameTransform):
    """In-window decorrelation augmentation (**per-frame**, as in PD-FGC).

    Every frame gets its own random rotation ``a ~ U(-degrees, degrees)`` (degrees,
    counter-clockwise, about the image centre), isotropic scaling
    ``k ~ U(scale_range)`` and colour jitter (:class:`ColorJitter` ranges).  The
    PD-FGC paper uses a window of ``window_size = 13`` frames around the driving frame
    (see :meth:`window_indices`); ``__call__`` works for any ``T``.

    Defaults: ``degrees=10``, ``scale_range=(0.9, 1.1)``, jitter
    ``(0.3, 0.3, 0.3, 0.05)``, ``padding_mode="reflection"``, ``window_size=13``,
    ``p=1.0`` (per frame).
    """

    per_frame = True

    def __init__(
        self,
        degrees: float = 10.0,
        scale_range: Sequence[float] = (0.9, 1.1),
        brightness: float = 0.3,
        contrast: float = 0.3,
        saturation: float = 0.3,
        hue: float = 0.05,
        padding_mode: str = "reflection",
        window_size: int = 13,
        p: float = 1.0,
    ):
        if degrees < 0:
            raise ValueError(f"degrees must be non-negative, got {degrees}")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.degrees = float(degrees)
        self.scale_range = _check_range("scale_range", scale_range)
        if self.scale_range[0] <= 0:
            raise ValueError("scale_range must be positive")
        self.jitter = ColorJitter(brightness, contrast, saturation, hue, per_frame=True)
        self.padding_mode = _check_padding(padding_mode)
        self.window_size = int(window_size)
        self.p = _check_p(p)

    def window_indices(self, center: int, num_frames: int) -> torch.Tensor:
        """Indices of the ``window_size`` frames centred on ``center``, clamped to the clip.

        Even sizes take one more frame after the centre than before it.
        """
        if not 0 <= center < num_frames:
            raise ValueError(f"center {center} outside a clip of {num_frames} frames")
        half = (self.window_size - 1) // 2
        idx = torch.arange(center - half, center - half + self.window_size)
        return idx.clamp(0, num_frames - 1)

    def sample_params(self, n: int, height: int = 0, width: int = 0) -> Params:
        params = {
            "angle": _uniform(n, -self.degrees, self.degrees),
            "scale": _uniform(n, *self.scale_range),
        }
        params.update({f"jitter_{k}": v for k, v in self.jitter.sample_params(n).items()})
        return params

    def _apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        n, _, h, w = x.shape
        dt = x.dtype
        center = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], device=x.device, dtype=dt).expand(n, 2)
        scale = params["scale"].to(dt).view(n, 1).expand(n, 2)
        m = get_rotation_matrix2d(center, params["angle"].to(dt), scale)
        out = warp_affine(x, m, (h, w), mode="bilinear", padding_mode=self.padding_mode, align_corners=True)
        jitter = {k[len("jitter_"):]: v for k, v in params.items() if k.startswith("jitter_")}
        return self.jitter._apply(out.clamp(0.0, 1.0), jitter)

    def apply(
        self, frames: torch.Tensor, angle=0.0, scale=1.0, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0
    ) -> torch.Tensor:
        """Deterministic version; each parameter is a scalar or has a leading dim ``B`` or ``B*T``."""
        x, b, t = flatten_frames(frames)
        params = {
            "angle": _broadcast(angle, b, t),
            "scale": _broadcast(scale, b, t),
            "jitter_brightness": _broadcast(brightness, b, t),
            "jitter_contrast": _broadcast(contrast, b, t),
            "jitter_saturation": _broadcast(saturation, b, t),
            "jitter_hue": _broadcast(hue, b, t),
        }
        return restore_frames(self._run(x, params), frames)


# --------------------------------------------------------------------------- eye region
def eye_region_mask(
    landmarks: torch.Tensor,
    height: int,
    width: int,
    margin: float = 0.1,
    feather: float = 0.04,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Soft mask of the brows + eyes region, ``(..., 68, 2)`` landmarks -> ``(..., 1, H, W)``.

    The region is the axis-aligned bounding box of landmarks 17-26 (brows) and 36-47
    (eyes), enlarged on every side by ``margin`` times the box width (the brow span,
    so the mask scales with the face), then feathered by a Gaussian blur of standard
    deviation ``feather`` times the box width.  The blur of the box is computed in
    closed form (a product of error-function differences, i.e. the exact continuous
    Gaussian blur, no kernel truncation): ~1 well inside the box, 0.5 on its border,
    ~0 a few sigmas outside.  ``feather=0`` gives a hard 0/1 box.

    Defaults ``margin=0.1``, ``feather=0.04``: for a 224 px aligned face (brow span
    ~100 px) that is a 10 px margin and a 4 px blur; the mouth is far outside.
    """
    lm = torch.as_tensor(landmarks)
    if lm.dim() < 2 or tuple(lm.shape[-2:]) != (68, 2):
        raise ValueError(f"landmarks must be (..., 68, 2), got shape {tuple(lm.shape)}")
    if margin < 0 or feather < 0:
        raise ValueError("margin and feather must be non-negative")
    if dtype is None:
        dtype = lm.dtype if lm.is_floating_point() and lm.dtype not in (torch.float16, torch.bfloat16) else torch.float32
    lm = lm.to(dtype)
    idx = torch.tensor(BROW_EYE_INDICES, device=lm.device)
    pts = lm.index_select(-2, idx)
    lo = pts.amin(dim=-2)  # (..., 2)
    hi = pts.amax(dim=-2)
    span = (hi[..., 0] - lo[..., 0]).clamp_min(1.0)  # (...,)
    pad = (margin * span).unsqueeze(-1)
    lo, hi = lo - pad, hi + pad
    sigma = feather * span

    xs = torch.arange(width, device=lm.device, dtype=dtype)
    ys = torch.arange(height, device=lm.device, dtype=dtype)

    def profile(coords: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # coords (L,), a/b/sigma (...,) -> (..., L): Gaussian-blurred indicator of [a, b]
        c = coords.view(*([1] * a.dim()), -1)
        a, b, s = a.unsqueeze(-1), b.unsqueeze(-1), sigma.unsqueeze(-1)
        if feather == 0:
            return ((c >= a) & (c <= b)).to(dtype)
        k = s * math.sqrt(2.0)
        return 0.5 * (torch.erf((c - a) / k) - torch.erf((c - b) / k))

    mx = profile(xs, lo[..., 0], hi[..., 0])  # (..., W)
    my = profile(ys, lo[..., 1], hi[..., 1])  # (..., H)
    mask = my.unsqueeze(-1) * mx.unsqueeze(-2)  # (..., H, W)
    return mask.clamp(0.0, 1.0).unsqueeze(-3)


def composite_eye_region(base: torch.Tensor, donor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PD-FGC eye-contrastive anchor: ``donor * mask + base * (1 - mask)``.

    The anchor carries the eye region (gaze, blink) of ``donor`` and everything else
    (mouth, pose, expression elsewhere) of ``base``.  Frames are aligned to the same
    canonical face positions (VoxCeleb alignment, 224 px centre crop), so a single
    mask, typically ``eye_region_mask`` of the donor's landmarks, fits both frames;
    for less well aligned pairs take ``torch.maximum`` of both frames' masks.

    ``base`` and ``donor``: same shape ``(..., 3, H, W)`` in [0, 1]; ``mask``
    ``(..., 1, H, W)`` (or anything broadcastable) in [0, 1].  Returns ``base``'s
    dtype / device.
    """
    if base.shape != donor.shape:
        raise ValueError(f"base {tuple(base.shape)} and donor {tuple(donor.shape)} must have the same shape")
    if base.dim() < 3 or base.shape[-3] != 3:
        raise ValueError(f"frames must be (..., 3, H, W), got {tuple(base.shape)}")
    m = mask.to(device=base.device, dtype=base.dtype).clamp(0.0, 1.0)
    try:
        out = donor.to(base.dtype) * m + base * (1.0 - m)
    except RuntimeError as exc:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to frames {tuple(base.shape)}") from exc
    if out.shape != base.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to frames {tuple(base.shape)}")
    return out.clamp(0.0, 1.0)
