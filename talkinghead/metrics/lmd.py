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
  the frames' pixel coordinates (NaN rows = no face) to skip detecting them again, and
  ``fake_landmarks`` likewise for the generated frames (the harness detects those once for all
  landmark metrics).

`LandmarkDistance` holds the detection, distance and averaging shared with other landmark
metrics (`talkinghead.metrics.pose_lmd`: the jaw line against the pose source's landmarks).
"""
from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
import torch
from torch import Tensor

from talkinghead.data.faces import detect_landmarks, get_landmark_detector
from talkinghead.weights import MissingWeightsError
from talkinghead.metrics.base import ClipMetric, register_metric
from talkinghead.metrics.image import frames_to_uint8

__all__ = ["LMD", "LANDMARK_SETS", "LandmarkDistance", "LandmarkMetric", "as_landmarks"]

#: Column -> dlib-68 point indices.
LANDMARK_SETS: dict[str, np.ndarray] = {
    "LMD": np.arange(68),
    "LMD-mouth": np.arange(48, 68),
    "LMD-contour": np.arange(0, 17),
}
REFERENCE_WIDTH = 224

Detector = Callable[[np.ndarray], "np.ndarray | None"]


def as_landmarks(landmarks: Tensor | np.ndarray, num_frames: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Given landmarks (T, 68, 2) (NaN rows = no face) -> float32 array and found (T,) bool.

    Raises ValueError naming `name` when the shape is not (num_frames, 68, 2)."""
    points = np.asarray(torch.as_tensor(landmarks).detach().cpu(), dtype=np.float32)
    if points.shape != (num_frames, 68, 2):
        raise ValueError(f"{name} must be ({num_frames}, 68, 2), got {points.shape}")
    return points, np.isfinite(points).all(axis=(1, 2))


class LandmarkMetric(ClipMetric):
    """A metric that detects dlib-68 landmarks on frames; not registered.

    `backend` names a landmark backend of `talkinghead.data.faces` ("dlib", the default, or
    "face_alignment"); `detector`, when given, is any callable mapping a (H, W, 3) uint8 RGB image to
    (68, 2) landmarks or None, and is used instead. The harness detects the generated frames once
    per backend for every landmark metric and passes them as ``fake_landmarks``.
    """

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


class LandmarkDistance(LandmarkMetric):
    """Mean distance (pixels at 224 px) between landmarks detected on generated frames and target
    landmarks, one column per point set of `sets` (column -> dlib-68 indices); not registered.

    The module docstring states the convention; `LandmarkMetric` the ``backend`` / ``detector``
    arguments. States ``skipped_frames`` / ``measured_frames`` / ``skipped_clips`` count what was
    left out. Subclasses define `sets`, `columns` (the same keys), `inputs` and `update`, which
    calls `score`.
    """

    sets: ClassVar[dict[str, np.ndarray]] = {}

    def __init__(self, backend: str = "dlib", detector: Detector | None = None, **kwargs):
        if not self.sets:
            raise TypeError(f"{type(self).__name__} defines no landmark sets")
        super().__init__(backend, detector, **kwargs)
        self.add_state("sums", torch.zeros(len(self.sets), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("measured_frames", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped_frames", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped_clips", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, fake_images: np.ndarray, target: np.ndarray, target_found: np.ndarray,
              fake_landmarks: Tensor | np.ndarray | None = None) -> None:
        """Add one clip: detect on `fake_images` (T, H, W, 3) uint8 (or take `fake_landmarks`
        (T, 68, 2), NaN rows = no face, already detected on them) and compare with `target`
        (T, 68, 2) in the same pixels (`target_found` (T,) bool: frames with a target face)."""
        num_frames, width = len(fake_images), fake_images.shape[2]
        if fake_landmarks is None:
            fake_lm, fake_found = self.landmarks(fake_images)
        else:
            fake_lm, fake_found = as_landmarks(fake_landmarks, num_frames, "fake_landmarks")
        valid = fake_found & target_found
        self.skipped_frames += int(num_frames - valid.sum())
        if not valid.any():
            self.skipped_clips += 1
            return
        distance = np.linalg.norm(fake_lm[valid].astype(np.float64) - target[valid], axis=-1)  # (V, 68)
        distance *= REFERENCE_WIDTH / width
        per_set = [distance[:, idx].mean(axis=1).mean() for idx in self.sets.values()]
        self.sums += torch.tensor(per_set, dtype=torch.float64, device=self.sums.device)
        self.measured_frames += int(valid.sum())
        self.clips += 1

    def compute(self) -> dict[str, Tensor]:
        if self.clips == 0:
            nan = torch.tensor(float("nan"), device=self.sums.device)
            return {name: nan for name in self.sets}
        means = (self.sums / self.clips).float()
        return {name: means[i] for i, name in enumerate(self.sets)}


@register_metric("lmd")
class LMD(LandmarkDistance):
    """Mean landmark distance (pixels at 224 px) between generated and ground-truth frames.

    See the module docstring for the convention and `LandmarkDistance` for the constructor.
    """

    inputs = ("fake", "real")
    #: Passed when the harness has them: landmarks of the ground-truth frames, and of the
    #: generated frames (detected once by the harness for every landmark metric).
    optional_inputs = ("real_landmarks", "fake_landmarks")
    columns = {"LMD": False, "LMD-mouth": False, "LMD-contour": False}
    sets = LANDMARK_SETS

    def update(self, fake: Tensor, real: Tensor | None = None, real_landmarks: Tensor | np.ndarray | None = None,
               fake_landmarks: Tensor | np.ndarray | None = None) -> None:
        fake_images = frames_to_uint8(fake)
        if real_landmarks is not None:
            real_lm, real_found = as_landmarks(real_landmarks, len(fake_images), "real_landmarks")
        elif real is not None:
            if tuple(real.shape) != tuple(fake.shape):
                raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} frames differ in shape")
            real_lm, real_found = self.landmarks(frames_to_uint8(real))
        else:
            raise ValueError("LMD needs the ground truth: `real` frames or `real_landmarks`")
        self.score(fake_images, real_lm, real_found, fake_landmarks)
