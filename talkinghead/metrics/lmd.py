"""LMD: landmark distance between generated and ground-truth frames (Chen et al. 2018).

Convention (stated because papers differ: sum vs mean, centred or not, frame size):

* landmarks: dlib's 68 points (`talkinghead.data.faces`, the suite's one landmark interface;
  the backend or a detector callable is a constructor argument), detected on the frames as they
  come (RGB quantised to 8 bits), not centred or aligned to each other;
* distance: the Euclidean distance between corresponding points, **mean** over the points of a
  set, in pixels **of a 224-px frame** (frames of another width W are measured in their own
  pixels and scaled by 224 / W);
* sets: ``LMD`` all 68 points (0-67), ``LMD-mouth`` the mouth (48-67), ``LMD-contour`` the jaw
  line (0-16, a head-pose proxy); lower is better;
* averaged over the frames of a clip, then over clips;
* a frame where no face is found in the generated or in the ground-truth frame is skipped and
  counted (``skipped_frames``); a clip with no measurable frame does not enter the average
  (``skipped_clips``). Ground-truth landmarks can be passed as ``real_landmarks`` (T, 68, 2) in
  the frames' pixel coordinates (NaN rows = no face) to skip detecting them again.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from talkinghead.data.faces import detect_landmarks, get_landmark_detector
from talkinghead.weights import MissingWeightsError
from talkinghead.metrics.base import ClipMetric, register_metric
from talkinghead.metrics.image import frames_to_uint8

__all__ = ["LMD", "LANDMARK_SETS"]

#: Column -> dlib-68 point indices.
LANDMARK_SETS: dict[str, np.ndarray] = {
    "LMD": np.arange(68),
    "LMD-mouth": np.arange(48, 68),
    "LMD-contour": np.arange(0, 17),
}
REFERENCE_WIDTH = 224

Detector = Callable[[np.ndarray], "np.ndarray | None"]


@register_metric("lmd")
class LMD(ClipMetric):
    """Mean landmark distance (pixels at 224 px) between generated and ground-truth frames.

    See the module docstring for the convention. `backend` names a landmark backend of
    `talkinghead.data.faces` ("dlib", the default, or "face_alignment"); `detector`, when given,
    is any callable mapping a (H, W, 3) uint8 RGB image to (68, 2) landmarks or None, and is used
    instead. States ``skipped_frames`` / ``measured_frames`` / ``skipped_clips`` count what was
    left out.
    """

    inputs = ("fake", "real")
    #: Passed when the harness has them (the clip store's landmarks of the ground-truth frames).
    optional_inputs = ("real_landmarks",)
    columns = {"LMD": False, "LMD-mouth": False, "LMD-contour": False}

    def __init__(self, backend: str = "dlib", detector: Detector | None = None, **kwargs):
        super().__init__(**kwargs)
        self.backend = backend
        self.detector = detector
        if detector is None:
            try:  # fail now (unknown backend, missing model), not mid-run
                get_landmark_detector(backend)
            except FileNotFoundError as error:
                if isinstance(error, MissingWeightsError):
                    raise
                raise MissingWeightsError(str(error)) from error
        self.add_state("sums", torch.zeros(len(LANDMARK_SETS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("measured_frames", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped_frames", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped_clips", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def landmarks(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, H, W, 3) uint8 -> landmarks (T, 68, 2) float32 (NaN where no face) and found (T,)."""
        if self.detector is None:
            return detect_landmarks(images, self.backend)
        out = np.full((len(images), 68, 2), np.nan, dtype=np.float32)
        found = np.zeros(len(images), dtype=bool)
        for i, image in enumerate(images):
            points = self.detector(image)
            if points is not None:
                out[i], found[i] = points, True
        return out, found

    def update(self, fake: Tensor, real: Tensor | None = None, real_landmarks: Tensor | np.ndarray | None = None) -> None:
        fake_images = frames_to_uint8(fake)
        num_frames, width = len(fake_images), fake_images.shape[2]
        if real_landmarks is not None:
            real_lm = np.asarray(torch.as_tensor(real_landmarks).detach().cpu(), dtype=np.float32)
            if real_lm.shape != (num_frames, 68, 2):
                raise ValueError(f"real_landmarks must be ({num_frames}, 68, 2), got {real_lm.shape}")
            real_found = np.isfinite(real_lm).all(axis=(1, 2))
        elif real is not None:
            if tuple(real.shape) != tuple(fake.shape):
                raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} frames differ in shape")
            real_lm, real_found = self.landmarks(frames_to_uint8(real))
        else:
            raise ValueError("LMD needs the ground truth: `real` frames or `real_landmarks`")
        fake_lm, fake_found = self.landmarks(fake_images)

        valid = fake_found & real_found
        self.skipped_frames += int(num_frames - valid.sum())
        if not valid.any():
            self.skipped_clips += 1
            return
        distance = np.linalg.norm(fake_lm[valid].astype(np.float64) - real_lm[valid], axis=-1)  # (V, 68)
        distance *= REFERENCE_WIDTH / width
        per_set = [distance[:, idx].mean(axis=1).mean() for idx in LANDMARK_SETS.values()]
        self.sums += torch.tensor(per_set, dtype=torch.float64, device=self.sums.device)
        self.measured_frames += int(valid.sum())
        self.clips += 1

    def compute(self) -> dict[str, Tensor]:
        if self.clips == 0:
            nan = torch.tensor(float("nan"), device=self.sums.device)
            return {name: nan for name in LANDMARK_SETS}
        means = (self.sums / self.clips).float()
        return {name: means[i] for i, name in enumerate(LANDMARK_SETS)}
