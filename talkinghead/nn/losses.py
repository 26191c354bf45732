"""Losses of PC-AVS: hinge GAN, discriminator feature matching, audio-visual contrastive (InfoNCE);
and PD-FGC's feature-level decorrelation (`cross_correlation`, `decorrelation_loss`) with its
memory bank (`FeatureMemoryBank`); region pixel L1 (`masked_l1`; the mouth and eye boxes of the CPU configs:
`region_mask`, `mouth_mask`, `mouth_l1_loss`, `eye_l1_loss`).

(The VGG perceptual loss lives in `talkinghead.nn.vgg`.)

Official reference: ``models/networks/loss.py`` (``GANLoss``, ``SoftmaxContrastiveLoss``) and
``models/av_model.py`` (``compute_generator_loss``, ``compute_GAN_Feat_loss``,
``compute_discriminator_loss``, ``compute_sync_loss``) of Hangz-nju-cuhk/Talking-Face_PC-AVS.
Official weights (``options/base_options.py``): GAN x ``lambda_D`` 1, feature matching x
``lambda_feat`` 10 (its first term, on the images themselves, additionally x ``lambda_image`` 1),
VGG x ``lambda_vgg`` 10, contrastive x ``lambda_contrastive`` 100, cross-modal L1 x
``lambda_crossmodal`` 1, identity cross-entropy x 1. The functions here are unweighted unless a
weight argument says otherwise; the caller applies the lambdas.

Multi-scale discriminator outputs are lists over scales of lists of features (see
`talkinghead.nn.discriminators.MultiscaleDiscriminator`); the last element of each inner list is
that scale's logits. A plain tensor is treated as one scale of logits.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "hinge_gan_loss",
    "discriminator_hinge_loss",
    "generator_hinge_loss",
    "feature_matching_loss",
    "info_nce",
    "in_batch_negatives",
    "av_info_nce",
    "softmax_contrastive_loss",
    "pcavs_sync_losses",
    "cross_correlation",
    "decorrelation_loss",
    "FeatureMemoryBank",
    "masked_l1",
    "mouth_mask",
    "mouth_l1_loss",
    "eye_l1_loss",
    "region_mask",
    "MOUTH_POINTS",
    "EYE_POINTS",
]

DPred = Union[torch.Tensor, Sequence[Union[torch.Tensor, Sequence[torch.Tensor]]]]


def _scale_logits(pred: DPred) -> list[torch.Tensor]:
    if isinstance(pred, torch.Tensor):
        return [pred]
    out = []
    for p in pred:
        out.append(p if isinstance(p, torch.Tensor) else p[-1])
    if not out:
        raise ValueError("empty discriminator prediction")
    return out


# ----------------------------------------------------------------------------- hinge GAN


def hinge_gan_loss(pred: DPred, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
    """The official ``GANLoss(gan_mode="hinge")``; returns a 0-dim tensor.

    Per scale (logits x of any shape, mean over all elements):

    * discriminator, real:  mean(relu(1 - x))   (= -mean(min(x - 1, 0)))
    * discriminator, fake:  mean(relu(1 + x))   (= -mean(min(-x - 1, 0)))
    * generator:            -mean(x)            (``target_is_real`` must be True)

    then averaged over scales. The official code computes the D terms for real and fake
    separately (``D_real``, ``D_Fake``) and sums them.
    """
    losses = []
    for x in _scale_logits(pred):
        if for_discriminator:
            losses.append(F.relu(1.0 - x).mean() if target_is_real else F.relu(1.0 + x).mean())
        else:
            if not target_is_real:
                raise ValueError("the generator's hinge loss must aim for real")
            losses.append(-x.mean())
    return torch.stack(losses).mean()


def discriminator_hinge_loss(real_pred: DPred, fake_pred: DPred) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss on real, loss on fake) for the discriminator step; the D objective is their sum."""
    return hinge_gan_loss(real_pred, True, True), hinge_gan_loss(fake_pred, False, True)


