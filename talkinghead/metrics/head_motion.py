"""Head-motion scores: how far the generated head pose is from the real one, and how real its motion
looks (velocity statistics and coupling with the audio), compared with the real clip's own.

Rhythmic Head (Chen et al., ECCV 2020) generates head motion from audio; its paper shows motion
curves but defines no number. These columns make "natural head motion" measurable and comparable
across methods (all lower is better; all need the real clip, so they are n/a cross-driven).

Poses
-----
Every frame's head pose is estimated from its dlib-68 landmarks with the data layer's rigid fit
(`talkinghead.data.faces.estimate_head_pose`: weak-perspective fit of the canonical 3D template;
rotation vector r_t in radians, translation (tx, ty) in pixels, log scale), on both the generated
and the real frames (landmarks detected by this metric's detector, or given by the harness as
``fake_landmarks`` / ``real_landmarks``), with the landmarks first scaled to a 224-px frame (x'
= (x + 0.5) 224 / W - 0.5), so translations are in pixels of the aligned 224 px frame whatever the
frame size. A frame without a face has no pose and is left out of every term that needs it.

Columns (per clip, then averaged over the clips where the column is defined)
------------------------------------------------------------------------------
``HM-rot``        mean over frames of the geodesic angle between the generated and the real head
                  rotation, angle(R(r_fake,t) R(r_real,t)^T), in **degrees**.
``HM-trans``      mean over frames of the Euclidean distance between the generated and the real
                  (tx, ty), in **pixels at 224 px**.
``HM-speed``      | mean(w_fake) - mean(w_real) |, w_t the angular speed of the head between frames
                  t and t+1: angle(R_t+1 R_t^T) x fps, in **degrees per second** (fps 25); the
                  poses are first smoothed over time with a centred moving average of
                  ``smooth`` frames (default 5, 0.2 s; rotation vectors averaged component-wise,
                  exact enough for the small frame-to-frame changes) so that landmark jitter,
                  which differs between sharp real and blurrier generated frames, does not
                  dominate the speed. A head that does not move scores the real clip's mean speed.
``HM-speed-std``  | std(w_fake) - std(w_real) |, the same speeds' standard deviations (population,
                  ddof 0), degrees per second: how much the motion varies (rhythm vs. constant drift).
``HM-audio``      | corr(w_fake, e) - corr(w_real, e) |, corr the Pearson correlation over t
                  between the angular speed w_t and the audio energy envelope e_t: the RMS level
                  in dB (20 log10(max(rms, 1e-5))) of the audio under frames t and t+1 (samples
                  [640 t, 640 (t + 2))). How strongly the generated motion follows the speech
                  energy, against how strongly the real motion does. A generated head that does
                  not move has corr 0 (it follows nothing); a clip whose real speed or audio
                  energy is constant (std < 1e-6) has no defined correlation and is skipped for
                  this column.

A clip needs 3 frames with a pose (``HM-rot`` / ``HM-trans``: 1 with both poses) for a column,
and ``HM-audio`` 5 consecutive-pair speeds; skipped clips are counted per column
(``skipped_clips``).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from talkinghead.data.faces import estimate_head_pose, rotation_matrix
from talkinghead.metrics.base import register_metric
from talkinghead.metrics.image import frames_to_uint8
from talkinghead.metrics.lmd import REFERENCE_WIDTH, LandmarkMetric, as_landmarks

__all__ = ["COLUMNS", "HeadMotion", "angular_speed", "audio_energy", "head_motion_scores", "landmark_poses",
           "rotation_angle", "smooth_poses"]

FPS = 25
SAMPLES_PER_FRAME = 640
COLUMNS = ("HM-rot", "HM-trans", "HM-speed", "HM-speed-std", "HM-audio")


def rotation_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle (radians) between rotations given as rotation vectors a, b (N, 3): the angle of
    R(a) R(b)^T, in [0, pi]. NaN where either row is not finite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a, b)):
        if np.isfinite(x).all() and np.isfinite(y).all():
            m = rotation_matrix(x) @ rotation_matrix(y).T
            sine = 0.5 * np.linalg.norm([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
            out[i] = np.arctan2(sine, (np.trace(m) - 1.0) / 2.0)  # exact near 0 (arccos is not)
    return out


def landmark_poses(landmarks: np.ndarray, width: int) -> np.ndarray:
    """(T, 68, 2) landmarks in the pixels of a `width`-px frame (NaN rows: no face) -> (T, 6) poses
    (`estimate_head_pose` of the landmarks scaled to 224 px), NaN rows without a face."""
    lm = np.asarray(landmarks, np.float64)
    k = REFERENCE_WIDTH / float(width)
    lm = (lm + 0.5) * k - 0.5
    found = np.isfinite(lm).all(axis=(1, 2))
    poses = np.full((len(lm), 6), np.nan)
    if found.any():
        poses[found] = estimate_head_pose(lm[found])
    return poses


def smooth_poses(poses: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of (T, 6) poses over `window` frames (odd; 0 / 1: none), over the
    frames with a pose only (a missing frame stays NaN and is left out of its neighbours' means;
    the window shrinks at the ends)."""
    poses = np.asarray(poses, np.float64)
    if window <= 1:
        return poses.copy()
    half = window // 2
    found = np.isfinite(poses).all(1)
    out = np.full_like(poses, np.nan)
    for t in np.nonzero(found)[0]:
        lo, hi = max(0, t - half), min(len(poses), t + half + 1)
        out[t] = poses[lo:hi][found[lo:hi]].mean(0)
    return out


