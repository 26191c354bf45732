"""Head-motion scores (`talkinghead.metrics.head_motion`) on hand-made pose sequences whose values are
known exactly: pose error in degrees and pixels, speed statistics in degrees per second, and the
audio-correlation difference; then the registered metric end to end on landmarks projected from
known poses."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from talkinghead.data import faces
from talkinghead.metrics import build_metric, metric_names
from talkinghead.metrics.head_motion import (
    angular_speed,
    audio_energy,
    head_motion_scores,
    rotation_angle,
    smooth_poses,
)

T = 40


def yaw_poses(yaw_degrees, tx=100.0, ty=110.0) -> np.ndarray:
    """(T, 6) poses turning about the vertical axis by the given angles (degrees)."""
    yaw = np.radians(np.asarray(yaw_degrees, np.float64))
    out = np.zeros((len(yaw), 6))
    out[:, 1] = yaw
    out[:, 3], out[:, 4] = tx, ty
    return out


def test_rotation_angle_is_the_geodesic_angle():
    a = np.array([[0.0, math.radians(30), 0.0], [0.1, 0.2, 0.3], [np.nan, 0, 0]])
    b = np.array([[0.0, math.radians(10), 0.0], [0.1, 0.2, 0.3], [0, 0, 0]])
    angle = np.degrees(rotation_angle(a, b))
    assert angle[0] == pytest.approx(20.0, abs=1e-9) and angle[1] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(angle[2])
    # about different axes: 90 deg yaw vs 90 deg pitch is 120 degrees apart
    assert np.degrees(rotation_angle(np.array([[0, math.pi / 2, 0]]), np.array([[math.pi / 2, 0, 0]])))[0] == \
        pytest.approx(120.0, abs=1e-9)


def test_pose_error_speed_and_spread_have_their_known_values():
    real = yaw_poses(np.arange(T) * 1.0)  # turning at 1 degree per frame = 25 deg/s
    fake = yaw_poses(np.full(T, 10.0), tx=103.0, ty=114.0)  # still, 10 degrees off on average? see below
    scores = head_motion_scores(fake, real, None, smooth=1)
    assert scores["HM-rot"] == pytest.approx(np.abs(10.0 - np.arange(T)).mean(), abs=1e-6)
    assert scores["HM-trans"] == pytest.approx(5.0, abs=1e-9)  # (3, 4) px off in every frame
    assert scores["HM-speed"] == pytest.approx(25.0, abs=1e-6)  # still head vs 25 deg/s
    assert scores["HM-speed-std"] == pytest.approx(0.0, abs=1e-6)  # both speeds are constant
    assert math.isnan(scores["HM-audio"])  # no audio given
    # a head alternating 0 / 2 degrees per frame: same mean speed, std 25 deg/s
    steps = np.where(np.arange(T - 1) % 2 == 0, 0.0, 2.0)
    jerky = yaw_poses(np.concatenate([[0.0], np.cumsum(steps)]))
    scores = head_motion_scores(jerky, real, None, smooth=1)
    speeds = angular_speed(jerky)
    assert speeds.mean() == pytest.approx(25 * steps.mean(), abs=1e-6)
    assert scores["HM-speed"] == pytest.approx(abs(25 * steps.mean() - 25.0), abs=1e-6)
    assert scores["HM-speed-std"] == pytest.approx(25 * steps.std(), abs=1e-6)
    # identical motion scores zero everywhere
    same = head_motion_scores(real, real, None, smooth=5)
    assert same["HM-rot"] == pytest.approx(0, abs=1e-6) and same["HM-trans"] == 0
    assert same["HM-speed"] == pytest.approx(0, abs=1e-9) and same["HM-speed-std"] == pytest.approx(0, abs=1e-9)


def test_audio_correlation_difference():
    rng = np.random.default_rng(0)
    loud = rng.uniform(0.02, 0.5, T)  # per-frame amplitude
    audio = np.concatenate([a * np.sign(rng.standard_normal(640)) for a in loud])  # RMS = a exactly
    energy = audio_energy(audio, T)
    assert energy.shape == (T - 1,)
    assert energy[0] == pytest.approx(20 * np.log10(np.sqrt((loud[0] ** 2 + loud[1] ** 2) / 2)), abs=1e-9)
    # real speed = an affine function of the energy: corr +1
    speed = (energy - energy.min()) * 0.1 + 0.2  # degrees per frame
    real = yaw_poses(np.concatenate([[0.0], np.cumsum(speed)]))
    still = yaw_poses(np.zeros(T))
    opposite = yaw_poses(np.concatenate([[0.0], np.cumsum(speed.max() + 0.2 - speed)]))  # corr -1
    assert head_motion_scores(real, real, audio, smooth=1)["HM-audio"] == pytest.approx(0.0, abs=1e-6)
    assert head_motion_scores(still, real, audio, smooth=1)["HM-audio"] == pytest.approx(1.0, abs=1e-6)
    assert head_motion_scores(opposite, real, audio, smooth=1)["HM-audio"] == pytest.approx(2.0, abs=1e-6)
    # a real head that never moves: correlation undefined, the column is skipped
    assert math.isnan(head_motion_scores(real, still, audio, smooth=1)["HM-audio"])


def test_missing_faces_and_smoothing():
    real = yaw_poses(np.arange(T) * 1.0)
    fake = real.copy()
    fake[5] = np.nan
    scores = head_motion_scores(fake, real, None, smooth=1)
    assert scores["HM-rot"] == pytest.approx(0.0, abs=1e-6)  # the faceless frame is left out
    # a moving average keeps a constant-speed turn's inner speeds and damps alternating jitter: +-0.5
    # degrees per frame moves the raw speed by +-25 deg/s, the 5-frame mean by +-5 (residual +-0.1)
    jitter = real.copy()
    jitter[:, 1] += np.radians(0.5) * (-1) ** np.arange(T)
    inner = angular_speed(smooth_poses(jitter, 5))[3:-3]
    assert np.abs(inner - 25.0).max() == pytest.approx(5.0, abs=1e-6)
    assert np.abs(angular_speed(jitter) - 25.0).max() == pytest.approx(25.0, abs=1e-6)
    assert np.isnan(smooth_poses(fake, 5)[5]).all() and np.isfinite(smooth_poses(fake, 5)[6]).all()


def test_registered_metric_on_projected_landmarks():
    """End to end: landmarks projected from known poses (the data layer's template, 224 px frames)
    -> the metric's poses -> the known scores; a broken pose path or average fails here."""
    assert "head_motion" in metric_names()
    template = faces.face_template()
    real = yaw_poses(np.linspace(-10, 10, T))
    real[:, 5] = 0.0
    fake = real.copy()
    fake[:, 1] += math.radians(5.0)  # 5 degrees more yaw in every frame
    fake[:, 3] += 6.0  # 6 px to the right

    def landmarks(poses):
        return torch.tensor(np.stack([faces.project(template, p, faces.POSE_REFERENCE_IOD) for p in poses]),
                            dtype=torch.float32)

    frames = torch.zeros(T, 3, 224, 224)
    metric = build_metric("head_motion", smooth=1, detector=lambda image: None)
    audio = torch.zeros(T * 640)
    metric.update(frames, frames, audio, fake_landmarks=landmarks(fake), real_landmarks=landmarks(real))
    out = metric.compute()
    assert float(out["HM-rot"]) == pytest.approx(5.0, abs=0.05)
    assert float(out["HM-trans"]) == pytest.approx(6.0, abs=0.1)
    assert float(out["HM-speed"]) == pytest.approx(0.0, abs=0.05)
    assert math.isnan(float(out["HM-audio"]))  # silent audio: the correlation is undefined
    # 112 px frames: the same landmarks at half size give the same degrees and 224-px pixels
    half = build_metric("head_motion", smooth=1, detector=lambda image: None)
    small = torch.zeros(T, 3, 112, 112)
    half.update(small, small, audio, fake_landmarks=(landmarks(fake) + 0.5) / 2 - 0.5,
                real_landmarks=(landmarks(real) + 0.5) / 2 - 0.5)
    assert float(half.compute()["HM-trans"]) == pytest.approx(6.0, abs=0.1)
