"""LMD: zero on identical frames, ~k px on a k-px shift, mouth-only edits show in LMD-mouth."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from talkinghead.data.faces import detect_landmarks
from talkinghead.data.store import ClipStore
from talkinghead.metrics import build_metric
from talkinghead.metrics.lmd import LANDMARK_SETS, LMD

pytest.importorskip("dlib")


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def store(synth_vox2_store) -> ClipStore:
    return ClipStore(synth_vox2_store)


@pytest.fixture(scope="module")
def frames(store) -> np.ndarray:
    """Four aligned 224-px SynthTalk frames of one clip where dlib finds a face, uint8 (4, 224, 224, 3)."""
    candidates = store.load_frames(0, range(0, 40, 3))
    _, found = detect_landmarks(candidates)
    assert found.sum() >= 4
    return candidates[found][:4]


def test_registered_columns():
    metric = build_metric("lmd")
    assert isinstance(metric, LMD)
    assert LMD.columns == {"LMD": False, "LMD-mouth": False, "LMD-contour": False}
    assert list(LANDMARK_SETS["LMD-mouth"]) == list(range(48, 68))
    assert list(LANDMARK_SETS["LMD-contour"]) == list(range(17))


def test_identical_frames_give_zero(frames):
    metric = LMD()
    metric.update(_tensor(frames), _tensor(frames))
    result = metric.compute()
    assert all(value.item() == 0.0 for value in result.values())
    assert metric.measured_frames.item() == 4 and metric.skipped_frames.item() == 0


@pytest.mark.parametrize("shift", [3, 6])
def test_shift_gives_shift_on_contour(frames, shift):
    moved = np.stack([
        cv2.warpAffine(f, np.float32([[1, 0, shift], [0, 1, 0]]), (224, 224), borderMode=cv2.BORDER_REPLICATE)
        for f in frames
    ])
    metric = LMD()
    metric.update(_tensor(moved), _tensor(frames))
    result = metric.compute()
    # dlib is not exactly shift-equivariant (its detection box snaps to a grid, and SynthTalk frames can
    # differ by a grey level between runs): allow 1 px plus a quarter of the shift.
    tolerance = 1.0 + 0.25 * shift
    assert result["LMD-contour"].item() == pytest.approx(shift, abs=tolerance)
    assert result["LMD"].item() == pytest.approx(shift, abs=tolerance)


def test_mouth_only_edit_shows_in_mouth_column(store):
    """Paste an open mouth (from another frame of the same clip) into a closed-mouth frame."""
    metric = LMD()
    for clip in range(len(store)):
        mouth = store.load(clip, ["truth_mouth"])["truth_mouth"][:, 0]
        closed, opened = store.load_frames(clip, [int(np.argmin(mouth)), int(np.argmax(mouth))])
        landmarks, found = detect_landmarks(np.stack([closed, opened]))
        if not found.all():
            continue
        mask = np.zeros((224, 224), np.float32)
        hull = cv2.convexHull(np.concatenate([landmarks[0, 48:68], landmarks[1, 48:68]]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1.0)
        mask = cv2.GaussianBlur(cv2.dilate(mask, np.ones((9, 9), np.uint8)), (0, 0), 2)[..., None]
        edited = np.round(closed * (1 - mask) + opened * mask).astype(np.uint8)
        metric.update(_tensor(edited[None]), _tensor(closed[None]))
    assert metric.clips.item() >= 2
    result = metric.compute()
    assert result["LMD-mouth"].item() > 2.0
    assert result["LMD-mouth"].item() > 1.5 * result["LMD-contour"].item()


def test_no_face_frames_are_skipped_and_counted(frames):
    blank = frames.copy()
    blank[1] = 128  # no face in this generated frame
    metric = LMD()
    metric.update(_tensor(blank), _tensor(frames))
    assert metric.skipped_frames.item() == 1 and metric.measured_frames.item() == 3
    assert metric.compute()["LMD"].item() == 0.0  # the three remaining frames are identical


def test_given_real_landmarks_and_custom_detector():
    """Column arithmetic with a scripted detector: the mouth moved by 5 px, the rest unchanged,
    frames of 448 px (distances are reported at 224 px)."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(50, 400, (68, 2)).astype(np.float32)
    moved = truth.copy()
    moved[48:68] += np.float32([3, 4])  # 5 px at 448 -> 2.5 px at 224
    detector = lambda image: moved if image[0, 0, 0] > 0 else None  # noqa: E731
    fake = torch.ones(3, 3, 448, 448)
    fake[2] = 0  # third frame: "no face"
    metric = LMD(detector=detector)
    metric.update(fake, real_landmarks=np.repeat(truth[None], 3, axis=0))
    result = metric.compute()
    assert result["LMD-mouth"].item() == pytest.approx(2.5, abs=1e-4)
    assert result["LMD-contour"].item() == pytest.approx(0.0, abs=1e-6)
    assert result["LMD"].item() == pytest.approx(2.5 * 20 / 68, abs=1e-4)
    assert metric.skipped_frames.item() == 1
