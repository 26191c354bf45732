"""PC-AVS target-frame augmentation (`talkinghead.methods.pcavs.augment.PCAVSAugment`): the transform
contracts of `talkinghead.data.transforms` and the fused implementation (synthetic frames, CPU, fast)."""
from __future__ import annotations

import pytest
import torch

from talkinghead.data.transforms import CenteredRandomCrop, ColorTransfer, Compose, PaperPerspective
from talkinghead.methods.pcavs.augment import PCAVSAugment

H = W = 48


def clip(t: int = 4, h: int = H, w: int = W, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.1 + 0.8 * xs, 0.1 + 0.8 * ys, 0.2 + 0.6 * (xs + ys) / 2])
    base[:, h // 3 : h // 2, w // 4 : w // 2] = torch.tensor([0.9, 0.3, 0.6]).view(3, 1, 1)
    return (base.unsqueeze(0) * 0.9 + 0.05 * torch.rand(t, 3, h, w, generator=g)).clamp(0, 1)


# ----------------------------------------------------------------------------- transform contracts
@pytest.mark.parametrize("shape", [(4, 3, H, W), (2, 3, 3, H, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_range_dtype_preserved(shape, dtype, check_augment):
    torch.manual_seed(0)
    check_augment(PCAVSAugment(), torch.rand(shape, dtype=dtype))
    check_augment(PCAVSAugment(), clip().half())


def test_determinism_under_global_seed_and_fork_rng(check_seeded):
    check_seeded(PCAVSAugment(), clip())


def test_params_shared_across_frames_and_independent_across_clips():
    frames = clip(t=1).repeat(5, 1, 1, 1)
    torch.manual_seed(3)
    out = PCAVSAugment()(frames)
    assert not torch.allclose(out[0], frames[0], atol=1e-3), "transform did nothing"
    assert all(torch.equal(out[k], out[0]) for k in range(1, 5))
    batched = clip(t=1).repeat(3, 1, 1, 1).unsqueeze(0).repeat(2, 1, 1, 1, 1)  # (B=2, T=3)
    torch.manual_seed(5)
    out = PCAVSAugment()(batched)
    assert torch.equal(out[0, 0], out[0, 2]) and torch.equal(out[1, 0], out[1, 1])
    assert not torch.allclose(out[0, 0], out[1, 0], atol=1e-4)


def test_disabled_is_identity_and_parts_are_the_data_transforms():
    frames = clip()
    torch.manual_seed(0)
    assert torch.equal(PCAVSAugment(color=False, perspective=False, crop=False)(frames), frames)
    aug = PCAVSAugment()
    assert [type(t) for t in aug.transforms] == [ColorTransfer, PaperPerspective, CenteredRandomCrop]
    assert isinstance(aug, Compose)


def test_picklable():
    import pickle

    aug = pickle.loads(pickle.dumps(PCAVSAugment(min_scale=0.9)))
    assert aug.centered_crop.min_scale == 0.9


# ----------------------------------------------------------------------------- fused = the three transforms in order
def _natural_clip(t: int = 3, size: int = 96) -> torch.Tensor:
    from skimage import data
    from skimage.transform import resize

    image = resize(data.astronaut()[:400, 50:450], (size, size), anti_aliasing=True)
    return torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0).repeat(t, 1, 1, 1)


@pytest.mark.parametrize("flags", [dict(), dict(crop=False), dict(perspective=False), dict(color=False)])
def test_pcavs_fused_matches_sequential_transforms(flags):
    """PCAVSAugment draws the same parameters as the three transforms applied in order and resamples
    once: equal up to the difference between one and two bilinear resamplings."""
    frames = _natural_clip()
    fused = PCAVSAugment(**flags)
    sequential = Compose(fused.transforms)
    torch.manual_seed(21)
    a = fused(frames)
    torch.manual_seed(21)
    b = sequential(frames)
    assert a.shape == b.shape
    assert (a - b).abs().mean() < 0.01
    inner = (a - b)[..., 8:-8, 8:-8].abs()
    assert inner.mean() < 0.01 and torch.quantile(inner.flatten(), 0.99) < 0.1


def test_pcavs_colour_only_is_exact():
    frames = _natural_clip()
    torch.manual_seed(4)
    a = PCAVSAugment(perspective=False, crop=False)(frames)
    torch.manual_seed(4)
    b = ColorTransfer()(frames)
    assert torch.allclose(a, b, atol=1e-6)