def angular_speed(poses: np.ndarray, fps: float = FPS) -> np.ndarray:
    """(T - 1,) angular speed between consecutive frames in degrees per second: the geodesic angle of
    R_t+1 R_t^T x fps; NaN where either frame has no pose."""
    poses = np.asarray(poses, np.float64)
    if len(poses) < 2:
        return np.zeros(0)
    return np.degrees(rotation_angle(poses[1:, :3], poses[:-1, :3])) * float(fps)


def audio_energy(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames - 1,) the audio level in dB under frames t and t+1 (samples [640 t, 640 (t + 2)),
    zero-padded): 20 log10(max(RMS, 1e-5)), aligned with `angular_speed`."""
    wav = np.asarray(audio, np.float64).reshape(-1)
    need = num_frames * SAMPLES_PER_FRAME
    if len(wav) < need:
        wav = np.pad(wav, (0, need - len(wav)))
    frames = wav[:need].reshape(num_frames, SAMPLES_PER_FRAME)
    power = (frames ** 2).mean(1)
    pair = (power[:-1] + power[1:]) / 2.0
    return 20.0 * np.log10(np.maximum(np.sqrt(pair), 1e-5))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def head_motion_scores(fake_poses: np.ndarray, real_poses: np.ndarray, audio: np.ndarray | None = None,
                       fps: float = FPS, smooth: int = 5) -> dict[str, float]:
    """The columns of one clip (module docstring) from its generated and real poses (T, 6) (NaN rows:
    no face) and its audio (N,) 16 kHz; NaN for a column the clip does not define."""
    fake_poses, real_poses = np.asarray(fake_poses, np.float64), np.asarray(real_poses, np.float64)
    if fake_poses.shape != real_poses.shape or fake_poses.ndim != 2 or fake_poses.shape[1] != 6:
        raise ValueError(f"poses must both be (T, 6), got {fake_poses.shape} and {real_poses.shape}")
    out = {c: float("nan") for c in COLUMNS}
    both = np.isfinite(fake_poses).all(1) & np.isfinite(real_poses).all(1)
    if both.any():
        out["HM-rot"] = float(np.degrees(rotation_angle(fake_poses[both, :3], real_poses[both, :3])).mean())
        out["HM-trans"] = float(np.linalg.norm(fake_poses[both, 3:5] - real_poses[both, 3:5], axis=1).mean())
    w_fake = angular_speed(smooth_poses(fake_poses, smooth), fps)
    w_real = angular_speed(smooth_poses(real_poses, smooth), fps)
    ok_fake, ok_real = np.isfinite(w_fake), np.isfinite(w_real)
    if ok_fake.sum() >= 2 and ok_real.sum() >= 2:
        out["HM-speed"] = abs(float(w_fake[ok_fake].mean()) - float(w_real[ok_real].mean()))
        out["HM-speed-std"] = abs(float(w_fake[ok_fake].std()) - float(w_real[ok_real].std()))
    if audio is not None:
        energy = audio_energy(audio, len(fake_poses))
        ok = ok_fake & ok_real
        if ok.sum() >= 5 and np.std(w_real[ok]) > 1e-6 and np.std(energy[ok]) > 1e-6:
            r_real = _pearson(w_real[ok], energy[ok])
            r_fake = 0.0 if np.std(w_fake[ok]) < 1e-6 else _pearson(w_fake[ok], energy[ok])
            out["HM-audio"] = abs(r_fake - r_real)
    return out


@register_metric("head_motion")
class HeadMotion(LandmarkMetric):
    """Head-motion scores (module docstring): pose error against the real clip (``HM-rot`` degrees,
    ``HM-trans`` px at 224) and closeness of the motion's speed statistics and audio coupling to the
    real clip's (``HM-speed``, ``HM-speed-std`` deg/s; ``HM-audio`` correlation difference).

    Inputs ``fake``, ``real`` (T, 3, H, W) in [0, 1] and ``audio`` (N,) 16 kHz; landmarks from the
    harness (``fake_landmarks`` / ``real_landmarks``) when it has them, else detected here
    (`LandmarkMetric`: ``backend`` / ``detector``). smooth: the speed's moving-average window (frames);
    fps: the frame rate (25).
    """

    inputs = ("fake", "real", "audio")
    optional_inputs = ("fake_landmarks", "real_landmarks")
    columns = {"HM-rot": False, "HM-trans": False, "HM-speed": False, "HM-speed-std": False, "HM-audio": False}
    nan_reasons: ClassVar[dict[str, str]] = {
        **{c: "no clip with a face found in enough generated and real frames" for c in COLUMNS},
        "HM-audio": "no clip whose real head speed and audio energy both vary (correlation undefined)",
    }

    def __init__(self, smooth: int = 5, fps: float = FPS, **kwargs):
        super().__init__(**kwargs)
        if int(smooth) < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth, self.fps = int(smooth), float(fps)
        self.add_state("sums", torch.zeros(len(COLUMNS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(len(COLUMNS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("skipped_clips", torch.zeros(len(COLUMNS), dtype=torch.float64), dist_reduce_fx="sum")

    def _landmarks(self, frames: Tensor, given, name: str) -> np.ndarray:
        images = frames_to_uint8(frames)
        if given is None:
            points, _ = self.landmarks(images)
            return np.asarray(points, np.float64)
        points, _ = as_landmarks(given, len(images), name)
        return points.astype(np.float64)

    def update(self, fake: Tensor, real: Tensor, audio: Tensor, fake_landmarks: Tensor | None = None,
               real_landmarks: Tensor | None = None) -> None:
        if fake.shape != real.shape:
            raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} differ")
        width = int(fake.shape[-1])
        fake_poses = landmark_poses(self._landmarks(fake, fake_landmarks, "fake_landmarks"), width)
        real_poses = landmark_poses(self._landmarks(real, real_landmarks, "real_landmarks"), width)
        wav = np.asarray(torch.as_tensor(audio).detach().cpu(), np.float64)
        scores = head_motion_scores(fake_poses, real_poses, wav, self.fps, self.smooth)
        for i, column in enumerate(COLUMNS):
            if np.isfinite(scores[column]):
                self.sums[i] += scores[column]
                self.counts[i] += 1
            else:
                self.skipped_clips[i] += 1

    def compute(self) -> dict[str, Tensor]:
        means = self.sums / self.counts.clamp(min=1)
        means[self.counts == 0] = float("nan")
        return {c: means[i].float() for i, c in enumerate(COLUMNS)}