def generator_hinge_loss(fake_pred: DPred) -> torch.Tensor:
    """-mean(D(fake)) per scale, averaged over scales (the generator side of the hinge loss)."""
    return hinge_gan_loss(fake_pred, True, for_discriminator=False)


# ----------------------------------------------------------------------------- feature matching


def feature_matching_loss(fake_feats: Sequence[Sequence[torch.Tensor]], real_feats: Sequence[Sequence[torch.Tensor]],
                          first_weight: float = 1.0) -> torch.Tensor:
    """Discriminator feature matching (pix2pixHD / SPADE / official ``compute_GAN_Feat_loss``).

    loss = (1 / num_scales) * sum_scales sum_{j < len - 1} w_j * mean|fake[s][j] - real[s][j].detach()|

    i.e. L1 (mean over elements) over every returned feature except the last (the logits), summed
    over layers and averaged over scales; w_0 = ``first_weight`` (official ``lambda_image``, 1),
    w_j = 1 otherwise. With the official discriminator feature 0 is the (downsampled) image itself,
    so the first term is an image L1. Official total weight: x ``lambda_feat`` = 10 (apply outside).
    No per-layer 4/(n_layers+1) factor (that is pix2pixHD's; SPADE and PC-AVS drop it).
    """
    if len(fake_feats) != len(real_feats) or not fake_feats:
        raise ValueError(f"need the same non-zero number of scales, got {len(fake_feats)} and {len(real_feats)}")
    total = None
    for fake, real in zip(fake_feats, real_feats):
        if len(fake) != len(real):
            raise ValueError("fake and real feature lists differ in length")
        for j in range(len(fake) - 1):
            term = F.l1_loss(fake[j], real[j].detach())
            if j == 0:
                term = term * first_weight
            total = term if total is None else total + term
    if total is None:  # only logits were returned
        return fake_feats[0][-1].new_zeros(())
    return total / len(fake_feats)


# ----------------------------------------------------------------------------- InfoNCE (paper)


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE with cosine similarity and explicit negatives (PC-AVS paper eq. 2).

    anchor (B, D), positive (B, D), negatives (B, K, D). With D(u, v) = u.v / (|u| |v|):

        l_b = -log( exp(D(a_b, p_b)/t) / (exp(D(a_b, p_b)/t) + sum_{k=1..K} exp(D(a_b, n_{b,k})/t)) )
        loss = mean_b l_b

    i.e. a (K + 1)-way cross-entropy with the positive as class 0. The paper has no temperature
    (t = 1, the default); with t = 1 the loss lies in [log(1 + K e^-2), log(1 + K e^2)].
    Returns a 0-dim tensor; gradients flow into all three inputs.
    """
    if anchor.ndim != 2 or positive.shape != anchor.shape:
        raise ValueError(f"anchor and positive must both be (B, D), got {tuple(anchor.shape)} and {tuple(positive.shape)}")
    if negatives.ndim != 3 or negatives.shape[0] != anchor.shape[0] or negatives.shape[2] != anchor.shape[1]:
        raise ValueError(f"negatives must be (B, K, D) = ({anchor.shape[0]}, K, {anchor.shape[1]}), got {tuple(negatives.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    pos = F.cosine_similarity(anchor, positive, dim=-1).unsqueeze(1)           # (B, 1)
    neg = F.cosine_similarity(anchor.unsqueeze(1), negatives, dim=-1)          # (B, K)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def in_batch_negatives(x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B - 1, D): for each row b, the other rows b+1, ..., b-1 (mod B) (in-batch negatives)."""
    b = x.shape[0]
    if b < 2:
        raise ValueError("in-batch negatives need a batch of at least 2")
    idx = torch.arange(b, device=x.device)
    others = (idx.unsqueeze(1) + torch.arange(1, b, device=x.device).unsqueeze(0)) % b  # (B, B-1), row b skips b
    return x[others]


