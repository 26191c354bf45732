"""Tests for talkinghead.nn.losses: hinge GAN, feature matching, InfoNCE, official sync losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from talkinghead.nn.losses import (
    av_info_nce,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    hinge_gan_loss,
    in_batch_negatives,
    info_nce,
    pcavs_sync_losses,
    softmax_contrastive_loss,
)


# ------------------------------------------------------------------ hinge


def test_hinge_known_values():
    plus2, minus2 = torch.full((2, 1, 5, 5), 2.0), torch.full((2, 1, 5, 5), -2.0)
    real, fake = discriminator_hinge_loss(plus2, minus2)
    assert real.item() == 0.0 and fake.item() == 0.0
    real, fake = discriminator_hinge_loss(torch.zeros(2, 1, 3, 3), torch.full((2, 1, 3, 3), 0.5))
    assert real.item() == pytest.approx(1.0) and fake.item() == pytest.approx(1.5)
    logits = torch.tensor([[-1.0, 0.5], [2.0, 3.0]])
    assert generator_hinge_loss(logits).item() == pytest.approx(-logits.mean().item())
    assert hinge_gan_loss(torch.tensor([0.5, -3.0]), True).item() == pytest.approx((0.5 + 4.0) / 2)
    with pytest.raises(ValueError):
        hinge_gan_loss(logits, False, for_discriminator=False)


def test_hinge_multiscale_uses_last_feature_and_averages_scales():
    feats = torch.randn(1, 4, 8, 8)  # anything before the logits is ignored
    pred = [[feats, torch.full((1, 1, 4, 4), 1.0)], [feats, torch.full((1, 1, 2, 2), -3.0)]]
    assert generator_hinge_loss(pred).item() == pytest.approx((-1.0 + 3.0) / 2)
    real, fake = discriminator_hinge_loss(pred, pred)
    assert real.item() == pytest.approx((0.0 + 4.0) / 2)
    assert fake.item() == pytest.approx((2.0 + 0.0) / 2)


# ------------------------------------------------------------------ feature matching


def _feats(seed: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(2, c, s, s, generator=g) for c, s in [(3, 16), (8, 8), (16, 4), (1, 3)]] for _ in range(2)]


def test_feature_matching_zero_for_identical():
    f = _feats(0)
    assert feature_matching_loss(f, [[t.clone() for t in s] for s in f]).item() == 0.0


def test_feature_matching_known_value_and_detach():
    real = _feats(1)
    fake = [[(t + 1.0).requires_grad_() for t in s] for s in real]
    # 3 matched features per scale (logits excluded), each L1 = 1; averaged over 2 scales
    assert feature_matching_loss(fake, real).item() == pytest.approx(3.0)
    assert feature_matching_loss(fake, real, first_weight=0.5).item() == pytest.approx(2.5)
    # logits differences do not count
    fake2 = [[*s[:-1], s[-1] + 100] for s in fake]
    assert feature_matching_loss(fake2, real).item() == pytest.approx(3.0)
    real_req = [[t.clone().requires_grad_() for t in s] for s in real]
    feature_matching_loss(fake, real_req).backward()
    assert all(t.grad is None for s in real_req for t in s)
    assert fake[0][0].grad is not None and fake[0][-1].grad is None


# ------------------------------------------------------------------ InfoNCE


def test_info_nce_known_answers():
    eye = torch.eye(6)
    anchor = eye[:2]                               # e0, e1
    positive = eye[:2] * torch.tensor([[2.0], [0.5]])  # same directions, other norms
    negatives = torch.stack([eye[2:5], eye[3:6]])  # (2, 3, 6) orthogonal
    # cos(pos) = 1, cos(neg) = 0: loss = log(1 + K e^{-1/t})
    assert info_nce(anchor, positive, negatives).item() == pytest.approx(math.log(1 + 3 * math.exp(-1)), rel=1e-5)
    small = info_nce(anchor, positive, negatives, temperature=0.1).item()
    assert small == pytest.approx(math.log(1 + 3 * math.exp(-10)), abs=1e-6) and small < 1e-3
    # swapped: the positive is orthogonal and one negative is the anchor itself
    swapped_neg = negatives.clone()
    swapped_neg[:, 0] = anchor
    large = info_nce(anchor, negatives[:, 0], swapped_neg, temperature=0.1).item()
    assert large == pytest.approx(-math.log(1 / (1 + math.exp(10) + 2)), rel=1e-4) and large > 9


def test_info_nce_matches_loop_and_cross_entropy():
    torch.manual_seed(0)
    a, p, n, t = torch.randn(5, 7), torch.randn(5, 7), torch.randn(5, 4, 7), 0.3
    total = 0.0
    for b in range(5):
        pos = torch.exp(torch.dot(a[b], p[b]) / (a[b].norm() * p[b].norm()) / t)
        neg = sum(torch.exp(torch.dot(a[b], n[b, k]) / (a[b].norm() * n[b, k].norm()) / t) for k in range(4))
        total += -torch.log(pos / (pos + neg))
    loop = total / 5
    logits = torch.cat([F.cosine_similarity(a, p).unsqueeze(1), F.cosine_similarity(a.unsqueeze(1), n, dim=-1)], 1) / t
    ce = F.cross_entropy(logits, torch.zeros(5, dtype=torch.long))
    got = info_nce(a, p, n, temperature=t)
    torch.testing.assert_close(got, loop)
    torch.testing.assert_close(got, ce)


def test_av_info_nce_in_batch_and_symmetric():
    torch.manual_seed(1)
    v, a = torch.randn(4, 8), torch.randn(4, 8)
    negs = in_batch_negatives(a)
    assert negs.shape == (4, 3, 8)
    for b in range(4):  # each row's negatives are exactly the other rows
        assert sorted(negs[b].sum(1).tolist()) == sorted(torch.cat([a[:b], a[b + 1:]]).sum(1).tolist())
    out = av_info_nce(v, a, temperature=0.5)
    torch.testing.assert_close(out["v2a"], info_nce(v, a, in_batch_negatives(a), 0.5))
    torch.testing.assert_close(out["a2v"], info_nce(a, v, in_batch_negatives(v), 0.5))
    torch.testing.assert_close(out["loss"], out["v2a"] + out["a2v"])
    # in-batch InfoNCE equals the usual (B x B) similarity-matrix cross-entropy
    sim = F.cosine_similarity(v.unsqueeze(1), a.unsqueeze(0), dim=-1) / 0.5
    torch.testing.assert_close(out["v2a"], F.cross_entropy(sim, torch.arange(4)))
    torch.testing.assert_close(out["a2v"], F.cross_entropy(sim.T, torch.arange(4)))
    with pytest.raises(ValueError):
        info_nce(v, a, torch.randn(4, 3, 7))


# ------------------------------------------------------------------ official contrastive


def test_softmax_contrastive_matches_official_formula():
    torch.manual_seed(2)
    f, c = torch.randn(6, 2, 5), torch.randn(6, 2, 5)  # (B, clip_len, D), flattened per sample
    fn = F.normalize(f.reshape(6, -1), dim=1)
    cn = F.normalize(c.reshape(6, -1), dim=1)
    scores = torch.empty(6, 6)
    for i in range(6):
        for j in range(6):
            scores[i, j] = 1.0 / torch.norm(fn[i] - cn[j], p=2)
    want = F.cross_entropy(scores, torch.arange(6))
    torch.testing.assert_close(softmax_contrastive_loss(f, c), want)
    # identical features: finite (the official code would divide by zero), and near 0
    same = softmax_contrastive_loss(f, f.clone())
    assert torch.isfinite(same) and same.item() < 1e-3


def test_pcavs_sync_losses_detach_pattern_and_weights():
    torch.manual_seed(3)
    v = torch.randn(4, 1, 16, requires_grad=True)
    a = torch.randn(4, 1, 16, requires_grad=True)
    out = pcavs_sync_losses(v, a)
    assert set(out) == {"v2a", "a2v", "cross_modal"}
    torch.testing.assert_close(out["v2a"], 100 * softmax_contrastive_loss(v, a))
    torch.testing.assert_close(out["cross_modal"], (v - a).abs().mean())
    out["v2a"].backward(retain_graph=True)
    assert v.grad is None and a.grad.abs().sum() > 0  # v2a trains the audio side only
    a.grad = None
    out["a2v"].backward()
    assert a.grad is None and v.grad.abs().sum() > 0  # a2v trains the visual side only
    assert "cross_modal" not in pcavs_sync_losses(v, a, cross_modal_weight=0)


def test_mouth_l1_loss_reads_only_the_mouth_box():
    from talkinghead.nn.losses import mouth_l1_loss

    lm = torch.zeros(1, 68, 2)
    lm[0, 48:68] = torch.tensor([[12.0, 20.0], [20.0, 24.0]]).repeat(10, 1)  # box x 12..20, y 20..24
    real = torch.zeros(1, 3, 32, 32)
    outside = real.clone()
    outside[..., 0:5, :] = 1.0  # rows 0-4: above the grown box (y >= 20 - 0.35 * 8)
    assert mouth_l1_loss(outside, real, lm) == 0
    inside = real.clone()
    inside[..., 21:24, 14:18] = 2.0
    loss = mouth_l1_loss(inside, real, lm)
    box = ((torch.arange(32) >= 20 - 2.8) & (torch.arange(32) <= 24 + 2.8)).sum() * (
        (torch.arange(32) >= 12 - 2.8) & (torch.arange(32) <= 20 + 2.8)).sum()
    assert torch.isclose(loss, torch.tensor(2.0 * 12 / box.item()))


def test_eye_l1_loss_reads_only_the_eye_box():
    from talkinghead.nn.losses import eye_l1_loss

    lm = torch.zeros(1, 68, 2)
    lm[0, 36:48] = torch.tensor([[8.0, 10.0], [24.0, 12.0]]).repeat(6, 1)  # box x 8..24, y 10..12
    lm[0, 48:68] = torch.tensor([[12.0, 24.0], [20.0, 28.0]]).repeat(10, 1)  # the mouth, far below
    real = torch.zeros(1, 3, 32, 32)
    mouth = real.clone()
    mouth[..., 24:29, 12:21] = 1.0  # the mouth box only: the eye loss does not see it
    assert eye_l1_loss(mouth, real, lm) == 0
    eyes = real.clone()
    eyes[..., 10:13, 8:25] = 1.0  # the ungrown eye box: 3 x 17 pixels
    rows = ((torch.arange(32) >= 10 - 1.6) & (torch.arange(32) <= 12 + 1.6)).sum()  # grown by 0.1 x 16
    cols = ((torch.arange(32) >= 8 - 1.6) & (torch.arange(32) <= 24 + 1.6)).sum()
    assert torch.isclose(eye_l1_loss(eyes, real, lm), torch.tensor(3 * 17 / (rows * cols).item()))


def _eye_contours(ear: float) -> torch.Tensor:
    """(68, 2) landmarks whose two eyes (points 36-47: corner, two upper, corner, two lower) are 10 px
    wide with aspect ratio `ear`."""
    lm = torch.zeros(68, 2)
    for first, x0 in ((36, 4.0), (42, 20.0)):
        half = ear * 10.0 / 2
        lm[first:first + 6] = torch.tensor([[x0, 10.0], [x0 + 3, 10 - half], [x0 + 7, 10 - half], [x0 + 10, 10.0],
                                            [x0 + 7, 10 + half], [x0 + 3, 10 + half]])
    lm[48:68] = torch.tensor([[12.0, 24.0], [20.0, 28.0]]).repeat(10, 1)
    return lm


def test_eye_closure_follows_the_eye_aspect_ratio():
    from talkinghead.metrics.factors import OPEN_EAR
    from talkinghead.nn.losses import eye_closure

    lm = torch.stack([_eye_contours(e) for e in (0.4, OPEN_EAR, 0.15, 0.0)])
    assert torch.allclose(eye_closure(lm), torch.tensor([0.0, 0.0, 0.5, 1.0]), atol=1e-6)  # clamped to [0, 1]


def test_eye_l1_closure_weight_counts_closed_eyes_more():
    from talkinghead.nn.losses import EYE_POINTS, eye_l1_loss, region_mask

    lm = torch.stack([_eye_contours(0.3), _eye_contours(0.0)])  # open (closure 0), closed (closure 1)
    real = torch.zeros(2, 3, 32, 32)
    fake = real.clone()
    fake[0] = 1.0  # the open-eyed image is wrong everywhere, the closed-eyed one right
    plain = eye_l1_loss(fake, real, lm)
    weighted = eye_l1_loss(fake, real, lm, closure_weight=4.0)
    area = region_mask(lm, 32, EYE_POINTS, 0.1).flatten(1).sum(1)  # pixels of each image's box
    assert torch.isclose(plain, area[0] / area.sum())
    assert torch.isclose(weighted, area[0] / (area[0] + 5.0 * area[1]))  # closed: 1 + 4 x 1
    assert eye_l1_loss(fake, real, lm, closure_weight=0.0) == plain
