"""LMD-pose: does the generated head follow the pose source? Jaw-line landmark distance to it.

Convention (that of `talkinghead.metrics.lmd`, whose detection and averaging it reuses):

* inputs: ``fake`` (T, 3, H, W) generated frames in [0, 1] and ``pose_landmarks`` (T, 68, 2)
  float, the ground-truth dlib-68 landmarks of the *pose-source* frame shown at each t, in the
  generated frames' pixel coordinates, NaN rows where that frame has no face. The benchmark
  harness gives the landmarks that the metric's own detector finds on the pose-source frames
  (the clip's own frames when self-driven; another clip's, frame min(t, len - 1) or its first
  frame repeated, when the protocol's cross sources include the pose);
* landmarks of ``fake``: dlib's 68 points, detected as LMD does (8-bit RGB, not centred or
  aligned); the backend or a detector callable is a constructor argument;
* ``LMD-pose`` (lower is better): Euclidean distance between the jaw-contour points 0-16 of the
  generated frame and of the pose source, **mean** over the 17 points, in pixels **of a 224-px
  frame** (other widths W scaled by 224 / W), averaged over frames, then clips. Frames where
  either side has no face are skipped and counted (``skipped_frames``), clips with none left
  too (``skipped_clips``).

It needs no ground truth of the clip itself, so it is defined in the cross-driven setting as
well, where it measures pose transfer. In that setting the reference (identity) face and the
pose-source face differ in shape: even a perfect pose transfer leaves a jaw-line offset, the
same for every method given the same clips. The number is therefore not an error in pixels of
head pose: only differences between methods on the same protocol (same clips, same pose
sources) are meaningful, e.g. PC-AVS driven by the pose source vs PC-AVS with a fixed pose.
Self-driven, the pose source is the clip itself and LMD-pose equals LMD-contour.
"""
from __future__ import annotations

import numpy as np
from torch import Tensor

from talkinghead.metrics.base import register_metric
from talkinghead.metrics.image import frames_to_uint8
from talkinghead.metrics.lmd import LANDMARK_SETS, LandmarkDistance, as_landmarks

__all__ = ["PoseLMD"]


@register_metric("pose_lmd")
class PoseLMD(LandmarkDistance):
    """Mean jaw-contour distance (points 0-16, pixels at 224 px) between the generated frames and
    the pose source's landmarks; see the module docstring (and `LandmarkDistance` for the
    constructor: ``backend`` / ``detector``)."""

    inputs = ("fake", "pose_landmarks")
    #: the generated frames' landmarks, when the harness has detected them (as LMD's)
    optional_inputs = ("fake_landmarks",)
    columns = {"LMD-pose": False}
    sets = {"LMD-pose": LANDMARK_SETS["LMD-contour"]}

    def update(self, fake: Tensor, pose_landmarks: Tensor | np.ndarray,
               fake_landmarks: Tensor | np.ndarray | None = None) -> None:
        fake_images = frames_to_uint8(fake)
        target, found = as_landmarks(pose_landmarks, len(fake_images), "pose_landmarks")
        self.score(fake_images, target, found, fake_landmarks)
