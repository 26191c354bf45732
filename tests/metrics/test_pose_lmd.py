"""LMD-pose: zero on frames equal to the pose source, ~k px on a k-px shift, LMD-contour's numbers."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from talkinghead.data.faces import detect_landmarks
from talkinghead.data.store import ClipStore
from talkinghead.metrics import build_metric, metric_names
from talkinghead.metrics.lmd import LMD
from talkinghead.metrics.pose_lmd import PoseLMD

pytest.importorskip("dlib")


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def _shift(images: np.ndarray, dx: int) -> np.ndarray:
    return np.stack([cv2.warpAffine(f, np.float32([[1, 0, dx], [0, 1, 0]]), (224, 224), borderMode=cv2.BORDER_REPLICATE)
                     for f in images])


@pytest.fixture(scope="module")
def source(synth_vox2_store) -> tuple[np.ndarray, np.ndarray]:
    """Four aligned 224-px frames where dlib finds a face (uint8 (4, 224, 224, 3)) and their landmarks."""
    candidates = ClipStore(synth_vox2_store).load_frames(0, range(0, 40, 3))
    landmarks, found = detect_landmarks(candidates)
    assert found.sum() >= 4
    return candidates[found][:4], landmarks[found][:4]


def test_registered_with_one_column_and_no_ground_truth_input():
    assert "pose_lmd" in metric_names()
    metric = build_metric("pose_lmd")
    assert isinstance(metric, PoseLMD)
    assert PoseLMD.columns == {"LMD-pose": False}
    assert PoseLMD.inputs == ("fake", "pose_landmarks")
    assert list(PoseLMD.sets["LMD-pose"]) == list(range(17))
    import talkinghead.metrics.pose_lmd as module

    assert "differ in shape" in module.__doc__ and "same protocol" in module.__doc__  # the stated caveat


def test_frames_equal_to_the_pose_source_give_zero(source):
    frames, landmarks = source
    metric = PoseLMD()
    metric.update(_tensor(frames), torch.from_numpy(landmarks))
    assert metric.compute()["LMD-pose"].item() == 0.0
    assert metric.measured_frames.item() == 4 and metric.skipped_frames.item() == 0


def test_grows_with_a_shift_and_matches_lmd_contour(source):
    frames, landmarks = source
    values = []
    for shift in (3, 6):
        moved = _tensor(_shift(frames, shift))
        metric = PoseLMD()
        metric.update(moved, torch.from_numpy(landmarks))
        value = metric.compute()["LMD-pose"].item()
        # dlib is not exactly shift-equivariant (see test_lmd): 1 px plus a quarter of the shift
        assert value == pytest.approx(shift, abs=1.0 + 0.25 * shift)
        lmd = LMD()
        lmd.update(moved, real_landmarks=torch.from_numpy(landmarks))
        assert value == pytest.approx(lmd.compute()["LMD-contour"].item(), abs=1e-5)
        values.append(value)
    assert values[1] > values[0] > 1.0


def test_scripted_detector_scaling_skips_and_shape_error():
    """Only the jaw line counts; 448-px frames are reported at 224 px; NaN target rows are skipped."""
    rng = np.random.default_rng(0)
    target = rng.uniform(50, 400, (68, 2)).astype(np.float32)
    moved = target.copy()
    moved[:17] += np.float32([6, 8])  # 10 px at 448 -> 5 px at 224
    moved[48:] += 40  # the mouth does not count
    metric = PoseLMD(detector=lambda image: moved)
    pose = np.repeat(target[None], 3, axis=0)
    pose[1] = np.nan  # no face in that pose-source frame
    metric.update(torch.ones(3, 3, 448, 448), pose)
    assert metric.compute()["LMD-pose"].item() == pytest.approx(5.0, abs=1e-4)
    assert metric.skipped_frames.item() == 1 and metric.measured_frames.item() == 2
    with pytest.raises(ValueError, match=r"pose_landmarks must be \(3, 68, 2\), got \(2, 68, 2\)"):
        metric.update(torch.ones(3, 3, 448, 448), pose[:2])
    empty = PoseLMD(detector=lambda image: None)
    empty.update(torch.ones(2, 3, 64, 64), pose[:2])
    assert empty.skipped_clips.item() == 1 and torch.isnan(empty.compute()["LMD-pose"])
