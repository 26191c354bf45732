import numpy as np
import pytest
import skimage.data
import torch

from talkinghead.data import faces
from talkinghead.data.corpora import read_corpus
from talkinghead.data.store import ClipStore
from talkinghead.data.video import read_video


def test_template_file_is_rebuilt_from_the_astronaut():
    landmarks = faces.get_landmark_detector("dlib")(skimage.data.astronaut())
    np.testing.assert_allclose(faces.build_face_template(landmarks), faces.face_template(), atol=1e-5)
    template = faces.face_template()
    eyes = faces.anchor_points(template[:, :2])
    assert np.linalg.norm(eyes[1] - eyes[0]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(template[faces.MIRROR, 0], -template[:, 0], atol=1e-5)  # symmetric


@pytest.mark.parametrize("rotvec", [(0, 0, 0), (0.1, -0.2, 0.05), (-0.15, 0.3, -0.1)])
def test_head_pose_recovers_a_planted_pose(rotvec):
    pose = np.array([*rotvec, 118.0, 97.0, 0.12])
    points = faces.project(faces.face_template(), pose, 50.0)
    estimate = faces.estimate_head_pose(points[None])[0]
    np.testing.assert_allclose(estimate, pose, atol=1e-3)


def test_head_pose_rejects_nothing_but_orders_yaw():
    left = faces.project(faces.face_template(), np.array([0, 0.25, 0, 112, 100, 0]), 50.0)
    right = faces.project(faces.face_template(), np.array([0, -0.25, 0, 112, 100, 0]), 50.0)
    yaw = faces.estimate_head_pose(np.stack([left, right]))[:, 1]
    assert yaw[0] > 0.2 and yaw[1] < -0.2


def _face_with_target_proportions() -> np.ndarray:
    """Template landmarks whose eye/eye/mouth anchor triangle is similar to ALIGN_ANCHORS'."""
    lm = faces.face_template()[:, :2].astype(np.float64) * 50.0
    anchors = faces.anchor_points(lm)
    eye_mid = anchors[:2].mean(0)
    wanted_mouth = eye_mid + np.array([0.0, 61.0 / 50.0]) * np.linalg.norm(anchors[1] - anchors[0])
    lm[48:68] += wanted_mouth - anchors[2]
    return lm


def test_alignment_puts_anchors_on_their_targets():
    rng = np.random.default_rng(0)
    angle, scale, shift = 0.3, 2.7, np.array([310.0, 170.0])  # rolled, large, off-centre face
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lm = _face_with_target_proportions() @ rot.T + shift
    landmarks = (lm[None] + rng.normal(0, 0.05, (6, 68, 2))).astype(np.float32)
    frames = np.zeros((6, 360, 480, 3), np.uint8)
    aligned, aligned_lm, _ = faces.align_clip(frames, landmarks)
    assert aligned.shape == (6, 224, 224, 3)
    anchors = faces.anchor_points(aligned_lm)
    assert np.linalg.norm(anchors - faces.ALIGN_ANCHORS, axis=-1).max() < 1.0


def test_alignment_warps_the_image_with_the_landmarks():
    frames = np.zeros((1, 300, 300, 3), np.uint8)
    lm = (_face_with_target_proportions() * 1.5 + [150, 120]).astype(np.float32)
    left_eye = faces.anchor_points(lm)[0]
    frames[0, int(round(left_eye[1])) - 1:int(round(left_eye[1])) + 2,
           int(round(left_eye[0])) - 1:int(round(left_eye[0])) + 2] = 255
    aligned, _, _ = faces.align_clip(frames, lm[None])
    y, x = np.unravel_index(aligned[0, ..., 0].argmax(), (224, 224))
    assert abs(x - 87) <= 1 and abs(y - 59) <= 1


def test_alignment_tracks_the_mouth_of_a_moving_synthtalk_face(synth_vox2):
    clip = read_corpus("vox2", synth_vox2)[0]
    truth = np.load(clip.truth)["landmarks"]
    frames, _ = read_video(clip.video)
    aligned, aligned_lm, transforms = faces.align_clip(frames, truth)
    anchors = faces.anchor_points(aligned_lm)
    iod = np.linalg.norm(anchors[:, 1] - anchors[:, 0], axis=-1)
    assert np.abs(iod.mean() - 50.0) < 5.0
    assert np.linalg.norm(anchors[:, 2] - faces.ALIGN_ANCHORS[2], axis=-1).max() < 1.0
    # the image moved with the landmarks: dlib finds the face where the mapped truth says
    # (aligned faces are 50/46 larger than SynthTalk's and resampled, hence 4 px rather than 3)
    detected, found = faces.detect_landmarks(aligned[::4])
    assert found.all()
    assert faces.landmark_error(detected, aligned_lm[::4]).mean() < 4.0


def test_dlib_finds_synthtalk_faces_with_small_error(synth_vox2):
    found_all, errors = [], []
    for clip in read_corpus("vox2", synth_vox2):
        frames, _ = read_video(clip.video)
        truth = np.load(clip.truth)["landmarks"]
        landmarks, found = faces.detect_landmarks(frames)
        found_all.append(found)
        errors.append(faces.landmark_error(landmarks[found], truth[found]))
    assert np.concatenate(found_all).mean() >= 0.9
    assert np.concatenate(errors).mean() <= 3.0


def test_fill_missing_interpolates_and_refuses_empty():
    lm = np.zeros((5, 68, 2), np.float32)
    lm[:, :, 0] = np.arange(5)[:, None] * 2.0
    found = np.array([True, False, False, True, True])
    lm[~found] = np.nan
    filled = faces.fill_missing(lm, found)
    np.testing.assert_allclose(filled[1:3, 0, 0], [2.0, 4.0])
    with pytest.raises(ValueError, match="no face"):
        faces.fill_missing(lm, np.zeros(5, bool))


def test_unknown_backend_lists_choices():
    with pytest.raises(ValueError, match="dlib, face_alignment"):
        faces.get_landmark_detector("s3fd")


def test_loader_crop_maps_points_with_the_image():
    frame = np.zeros((1, 224, 224, 3), np.uint8)
    frame[0, 100, 60] = 255
    cropped = faces.loader_crop(frame)[0]
    y, x = np.unravel_index(cropped[..., 0].argmax(), cropped.shape[:2])
    expected = faces.loader_crop_points(np.array([[60.0, 100.0]]))[0]
    assert abs(x - expected[0]) <= 1.0 and abs(y - expected[1]) <= 1.0


def test_track_missing_fills_missed_faces_but_not_frames_without_one():
    from talkinghead.data.synthtalk.generate import factor_sweep

    frames, truth = factor_sweep(48, 0, 8, candidates=1)
    noise = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    frames = np.concatenate([frames, noise])
    landmarks, found = faces.detect_landmarks(frames)
    assert found[:8].all() and not found[8:].any()
    hidden = found.copy()
    hidden[[2, 3, 6]] = False  # as if the detector had missed these faces
    masked = landmarks.copy()
    masked[~hidden] = np.nan
    tracked_landmarks, tracked = faces.track_missing(frames, masked, hidden)
    assert tracked.tolist() == [False, False, True, True, False, False, True, False, False, False]
    error = faces.landmark_error(tracked_landmarks[[2, 3, 6]], truth["landmarks"][[2, 3, 6]])
    assert error.max() < 6.0  # detected frames: about 3-4 px
    assert np.isnan(tracked_landmarks[8:]).all()
    np.testing.assert_array_equal(tracked_landmarks[hidden], masked[hidden])


def test_threaded_detection_equals_sequential(synth_vox2_store):
    """detect_landmarks in threads (one dlib detector per thread) gives the sequential result."""
    from talkinghead.data.faces import detect_landmarks

    frames = ClipStore(synth_vox2_store).load_frames(0, range(0, 40, 2))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        sequential = detect_landmarks(frames)
        torch.set_num_threads(4)
        threaded = detect_landmarks(frames)
    finally:
        torch.set_num_threads(before)
    assert sequential[1].all()
    assert np.array_equal(sequential[1], threaded[1]) and np.array_equal(sequential[0], threaded[0])


def test_detections_are_remembered_by_image(synth_vox2_store, monkeypatch):
    """FrontalFaceDetector runs dlib once per (image content, upsample), across instances, and
    keeps at most CACHE_SIZE entries."""
    from talkinghead.data.faces import FrontalFaceDetector

    monkeypatch.setattr(FrontalFaceDetector, "_cache", type(FrontalFaceDetector._cache)())
    monkeypatch.setattr(FrontalFaceDetector, "CACHE_SIZE", 3)
    frames = ClipStore(synth_vox2_store).load_frames(0, [0, 10, 20, 30])
    first, second = FrontalFaceDetector(), FrontalFaceDetector()
    boxes = first(frames[0], 1)
    assert len(boxes) == 1
    assert second(frames[0].copy(), 1) is boxes  # same content, another array and instance
    assert second(frames[0], 0) is not boxes  # another upsample is another detection
    changed = frames[0].copy()
    changed[:8] = 0
    assert second(changed, 1) is not boxes
    for frame in frames[1:]:
        first(frame, 1)
    assert len(FrontalFaceDetector._cache) == 3 and first(frames[0], 1) is not boxes  # evicted, detected anew


def test_rescale_points_maps_pixel_centres_and_the_frame_edges():
    import torch

    from talkinghead.data.faces import rescale_points

    # pixel centres at integers: the frame edges -0.5 / 223.5 stay edges (-0.5 / 55.5); pixel 3 of 224 spans
    # [2.5, 3.5), a quarter as wide at 56 px: [0.25, 0.5), centre 0.375
    pts = np.array([[-0.5, 223.5], [3.0, 111.5]])
    out = rescale_points(pts, 56, 224)
    assert np.allclose(out, [[-0.5, 55.5], [0.375, 27.5]])
    assert torch.allclose(rescale_points(torch.from_numpy(pts), 56, 224), torch.from_numpy(out))
    assert np.allclose(rescale_points(out, 224, 56), pts)  # and back
