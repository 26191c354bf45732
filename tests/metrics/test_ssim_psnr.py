"""SSIM and PSNR: values on known pairs, the frame/clip averaging, registration."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import structural_similarity

from talkinghead.metrics import build_metric, metric_names
from talkinghead.metrics.image import PSNR, SSIM, frames_to_uint8


def _frames(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def sharp() -> np.ndarray:
    return cv2.resize(data.astronaut(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def test_registered():
    assert {"ssim", "psnr"} <= set(metric_names())
    assert isinstance(build_metric("ssim"), SSIM) and isinstance(build_metric("psnr"), PSNR)
    assert SSIM.columns == {"SSIM": True} and PSNR.columns == {"PSNR": True}
    assert SSIM.inputs == PSNR.inputs == ("fake", "real")


def test_ssim_identical_is_one_and_falls_with_blur(sharp):
    values = []
    for sigma in (0.0, 1.0, 2.0, 4.0):
        fake = sharp if sigma == 0 else cv2.GaussianBlur(sharp, (0, 0), sigma)
        metric = SSIM()
        metric.update(_frames(fake), _frames(sharp))
        values.append(metric.compute()["SSIM"].item())
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_ssim_matches_skimage_window(sharp):
    """Same window and constants as scikit-image's gaussian SSIM (which only averages the map
    without its 5-px border, hence the small tolerance)."""
    rng = np.random.default_rng(0)
    fake = np.clip(sharp + rng.normal(0, 0.05, sharp.shape), 0, 1).astype(np.float32)
    expected = structural_similarity(
        sharp, fake, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2
    )
    metric = SSIM()
    metric.update(_frames(fake), _frames(sharp))
    assert metric.compute()["SSIM"].item() == pytest.approx(expected, abs=0.02)
    per_channel = [
        structural_similarity(sharp[..., c], fake[..., c], gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=1.0)
        for c in range(3)
    ]
    assert expected == pytest.approx(np.mean(per_channel), abs=1e-6)  # RGB = mean over channels


def test_psnr_known_values(sharp):
    offset = np.clip(sharp, 0.1, 0.9)
    metric = PSNR()
    metric.update(_frames(offset + 0.1), _frames(offset))  # MSE 0.01 -> 20 dB
    assert metric.compute()["PSNR"].item() == pytest.approx(20.0, abs=1e-3)
    metric = PSNR()
    metric.update(_frames(sharp), _frames(sharp))  # identical: capped at 100 dB, not inf
    assert metric.compute()["PSNR"].item() == pytest.approx(100.0)


def test_averages_frames_then_clips(sharp):
    base = np.clip(sharp, 0.2, 0.8)
    clip1 = (_frames(base + 0.1, base + 0.01), _frames(base, base))  # 20 dB and 40 dB
    clip2 = (_frames(base + 0.1), _frames(base))  # 20 dB
    metric = PSNR()
    for fake, real in (clip1, clip2):
        metric.update(fake, real)
    assert metric.compute()["PSNR"].item() == pytest.approx(((20 + 40) / 2 + 20) / 2, abs=1e-3)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(metric.compute()["PSNR"])


def test_shape_mismatch_is_an_error(sharp):
    with pytest.raises(ValueError, match="differ in shape"):
        SSIM().update(_frames(sharp, sharp), _frames(sharp))


def test_frames_to_uint8_round_trip(sharp):
    frames = _frames(sharp)
    images = frames_to_uint8(frames)
    assert images.shape == (1, 224, 224, 3) and images.dtype == np.uint8
    assert np.array_equal(images[0], np.round(sharp * 255).astype(np.uint8))


def test_separable_ssim_equals_torchmetrics(sharp):
    """gaussian_ssim (two 1-D passes) gives torchmetrics' 11 x 11 Gaussian SSIM per image."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    from talkinghead.metrics.image import gaussian_ssim

    rng = np.random.default_rng(1)
    fakes = [cv2.GaussianBlur(sharp, (0, 0), 1.5), np.clip(sharp + rng.normal(0, 0.1, sharp.shape), 0, 1),
             sharp[::-1].copy(), np.full_like(sharp, 0.5)]
    fake = _frames(*[f.astype(np.float32) for f in fakes])
    real = _frames(*([sharp] * len(fakes)))
    expected = structural_similarity_index_measure(fake, real, gaussian_kernel=True, sigma=1.5, kernel_size=11,
                                                   data_range=1.0, reduction="none")
    ours = gaussian_ssim(fake, real)
    # float32 rounding: up to ~3e-5 on the flat image, whose variance is a difference of near-equal terms
    assert ours.shape == (4,) and torch.allclose(ours, expected, atol=1e-4, rtol=0), (ours, expected)
    assert torch.allclose(ours[:3], expected[:3], atol=1e-5, rtol=0), (ours, expected)
    assert len(set(ours.tolist())) == 4  # the four pairs differ: a wrong window would show
