"""dlib's face-recognition ResNet read from its .dat file into torch: equal to dlib's descriptor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead import weights
from talkinghead.data.store import ClipStore
from talkinghead.nn.dlib_resnet import DlibFaceResNet, DlibFormatError, read_dlib_face_resnet

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def model_file():
    return weights.resolve("dlib_face_descriptor")


@pytest.fixture(scope="module")
def faces(synth_vox2_store):
    """(image, 5-point shape) of 8 SynthTalk frames, two per clip of four clips."""
    store = ClipStore(synth_vox2_store)
    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(weights.resolve("dlib_landmarks5")))
    out = []
    for clip in range(min(4, len(store))):
        for image in store.load_frames(clip, [0, 30]):
            image = np.ascontiguousarray(image)
            rects = detector(image, 1)
            if len(rects):
                out.append((image, shapes(image, max(rects, key=lambda r: r.area()))))
    assert len(out) >= 6
    return out


def test_reads_every_layer(model_file):
    parsed = read_dlib_face_resnet(model_file)
    kinds = [kind[0] for kind, _ in parsed["layers"]]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("fc") == 1
    assert parsed["mean_rgb"] == pytest.approx([122.782, 117.001, 104.298], abs=1e-3)
    model = DlibFaceResNet.from_dlib_file(model_file)
    assert sum(p.numel() for p in model.parameters()) > 5_000_000


def test_equals_dlib_descriptor(model_file, faces):
    reference = dlib.face_recognition_model_v1(str(model_file))
    model = DlibFaceResNet.from_dlib_file(model_file)
    chips = np.stack([dlib.get_face_chip(image, shape, size=150, padding=0.25) for image, shape in faces])
    with torch.inference_mode():
        ours = model(torch.from_numpy(chips).permute(0, 3, 1, 2).float()).numpy()
    theirs = np.stack([np.asarray(reference.compute_face_descriptor(image, shape, 0, 0.25)) for image, shape in faces])
    assert np.abs(ours - theirs).max() < 1e-5
    # and the faces are told apart as dlib tells them: same pairwise distances
    distance = lambda e: np.linalg.norm(e[:, None] - e[None], axis=-1)  # noqa: E731
    assert np.abs(distance(ours) - distance(theirs)).max() < 1e-5


def test_bad_files_are_named(tmp_path, model_file):
    data = model_file.read_bytes()
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match="truncated.dat"):
        read_dlib_face_resnet(truncated)
    other = tmp_path / "landmarks.dat"
    other.write_bytes(weights.resolve("dlib_landmarks5").read_bytes())
    with pytest.raises(DlibFormatError, match="landmarks.dat"):
        read_dlib_face_resnet(other)