def av_info_nce(visual: torch.Tensor, audio: torch.Tensor, audio_negatives: torch.Tensor | None = None,
                visual_negatives: torch.Tensor | None = None, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Symmetric audio-visual InfoNCE of the PC-AVS paper: L_c = L_c^{v2a} + L_c^{a2v} (eq. 2-3).

    visual, audio: (B, D) speech-content features of time-aligned pairs (visual = mp_c(E_n(frame)),
    audio = E_c^a(mel)). v2a: anchor visual, positive its audio, negatives ``audio_negatives``
    (B, K, D); a2v: anchor audio, positive its visual, negatives ``visual_negatives`` (B, K, D).
    A missing negatives tensor defaults to in-batch negatives (the other rows of the batch).
    Returns {"v2a", "a2v", "loss" = v2a + a2v}, 0-dim tensors.
    """
    if audio_negatives is None:
        audio_negatives = in_batch_negatives(audio)
    if visual_negatives is None:
        visual_negatives = in_batch_negatives(visual)
    v2a = info_nce(visual, audio, audio_negatives, temperature)
    a2v = info_nce(audio, visual, visual_negatives, temperature)
    return {"v2a": v2a, "a2v": a2v, "loss": v2a + a2v}


# ----------------------------------------------------------------------------- official contrastive


def softmax_contrastive_loss(anchor: torch.Tensor, candidates: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The official ``SoftmaxContrastiveLoss`` (mode "max"): in-batch softmax over inverse L2 distances.

    anchor, candidates: (B, ...) flattened to (B, D), each row L2-normalised; then

        logits[i, j] = 1 / max(|a_i - c_j|_2, eps),    loss = mean_i CE(logits[i, :], target i)

    Differences from the paper's InfoNCE (`info_nce`): the score is the inverse Euclidean distance
    between unit vectors, 1 / sqrt(2 - 2 cos), not the cosine (it is unbounded, so a near-perfect
    match dominates the softmax much more strongly); negatives are the other B - 1 rows of the
    batch only; no temperature. ``eps`` is ours (the official code divides by zero for identical
    unit vectors); it changes nothing for distinct vectors.
    """
    a = F.normalize(anchor.reshape(anchor.shape[0], -1), p=2, dim=1)
    c = F.normalize(candidates.reshape(candidates.shape[0], -1), p=2, dim=1)
    if a.shape != c.shape:
        raise ValueError(f"anchor and candidates must flatten to the same (B, D), got {tuple(a.shape)} and {tuple(c.shape)}")
    dist = (a.unsqueeze(1) - c.unsqueeze(0)).pow(2).sum(-1).clamp_min(eps * eps).sqrt()  # (B, B)
    target = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(1.0 / dist, target)


def pcavs_sync_losses(visual: torch.Tensor, audio: torch.Tensor, contrastive_weight: float = 100.0,
                      cross_modal_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """The official audio-visual sync losses (``AvModel.compute_sync_loss`` with ``--softmax_contrastive``).

    visual: (B, ...) visual speech-content features (official: ``netE.to_mouth`` output, (B,
    clip_len, 512)); audio: (B, ...) audio features (``netA_sync``), same shape. Each is flattened
    per sample (the clip's frames concatenated into one vector). Returns, already weighted:

    * "v2a": softmax_contrastive_loss(visual.detach(), audio) x contrastive_weight
      (official key ``SoftmaxContrastive``; trains the audio side only)
    * "a2v": softmax_contrastive_loss(audio.detach(), visual) x contrastive_weight
      (official key ``SoftmaxContrastive_v2a``, despite the name; trains the visual side only)
    * "cross_modal" (only if cross_modal_weight > 0): L1(visual.detach(), audio) x cross_modal_weight
      (official ``CrossModal``, on unless ``--no_cross_modal``; pulls audio onto the visual features)

    Official weights: ``lambda_contrastive`` 100, ``lambda_crossmodal`` 1. Compared with the paper's
    InfoNCE: the score function differs (see `softmax_contrastive_loss`), each direction trains only
    one encoder (the anchor side is detached), and negatives are in-batch.
    """
    v = visual.reshape(visual.shape[0], -1)
    a = audio.reshape(audio.shape[0], -1)
    if v.shape != a.shape:
        raise ValueError(f"visual and audio must flatten to the same (B, D), got {tuple(v.shape)} and {tuple(a.shape)}")
    out = {
        "v2a": softmax_contrastive_loss(v.detach(), a) * contrastive_weight,
        "a2v": softmax_contrastive_loss(a.detach(), v) * contrastive_weight,
    }
    if cross_modal_weight > 0:
        out["cross_modal"] = F.l1_loss(a, v.detach()) * cross_modal_weight
    return out


# ----------------------------------------------------------------------------- decorrelation (PD-FGC)


def cross_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pearson correlation of every feature dimension of `a` with every one of `b` over N samples:
    (N, Da), (N, Db) -> (Da, Db), entry (i, j) = cov(a_i, b_j) / (std(a_i) std(b_j) + eps) with
    population (1/N) moments. N >= 2. Gradients flow into both inputs; a constant column gives
    correlations 0 and finite gradients (its variance is clamped at 1e-12 before the square root,
    whose gradient at 0 is infinite)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"need (N, Da) and (N, Db) with the same N, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2:
        raise ValueError("a correlation needs at least 2 samples")
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    n = a.shape[0]
    cov = a.t() @ b / n
    std_a = a.pow(2).mean(0).clamp_min(1e-12).sqrt()
    std_b = b.pow(2).mean(0).clamp_min(1e-12).sqrt()
    return cov / (std_a[:, None] * std_b[None, :] + eps)


def decorrelation_loss(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """PD-FGC's lip-motion decorrelation (paper eq. 6): (1 / Da) sum_{i, j} corr(a_i, b_j)^2 over the
    N rows of a (N, Da) and b (N, Db) (`cross_correlation`). The paper normalises by "the feature
    dimension D"; with Da != Db we take Da, the dimension of the feature being decorrelated (a, the
    expression code). 0 when independent (in expectation ~ Db / N for N random independent rows)."""
    return cross_correlation(a, b, eps).pow(2).sum() / a.shape[1]


class FeatureMemoryBank(nn.Module):
    """The `size` latest rows of a feature stream (PD-FGC's memory banks for eq. 6).

    ``push(x)`` stores the rows of x (N, dim), detached, overwriting the oldest (first in, first
    out; N > size keeps the last `size` rows of x). ``latest(k)`` returns the min(k, filled) most
    recently pushed rows, newest first (no gradient). Two banks pushed with aligned rows (the same N
    each time) return aligned rows. State (``features``, ``filled``, ``position``) is kept in
    buffers, so it is saved in checkpoints and moves with the module's device. Under DDP each
    process keeps its own bank (nothing is gathered).
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be >= 1, got {size} and {dim}")
        self.size = int(size)
        self.register_buffer("features", torch.zeros(self.size, int(dim)))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))  # next row to write

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.features.shape[1])[-self.size:].to(self.features.dtype)
        n = x.shape[0]
        rows = (int(self.position) + torch.arange(n, device=self.features.device)) % self.size
        self.features[rows] = x
        self.position.fill_((int(self.position) + n) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + n))

    def latest(self, k: int) -> torch.Tensor:
        k = max(0, min(int(k), int(self.filled)))
        rows = (int(self.position) - 1 - torch.arange(k, device=self.features.device)) % self.size
        return self.features[rows].detach().clone()


#: landmark ranges of the face regions the region losses box in (dlib 68-point order)
MOUTH_POINTS = range(48, 68)
EYE_POINTS = range(36, 48)


def region_mask(landmarks: torch.Tensor, size: int, points: range, margin: float) -> torch.Tensor:
    """(N, 68, 2) landmarks in `size`-px coordinates -> (N, 1, size, size) 0/1 mask of the box of
    `points`, grown by `margin` x its width on every side."""
    pts = landmarks[:, points.start:points.stop]
    lo, hi = pts.amin(1), pts.amax(1)
    pad = margin * (hi[:, 0] - lo[:, 0]).clamp_min(1.0)
    lo, hi = lo - pad[:, None], hi + pad[:, None]
    coords = torch.arange(size, device=landmarks.device, dtype=landmarks.dtype)
    inside_x = (coords[None] >= lo[:, 0:1]) & (coords[None] <= hi[:, 0:1])  # (N, S)
    inside_y = (coords[None] >= lo[:, 1:2]) & (coords[None] <= hi[:, 1:2])
    return (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1).to(landmarks.dtype)


def mouth_mask(landmarks: torch.Tensor, size: int, margin: float = 0.35) -> torch.Tensor:
    """The mouth box (points 48-67, grown by `margin` x its width): `region_mask`."""
    return region_mask(landmarks, size, MOUTH_POINTS, margin)


def masked_l1(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |fake - real| over the pixels (and channels) where mask (N, 1, S, S) is 1; with `weight`
    (N,) >= 0, each image's pixels count `weight` times (a weighted mean over the masked pixels)."""
    if weight is not None:
        mask = mask * weight.to(mask.dtype).view(-1, 1, 1, 1)
    return ((fake - real).abs() * mask).sum() / (mask.sum() * fake.shape[1]).clamp_min(1.0)


def mouth_l1_loss(fake: torch.Tensor, real: torch.Tensor, landmarks: torch.Tensor, margin: float = 0.35) -> torch.Tensor:
    """Mean absolute pixel error inside the mouth box (`mouth_mask`) of (N, 3, S, S) images, with
    (N, 68, 2) landmarks in S-px coordinates. A training aid of the CPU configs (in neither paper):
    it makes a small generator spend capacity on the mouth, a few percent of the frame."""
    return masked_l1(fake, real, mouth_mask(landmarks.to(fake.dtype), fake.shape[-1], margin))


def eye_closure(landmarks: torch.Tensor, open_ear: float = 0.3) -> torch.Tensor:
    """(N, 68, 2) landmarks -> (N,) closure of the eyes, the mean over both of 1 - EAR / `open_ear`
    clamped to [0, 1] (EAR: the eye aspect ratio, as `talkinghead.metrics.factors`): 0 for a wide-open
    eye, 1 for a closed one (on dlib's landmarks of SynthTalk: 0.07 on open-eyed frames, 0.36 on
    blink frames on average)."""
    closures = []
    for first in (36, 42):  # corner, two upper, corner, two lower
        p = landmarks[:, first:first + 6]
        vertical = (p[:, 1] - p[:, 5]).norm(dim=-1) + (p[:, 2] - p[:, 4]).norm(dim=-1)
        ear = vertical / (2 * (p[:, 0] - p[:, 3]).norm(dim=-1).clamp_min(1e-6))
        closures.append((1 - ear / open_ear).clamp(0.0, 1.0))
    return torch.stack(closures, 1).mean(1)


def eye_l1_loss(fake: torch.Tensor, real: torch.Tensor, landmarks: torch.Tensor, margin: float = 0.1,
                closure_weight: float = 0.0) -> torch.Tensor:
    """Mean absolute pixel error inside the box of both eyes (points 36-47, grown by `margin` x its
    width) of (N, 3, S, S) images, with (N, 68, 2) landmarks in S-px coordinates: the eyes' twin of
    `mouth_l1_loss` (a CPU-config aid, in neither paper), for blinks and gaze: with the default margin
    about 7% of an aligned face frame (the mouth box: about 10%). With `closure_weight` k > 0 each
    image counts 1 + k x its `eye_closure`, so blinks (a few percent of frames, a few pixels each)
    weigh more against the open eyes a generator otherwise settles for."""
    landmarks = landmarks.to(fake.dtype)
    weight = 1.0 + closure_weight * eye_closure(landmarks) if closure_weight > 0 else None
    return masked_l1(fake, real, region_mask(landmarks, fake.shape[-1], EYE_POINTS, margin), weight)
