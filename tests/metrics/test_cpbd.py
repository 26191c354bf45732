"""CPBD: our batched implementation against the reference port (cpbd-py312), and its behaviour."""
from __future__ import annotations

import importlib

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from talkinghead.metrics import build_metric
from talkinghead.metrics.cpbd import (
    CPBD,
    canny_edges,
    cpbd_scores,
    marziliano_widths,
    rgb_to_gray8,
    sobel_edges,
)

NATURAL = ("astronaut", "camera", "coffee", "chelsea")
SIGMAS = (0.0, 0.7, 1.5, 3.0)


def _gray224(name: str) -> np.ndarray:
    image = getattr(data, name)()
    if image.ndim == 3:
        image = rgb_to_gray8(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0]
    return cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)


def _blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    return image if sigma == 0 else cv2.GaussianBlur(image, (0, 0), sigma)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """(16, 224, 224) uint8: 4 natural images x 4 blur levels, in that order."""
    return np.stack([_blurred(_gray224(name), s) for name in NATURAL for s in SIGMAS])


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("cpbd", reason="the reference port cpbd-py312 is a dev dependency")
    return importlib.import_module("cpbd.compute")


def test_agrees_with_reference_port(images, reference):
    ours = cpbd_scores(images)
    theirs = np.array([reference.compute(image) for image in images])
    assert np.abs(ours - theirs).max() < 1e-3, np.c_[ours, theirs]
    assert theirs.max() > 0.3 and theirs.min() < 0.05  # the set spans sharp and very blurred images


def test_intermediates_match_reference(images, reference):
    """Canny map, Octave Sobel map and Marziliano widths equal the port's (skimage's canny) exactly."""
    from cpbd.octave import sobel as reference_sobel
    from skimage.feature import canny

    subset = images[[0, 5, 10, 15]]  # one of each image, different blur levels
    stack = subset.astype(np.float64)
    ours_canny, ours_sobel = canny_edges(stack), sobel_edges(subset)
    ours_widths = marziliano_widths(ours_sobel, subset)
    for k, image in enumerate(stack):
        assert np.array_equal(ours_canny[k], canny(image))
        theirs_sobel = reference_sobel(image)
        assert np.array_equal(ours_sobel[k], theirs_sobel)
        assert np.array_equal(ours_widths[k], reference.marziliano_method(theirs_sobel, image))


def test_edge_cases_match_reference(reference):
    rng = np.random.default_rng(0)
    flat = np.full((128, 128), 77, np.uint8)  # no edges at all
    ramp = np.tile(np.arange(128, dtype=np.uint8), (128, 1))  # every gradient angle is 0
    small = rng.integers(0, 256, (40, 50)).astype(np.uint8)  # smaller than one block
    noise = rng.integers(0, 256, (130, 200)).astype(np.uint8)  # partial border blocks
    steps = np.kron(rng.integers(0, 2, (8, 8)) * 200 + 20, np.ones((20, 20))).astype(np.uint8)
    dots = (100 + (rng.random((128, 192)) < 0.05)).astype(np.uint8)  # weak Canny candidates
    for image in (flat, ramp, small, noise, steps, dots):
        assert cpbd_scores(image) == pytest.approx(reference.compute(image), abs=1e-12)


def test_canny_hysteresis_matches_skimage():
    """Sparse one-level dots leave Canny candidates between the low and high thresholds, so the
    hysteresis labelling (skipped when every candidate is strong) decides the edge map."""
    from skimage.feature import canny

    rng = np.random.default_rng(2)
    stack = 100 + (rng.random((6, 96, 96)) < 0.05).astype(np.float64)
    ours = canny_edges(stack)
    weak_candidates = 0
    for k, image in enumerate(stack):
        assert np.array_equal(ours[k], canny(image))
        only_low = canny(image, low_threshold=0.1, high_threshold=0.1)
        only_high = canny(image, low_threshold=0.2, high_threshold=0.2)
        weak_candidates += int((only_low & ~only_high).sum())
    assert weak_candidates > 0  # candidates between the thresholds: the labelling path was taken


def test_decreases_with_blur(images):
    scores = cpbd_scores(images).reshape(len(NATURAL), len(SIGMAS))
    assert (np.diff(scores, axis=1) < 0).all(), scores


def test_batched_equals_single(images):
    batched = cpbd_scores(images[:5])
    single = [cpbd_scores(image) for image in images[:5]]
    assert np.array_equal(batched, single)


def test_gray_conversion_is_pils_luma():
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (2, 17, 23, 3)).astype(np.uint8)
    frames = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    expected = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])
    assert np.array_equal(rgb_to_gray8(frames), expected)


def test_metric_averages_frames_then_clips(images):
    metric = build_metric("cpbd")
    assert isinstance(metric, CPBD) and CPBD.columns == {"CPBD": True}
    rgb = torch.from_numpy(images).float().div(255)[:, None].expand(-1, 3, -1, -1)
    sharp, blurred = rgb[[0, 4]], rgb[[3, 7, 11]]  # clip 1: two sharp frames; clip 2: three blurred
    metric.update(sharp)
    metric.update(blurred)
    per_frame = cpbd_scores(images)
    expected = (per_frame[[0, 4]].mean() + per_frame[[3, 7, 11]].mean()) / 2
    assert metric.compute()["CPBD"].item() == pytest.approx(expected, abs=1e-6)
