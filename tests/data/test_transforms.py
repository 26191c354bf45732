"""Tests for talkinghead.data.transforms (synthetic frames and landmarks, CPU, fast)."""
from __future__ import annotations

import math

import pytest
import torch

from talkinghead.data.transforms import (
    BROW_EYE_INDICES,
    CenteredRandomCrop,
    ColorJitter,
    ColorTransfer,
    Compose,
    InWindowAugment,
    MotionAppearanceAugment,
    PaperPerspective,
    RandomPerspective,
    composite_eye_region,
    eye_region_mask,
    flatten_frames,
    paper_perspective_matrix,
    paper_perspective_points,
    restore_frames,
)

H = W = 48


# ----------------------------------------------------------------------------- fixtures
def gradient_frame(h: int = H, w: int = W) -> torch.Tensor:
    """(3, H, W): R = x ramp, G = y ramp, B = diagonal ramp, plus a bright square."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.1 + 0.8 * xs, 0.1 + 0.8 * ys, 0.2 + 0.6 * (xs + ys) / 2])
    img[:, h // 3 : h // 2, w // 4 : w // 2] = torch.tensor([0.9, 0.3, 0.6]).view(3, 1, 1)
    return img


def clip(t: int = 4, h: int = H, w: int = W, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = gradient_frame(h, w)
    noise = 0.05 * torch.rand(t, 3, h, w, generator=g)
    return (base.unsqueeze(0) * 0.9 + noise).clamp(0, 1)


def identical_clip(t: int = 5, h: int = H, w: int = W) -> torch.Tensor:
    return gradient_frame(h, w).unsqueeze(0).repeat(t, 1, 1, 1)


def frontal_landmarks(t: int = 1) -> torch.Tensor:
    """A plausible dlib-68 frontal layout at 224 px: eyes at y~59 (x 87 / 137), mouth at (112, 120)."""
    pts = []
    # jaw 0-16: lower half-ellipse from the temples to the chin
    for k in range(17):
        a = math.pi * k / 16
        pts.append((112 - 72 * math.cos(a), 60 + 130 * math.sin(a)))
    # brows 17-21 (right) and 22-26 (left): arcs above the eyes
    for cx in (87, 137):
        for k in range(5):
            dx = -20 + 10 * k
            pts.append((cx + dx, 44 - 4 * math.cos(dx / 20 * math.pi / 2)))
    # nose bridge 27-30 and base 31-35
    for k in range(4):
        pts.append((112, 60 + 11 * k))
    for k in range(5):
        pts.append((100 + 6 * k, 100 + (2 if k in (0, 4) else 0)))
    # eyes 36-41 and 42-47: hexagons around the centres
    for cx in (87, 137):
        for a in (math.pi, 2 * math.pi / 3, math.pi / 3, 0.0, -math.pi / 3, -2 * math.pi / 3):
            pts.append((cx + 12 * math.cos(a), 59 - 5 * math.sin(a)))
    # outer lips 48-59 and inner lips 60-67
    for k in range(12):
        a = math.pi - 2 * math.pi * k / 12
        pts.append((112 + 24 * math.cos(a), 120 - 10 * math.sin(a)))
    for k in range(8):
        a = math.pi - 2 * math.pi * k / 8
        pts.append((112 + 14 * math.cos(a), 120 - 4 * math.sin(a)))
    lm = torch.tensor(pts, dtype=torch.float32)
    assert lm.shape == (68, 2)
    return lm.unsqueeze(0).repeat(t, 1, 1)


WINDOW_LEVEL = {
    "ColorTransfer": lambda: ColorTransfer(),
    "PaperPerspective": lambda: PaperPerspective(),
    "CenteredRandomCrop": lambda: CenteredRandomCrop(),
    "ColorJitter": lambda: ColorJitter(),
    "RandomPerspective": lambda: RandomPerspective(),
    "MotionAppearanceAugment": lambda: MotionAppearanceAugment(),
}
ALL = dict(WINDOW_LEVEL, InWindowAugment=lambda: InWindowAugment())


# ----------------------------------------------------------------------------- generic contracts
@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("shape", [(4, 3, H, W), (2, 3, 3, H, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_range_dtype_preserved(name, shape, dtype, check_augment):
    torch.manual_seed(0)
    check_augment(ALL[name](), torch.rand(shape, dtype=dtype))


def test_half_precision_roundtrip():
    frames = clip().half()
    out = MotionAppearanceAugment()(frames)
    assert out.dtype == torch.float16 and out.shape == frames.shape


@pytest.mark.parametrize("name", sorted(ALL))
def test_determinism_under_global_seed(name, check_seeded):
    check_seeded(ALL[name](), clip())




@pytest.mark.parametrize("name", sorted(WINDOW_LEVEL))
def test_window_level_params_shared_across_frames(name):
    frames = identical_clip(t=5)
    torch.manual_seed(3)
    out = WINDOW_LEVEL[name]()(frames)
    assert not torch.allclose(out[0], frames[0], atol=1e-3), "transform did nothing"
    for k in range(1, 5):
        assert torch.equal(out[k], out[0])


@pytest.mark.parametrize("name", sorted(WINDOW_LEVEL))
def test_window_level_batched_clips_independent(name):
    frames = identical_clip(t=3).unsqueeze(0).repeat(2, 1, 1, 1, 1)  # (B=2, T=3)
    torch.manual_seed(5)
    out = WINDOW_LEVEL[name]()(frames)
    assert torch.equal(out[0, 0], out[0, 2]) and torch.equal(out[1, 0], out[1, 1])
    assert not torch.allclose(out[0, 0], out[1, 0], atol=1e-4)


def test_in_window_augment_is_per_frame():
    frames = identical_clip(t=13)
    torch.manual_seed(11)
    out = InWindowAugment()(frames)
    for k in range(1, 13):
        assert not torch.allclose(out[k], out[0], atol=1e-3)
    # works for arbitrary T, and batched
    assert InWindowAugment()(identical_clip(t=2)).shape == (2, 3, H, W)
    assert InWindowAugment()(identical_clip(t=3).unsqueeze(0).repeat(2, 1, 1, 1, 1)).shape == (2, 3, 3, H, W)


@pytest.mark.parametrize(
    "transform",
    [ColorTransfer(p=0), PaperPerspective(p=0), CenteredRandomCrop(p=0), ColorJitter(p=0), InWindowAugment(p=0),
     MotionAppearanceAugment(p_jitter=0, p_perspective=0)],
    ids=lambda t: type(t).__name__,
)
def test_disabled_is_identity(transform):
    frames = clip()
    torch.manual_seed(0)
    assert torch.equal(transform(frames), frames)


def test_probability_gate_per_clip():
    frames = identical_clip(t=2).unsqueeze(0).repeat(64, 1, 1, 1, 1)
    torch.manual_seed(0)
    out = ColorTransfer(p=0.5)(frames)
    unchanged = (out == frames).flatten(1).all(dim=1)
    assert 10 < int(unchanged.sum()) < 54
    # the gate is per clip: both frames of a clip agree
    assert torch.equal(out[:, 0], out[:, 1])


# ----------------------------------------------------------------------------- PaperPerspective
def _apply_h(m: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    homog = torch.cat([pts, torch.ones(*pts.shape[:-1], 1, dtype=pts.dtype)], -1)
    mapped = homog @ m.transpose(-1, -2)
    return mapped[..., :2] / mapped[..., 2:]


@pytest.mark.parametrize("r_s,r_t", [(0.0, 0.0), (5.0, 3.0), (12.3, -7.7), (0.0, 9.0), (20.0, 20.0)])
def test_paper_matrix_maps_source_to_target(r_s, r_t):
    p_s, p_t = paper_perspective_points(r_s, r_t, 224, 224)
    # the paper's construction, literally
    expected_s = [[-r_s, -r_s], [224 + r_s, -r_s], [-r_s, 224 + r_s], [224 + r_s, 224 + r_s]]
    expected_t = [[-r_s + r_t, -r_s], [224 + r_s, -r_s], [-r_s, 224 + r_s], [224 + r_s + r_t, 224 + r_s]]
    assert torch.allclose(p_s, torch.tensor(expected_s, dtype=torch.float64))
    assert torch.allclose(p_t, torch.tensor(expected_t, dtype=torch.float64))
    m = PaperPerspective.matrix(r_s, r_t, 224, 224)
    assert m.shape == (3, 3)
    assert (_apply_h(m, p_s) - p_t).abs().max() < 1e-3
    # the paper's row-vector form [P_t, e] ~ [P_s, e] * M^T (up to the projective scale)
    e = torch.ones(4, 1, dtype=torch.float64)
    row = torch.cat([p_s, e], 1) @ m.T
    assert (row[:, :2] / row[:, 2:] - p_t).abs().max() < 1e-3


def test_paper_matrix_batched_and_identity():
    r_s = torch.tensor([0.0, 4.0, 10.0])
    r_t = torch.tensor([0.0, 0.0, 0.0])
    m = paper_perspective_matrix(r_s, r_t, 64, 80)
    assert m.shape == (3, 3, 3)
    assert torch.allclose(m, torch.eye(3, dtype=torch.float64).expand(3, 3, 3), atol=1e-9)
    p_s, p_t = paper_perspective_points(torch.tensor([3.0, 6.0]), torch.tensor([-2.0, 5.0]), 64, 80)
    m = paper_perspective_matrix(torch.tensor([3.0, 6.0]), torch.tensor([-2.0, 5.0]), 64, 80)
    assert (_apply_h(m, p_s) - p_t).abs().max() < 1e-3


@pytest.mark.parametrize("r_s", [0.0, 3.0, 17.5])
def test_paper_warp_identity_when_no_step(r_s):
    frames = clip()
    out = PaperPerspective(padding_mode="zeros").apply(frames, r_s=r_s, r_t=0.0)
    assert torch.allclose(out, frames, atol=1e-5)


def test_paper_warp_moves_content_from_source_to_target():
    frame = torch.zeros(1, 3, 64, 64)
    frame[:, :, 14:17, 14:17] = 1.0  # a blob centred at (15, 15)
    r_s, r_t = 0.0, 10.0
    out = PaperPerspective(padding_mode="zeros").apply(frame, r_s=r_s, r_t=r_t)
    expected = _apply_h(paper_perspective_matrix(r_s, r_t, 64, 64), torch.tensor([[15.0, 15.0]], dtype=torch.float64))[0]
    weight = out[0, 0]
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    centroid = torch.stack([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()
    assert (centroid.double() - expected).abs().max() < 0.5
    assert expected[0] > 15.5  # top-left moved right: the blob moved right


def test_paper_perspective_sample_ranges():
    torch.manual_seed(0)
    params = PaperPerspective(max_margin=0.1, max_step=0.05).sample_params(2000, 100, 200)
    assert params["r_s"].min() >= 0 and params["r_s"].max() <= 20
    assert params["r_t"].min() >= -10 and params["r_t"].max() <= 10
    assert params["r_t"].min() < -8 and params["r_t"].max() > 8


# ----------------------------------------------------------------------------- ColorTransfer
def _ranks(v: torch.Tensor) -> torch.Tensor:
    return v.argsort().argsort().double()


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = _ranks(a.flatten()), _ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def test_color_transfer_changes_statistics_keeps_structure():
    ys, xs = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    grey = 0.2 + 0.5 * (0.6 * xs + 0.4 * ys)
    grey[10:20, 10:30] = 0.9  # a bright bar with sharp edges
    frames = grey.expand(3, H, W).unsqueeze(0).repeat(2, 1, 1, 1).clone()
    frames[:, 0] *= 0.8  # make the channels distinct so a permutation is visible
    frames[:, 2] = frames[:, 2] * 0.6 + 0.1
    torch.manual_seed(1)
    out = ColorTransfer()(frames)
    # channel statistics change
    stats_in = torch.stack([frames[0].mean((1, 2)), frames[0].std((1, 2))])
    stats_out = torch.stack([out[0].mean((1, 2)), out[0].std((1, 2))])
    assert (stats_in - stats_out).abs().max() > 0.02
    # spatial structure survives: luminance ranks and the edge map
    lum = lambda f: 0.299 * f[0] + 0.587 * f[1] + 0.114 * f[2]  # noqa: E731
    assert _spearman(lum(frames[0]), lum(out[0])) > 0.95

    def edges(img):
        gx = (img[:, 1:] - img[:, :-1]).abs()[:-1]
        gy = (img[1:] - img[:-1]).abs()[:, :-1]
        return (gx + gy) > 0.1

    e_in, e_out = edges(lum(frames[0])), edges(lum(out[0]))
    assert e_in.sum() > 0
    iou = (e_in & e_out).sum() / (e_in | e_out).sum()
    assert iou > 0.9


def test_color_transfer_explicit_params():
    frames = clip(t=2)
    out = ColorTransfer().apply(frames, perm=(2, 0, 1), gain=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0))
    assert torch.allclose(out, frames[:, [2, 0, 1]])
    out = ColorTransfer().apply(frames, gain=(0.5, 1.0, 1.0), offset=(0.1, 0.0, 0.0))
    assert torch.allclose(out[:, 0], frames[:, 0] * 0.5 + 0.1)
    assert torch.allclose(out[:, 1:], frames[:, 1:])


# ----------------------------------------------------------------------------- CenteredRandomCrop
def test_centered_crop_scale_one_is_identity():
    frames = clip(h=49, w=49)
    assert torch.allclose(CenteredRandomCrop().apply(frames, scale=1.0), frames, atol=1e-5)
    torch.manual_seed(0)
    assert torch.allclose(CenteredRandomCrop(min_scale=1.0, max_scale=1.0)(frames), frames, atol=1e-5)


def test_centered_crop_half_scale_keeps_centre_moves_corner():
    n = 49
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    code = (xs + n * ys) / (n * n)  # every pixel distinct
    frames = torch.stack([code, code.flip(0), code.flip(1)]).unsqueeze(0)
    out = CenteredRandomCrop().apply(frames, scale=0.5)
    c = n // 2
    assert torch.allclose(out[0, :, c, c], frames[0, :, c, c], atol=1e-5)
    assert not torch.allclose(out[0, :, 0, 0], frames[0, :, 0, 0], atol=1e-3)
    # corner of the output is the corner of the centred half-size window
    q = c - c // 2  # 12
    assert torch.allclose(out[0, :, 0, 0], frames[0, :, q, q], atol=1e-5)


def test_centered_crop_sample_range():
    torch.manual_seed(0)
    s = CenteredRandomCrop(min_scale=0.7).sample_params(1000)["scale"]
    assert s.min() >= 0.7 and s.max() <= 1.0


# ----------------------------------------------------------------------------- jitter / in-window
def test_color_jitter_identity_params():
    frames = clip()
    out = ColorJitter().apply(frames, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0)
    assert torch.allclose(out, frames, atol=1e-4)
    darker = ColorJitter().apply(frames, brightness=0.5)
    assert torch.allclose(darker, frames * 0.5, atol=1e-6)


def test_color_jitter_per_frame_flag():
    frames = identical_clip(t=4)
    torch.manual_seed(2)
    out = ColorJitter(per_frame=True)(frames)
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_in_window_identity_and_rotation():
    frames = clip(t=3, h=49, w=49)
    out = InWindowAugment().apply(frames)
    assert torch.allclose(out, frames, atol=1e-4)
    # a 90 degree rotation of a square about its centre is a pure pixel permutation
    rot = InWindowAugment(padding_mode="zeros").apply(frames[:1], angle=90.0)
    expected = torch.rot90(frames[:1], k=1, dims=(-2, -1))  # counter-clockwise
    assert torch.allclose(rot, expected, atol=1e-4)


def test_in_window_window_indices():
    aug = InWindowAugment()
    assert aug.window_size == 13
    assert aug.window_indices(20, 100).tolist() == list(range(14, 27))
    assert aug.window_indices(0, 100).tolist() == [0] * 7 + list(range(1, 7))
    assert aug.window_indices(99, 100).tolist()[-1] == 99


def test_compose_and_motion_appearance_with_paper_perspective():
    frames = clip()
    torch.manual_seed(0)
    aug = MotionAppearanceAugment(perspective=PaperPerspective())
    assert isinstance(aug.perspective, PaperPerspective)
    out = aug(frames)
    assert out.shape == frames.shape
    comp = Compose([ColorTransfer(), CenteredRandomCrop()])
    torch.manual_seed(9)
    a = comp(frames)
    torch.manual_seed(9)
    b = CenteredRandomCrop()(ColorTransfer()(frames))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- eye region
def test_eye_region_mask_values():
    lm = frontal_landmarks(t=2)
    mask = eye_region_mask(lm, 224, 224)
    assert mask.shape == (2, 1, 224, 224)
    assert mask.min() >= 0 and mask.max() <= 1
    for cx in (87, 137):
        assert mask[0, 0, 59, cx] > 0.99
    brow = lm[0, 19].round().long()
    assert mask[0, 0, brow[1], brow[0]] > 0.99
    for p in lm[0, 48:68]:
        x, y = p.round().long().tolist()
        assert mask[0, 0, y, x] < 1e-3
    assert mask[0, 0, 120, 112] < 1e-3
    # feathered: there is a soft transition band
    assert ((mask > 0.05) & (mask < 0.95)).any()
    hard = eye_region_mask(lm, 224, 224, feather=0.0)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}


def test_eye_region_mask_follows_landmarks_per_frame():
    lm = frontal_landmarks(t=2)
    lm[1, :, 1] += 30  # second frame: face shifted down by 30 px
    mask = eye_region_mask(lm, 224, 224)
    assert mask[0, 0, 59, 87] > 0.99 and mask[1, 0, 59, 87] < 0.5
    assert mask[1, 0, 89, 87] > 0.99
    batched = eye_region_mask(lm.unsqueeze(0).repeat(3, 1, 1, 1), 224, 224)
    assert batched.shape == (3, 2, 1, 224, 224)


def test_composite_eye_region():
    lm = frontal_landmarks(t=3)
    base = torch.zeros(3, 3, 224, 224)
    base[:, 0] = 0.8  # reddish
    donor = torch.zeros(3, 3, 224, 224)
    donor[:, 2] = 0.7  # bluish
    mask = eye_region_mask(lm, 224, 224)
    anchor = composite_eye_region(base, donor, mask)
    assert anchor.shape == base.shape and anchor.dtype == base.dtype
    for cx in (87, 137):
        assert torch.allclose(anchor[:, :, 59, cx], donor[:, :, 59, cx], atol=1e-2)
    assert torch.allclose(anchor[:, :, 120, 112], base[:, :, 120, 112], atol=1e-3)
    assert torch.allclose(anchor[:, :, 200, 20], base[:, :, 200, 20], atol=1e-3)
    # exact blending formula
    assert torch.allclose(anchor, donor * mask + base * (1 - mask))
    # a single mask broadcasts over a batch of clips
    b5 = composite_eye_region(base.unsqueeze(0).repeat(2, 1, 1, 1, 1), donor.unsqueeze(0).repeat(2, 1, 1, 1, 1), mask)
    assert b5.shape == (2, 3, 3, 224, 224)


def test_brow_eye_indices():
    assert BROW_EYE_INDICES == tuple(range(17, 27)) + tuple(range(36, 48))


# ----------------------------------------------------------------------------- validation
def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        ColorTransfer()(torch.rand(3, H, W))
    with pytest.raises(ValueError):
        ColorTransfer()(torch.rand(2, 4, H, W))
    with pytest.raises(TypeError):
        ColorTransfer()(torch.zeros(2, 3, H, W, dtype=torch.uint8))
    with pytest.raises(ValueError):
        CenteredRandomCrop(min_scale=0.0)
    with pytest.raises(ValueError):
        ColorJitter(hue=0.7)
    with pytest.raises(ValueError):
        PaperPerspective(padding_mode="wrap")
    with pytest.raises(ValueError):
        eye_region_mask(torch.zeros(2, 5, 2), 64, 64)
    with pytest.raises(ValueError):
        composite_eye_region(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError):
        CenteredRandomCrop().apply(clip(t=4), scale=torch.tensor([0.5, 0.6, 0.7]))


# ----------------------------------------------------------------------------- warp_clips
def _natural_clip(t: int = 3, size: int = 96) -> torch.Tensor:
    from skimage import data
    from skimage.transform import resize

    image = resize(data.astronaut()[:400, 50:450], (size, size), anti_aliasing=True)
    return torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0).repeat(t, 1, 1, 1)


def test_warp_clips_matches_kornia_warp_perspective():
    from kornia.geometry.transform import warp_perspective

    from talkinghead.data.transforms import paper_perspective_matrix, warp_clips

    frames = _natural_clip(t=2, size=64).unsqueeze(0).repeat(2, 1, 1, 1, 1)
    m = paper_perspective_matrix(torch.tensor([3.0, 5.0]), torch.tensor([4.0, -6.0]), 64, 64)
    ours = warp_clips(frames, m)
    for k in range(2):
        ref = warp_perspective(frames[k], m[k : k + 1].float().repeat(2, 1, 1), (64, 64), padding_mode="reflection", align_corners=True)
        assert torch.allclose(ours[k], ref, atol=1e-4)


def test_flatten_and_restore_frames():
    frames = clip(t=2).half().unsqueeze(0).repeat(3, 1, 1, 1, 1)  # (B=3, T=2, 3, H, W)
    x, b, t = flatten_frames(frames)
    assert (b, t) == (3, 2) and x.shape == (6, 3, H, W) and x.dtype == torch.float32
    back = restore_frames(x * 2.0, frames)
    assert back.shape == frames.shape and back.dtype == torch.float16 and float(back.max()) <= 1.0
    with pytest.raises(ValueError, match="RGB"):
        flatten_frames(torch.zeros(2, 4, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        flatten_frames(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
