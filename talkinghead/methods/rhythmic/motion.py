"""The head-motion learner Phi of Rhythmic Head (Chen et al., ECCV 2020, Sec. 3.3), its losses and data.

Paper: given the reference head motion h_1:tau and its audio x_1:tau, and the driving audio
x_tau+1:T, predict h_tau+1:T as Phi(f(h_1:tau, x_1:tau), x_tau+1:T): an encoder f maps the
reference motion + audio to a feature, an MLP turns it into the weights w of a dynamic MLP, which
is applied to temporal-convolution features of the driving audio ("few-shot temporal convolution
network"). tau = 64 in all the paper's experiments.

We build the released head-motion trainer (``RotateAudio/`` of
lelechen63/Talking-head-Generation-with-Rhythmic-Head-Motion) with its recommended options
``--rt_encode tc_no_lstm --audio_encode se --rt_decode l2l``, under the official submodule names
of its checkpoint dict ``{encode, mid_net, decode}`` (module names inside them too), so
`load_official_motion` maps an official checkpoint tensor for tensor:

==========  ===================================  ==============================================
submodule   official class (paper role)          layers (paper size; every size from the config)
==========  ===================================  ==============================================
``mid_net`` ``SingleEmb`` (audio encoder; the    per frame: the 7 x 640-sample waveform window
            "temporal convolutional blocks" of   (1, 7, 640) -> ``conv`` Conv2d 1->8 3x3, ReLU,
            the driving audio)                   Conv2d 8->16 3x3 (no padding) -> flatten 16*3*636
                                                 = 30528; over time: ``audio_l`` Conv1d
                                                 30528->512 k3 p1, BN, LeakyReLU(0.3), Dropout,
                                                 Conv1d 512->256 k3 p1, BN, LeakyReLU(0.3)
                                                 -> (B, T, 256)
``encode``  ``TemporalConv_no_LSTM`` (the        per frame: ``l`` Linear 6->128, BN, LeakyReLU(0.3),
            reference encoder f)                 Linear 128->256; cat with the audio feature
                                                 (512); ``backend_conv1`` 2 x [Conv1d 512->512 k5
                                                 s2 (no padding), BN, LeakyReLU(0.3), Dropout];
                                                 mean over time -> reference feature (B, 512)
``decode``  ``L2LDecode`` (the MLP producing w   ``l`` Linear 512 -> 256*6 + 6: w = the first 1536
            and the dynamic MLP)                 outputs viewed (256, 6), bias the last 6;
                                                 h_t = a_t @ w + bias for each driving frame
==========  ===================================  ==============================================

The dynamic MLP is one linear layer (the official ``l2l``), the "MLP that produces w" one linear
layer too. The audio features of reference and driving frames come from one ``mid_net`` pass over
the concatenated sequence, then split (as the official ``G_train``), so the temporal kernel sees
across the split.

Official training (``RotateAudio/main.py``, ``options.py``, ``dataset.py``), mirrored by
`HeadMotionConfig` fields and the helpers below:

* data: per frame the raw 16 kHz waveform ``x_t-3:t+4`` in 7 chunks of 640 samples
  (`motion_audio_frames`), on the int16 scale (scipy ``wavfile.read`` of 16-bit files:
  ``audio_scale`` 32768 on our [-1, 1] audio); the motion normalised with a fixed mean/std
  (`MotionNormaliser`), then each motion dimension and each audio sample position smoothed over
  time with a Hanning window of 11 / 21 frames (`smooth_sequence`); a random past of 32-96 frames
  and future of 16-96 frames per batch (`sample_window_lengths`), one random start per batch.
* losses: MSE on the normalised motion; a discriminator (`MotionDiscriminator`, ``Linear(24, 1)``
  on the per-sequence mean and std of the motion and of its frame-to-frame deltas, sigmoid + BCE)
  trained on real futures vs. predictions. The released ``G_train`` minimises the MSE alone: the
  discriminator is trained but its output never reaches the generator's loss, hence
  ``adversarial_weight`` 0 in the paper preset (`motion_losses` adds the non-saturating GAN term
  when it is > 0).
* Adam lr 3e-4, weight decay 2e-5, batch 64, dropout 0.1; lr constant for 5 epochs then
  x 0.5^((epoch - 4) / 5); 100 epochs. Validation: past 64 -> future 64.

Our 6-d motion vs. the official RT. The store's ``pose`` (T, 6) comes from
`talkinghead.data.faces.estimate_head_pose`: a weak-perspective (scaled orthographic) fit of the 2D
dlib landmarks to the canonical 3D template: rotation vector (rad), tx, ty (pixels in the aligned
224 image), log scale (0 = inter-ocular distance 50 px). The official RT is a rotation vector plus a
3D translation from a Kabsch fit of face_alignment 3D landmarks to a canonical 3D landmark set, in
that set's units (its fixed mean/std: `OFFICIAL_RT_MEAN` / `OFFICIAL_RT_STD`). The rotation parts
agree in meaning (up to the conventions of the two templates); the last three do not: our tz is a
log scale, not a depth, and tx, ty are image pixels after the store's face alignment (which already
removes most translation). Networks trained on our store therefore use our `MotionNormaliser`
fitted on it (`motion_normaliser`); official weights loaded with `load_official_motion` expect the
official RT (their normaliser is set to the official constants) and are only meaningful on it.

Deviations (beyond the pose convention above): the official ``utils.smooth`` output lags its input
by one frame (it keeps ``y[w//2 - 1 : -(w//2 + 1)]`` of the reflect-padded convolution, for the
motion and the audio alike); `smooth_sequence` is centred. The official audio framing inserts the
4 appended chunks before the last sample (``np.insert(..., -1, ...)``); we append them after it.
Long sequences: the official code predicts one 64-frame future; `HeadMotionLearner.extrapolate`
predicts any length by chunks of ``infer_chunk`` frames, each conditioned on the last
``infer_context`` frames of reference + already predicted motion (autoregressive).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.data.corpora.base import FPS, SAMPLE_RATE
from talkinghead.nn.config import ConfigDict
from talkinghead.nn.official import KeyMap, Shapes, bn_shapes, check_state_dict, conv_shapes, linear_shapes

__all__ = [
    "CHUNK_SAMPLES",
    "MOTION_COMPONENTS",
    "MOTION_KEY_MAP",
    "OFFICIAL_RT_MEAN",
    "OFFICIAL_RT_STD",
    "HeadMotionConfig",
    "HeadMotionLearner",
    "MotionDiscriminator",
    "MotionNormaliser",
    "load_official_motion",
    "lr_factor",
    "motion_audio_frames",
    "motion_clip_inputs",
    "motion_keymap",
    "motion_discriminator_losses",
    "motion_losses",
    "motion_normaliser",
    "motion_statistics",
    "official_motion_shapes",
    "official_motion_state_dict",
    "sample_window_lengths",
    "training_window",
    "smooth_sequence",
]

#: Samples of one video frame of audio (16 kHz / 25 fps = 40 ms).
CHUNK_SAMPLES = SAMPLE_RATE // FPS
#: The official checkpoint dict's entries, which are also our submodule names.
MOTION_COMPONENTS = ("encode", "mid_net", "decode")
#: The official fixed RT normalisation (``RotateAudio/dataset.py``): rotation vector, translation.
OFFICIAL_RT_MEAN = (0.07, -0.008, -0.016, 11.4, 5.69, -4.37)
OFFICIAL_RT_STD = (0.066, 0.132, 0.071, 9.99, 9.24, 16.95)


@dataclass(frozen=True)
class HeadMotionConfig(ConfigDict):
    """Sizes and training settings of the head-motion learner. `paper()` is the official RotateAudio
    model (``tc_no_lstm`` / ``se`` / ``l2l``, dropout 0.1); `tiny()` a CPU-trainable one.

    motion_dim:        motion coefficients per frame (6: rotation vector + translation / our pose).
    context_frames:    audio chunks per frame, centred on it (7: x_t-3 .. x_t+3, 0.28 s).
    chunk_samples:     samples per chunk (640 = one 25 fps frame at 16 kHz).
    audio_conv:        ``mid_net.conv`` Conv2d widths (3x3, stride 1, no padding, ReLU between).
    audio_hidden:      width of the first ``mid_net.audio_l`` Conv1d (512).
    audio_dim:         per-frame audio feature (256), also the dynamic MLP's input width.
    audio_kernel:      temporal kernel of ``audio_l`` (3, zero padding k // 2).
    motion_hidden:     ``encode.l`` hidden width (128).
    motion_embed:      ``encode.l`` output (256); with ``audio_dim`` the encoder's Conv1d input.
    encoder_channels:  ``encode.backend_conv1`` width = the reference feature size (512).
    encoder_kernel / encoder_stride / encoder_layers: its Conv1d's (5, 2, 2; no padding).
    dropout:           dropout after each Conv1d block (official recommended ``--drop 0.1``).
    leaky_slope:       LeakyReLU slope (0.3).
    audio_scale:       factor from our [-1, 1] waveform to the network's input (32768: the int16
                       values the official ``wavfile.read`` gives).
    pose_smoothing / audio_smoothing: Hanning windows (frames) of the training data smoothing (11 /
                       21; 0 or 1 = none).
    reference_range / predict_range: inclusive ranges of the past / future lengths sampled per
                       training batch (official 32-96 / 16-96).
    infer_context / infer_chunk: `HeadMotionLearner.extrapolate`'s conditioning length and step
                       (64 / 64: the official validation split).
    disc_hidden:       hidden widths of the motion discriminator's MLP (official none: Linear(24, 1)).
    adversarial_weight: weight of the discriminator term in the generator loss (official 0, see the
                       module docstring).
    lr / weight_decay: Adam settings (official 3e-4 / 2e-5).
    lr_constant_epochs / lr_half_life: official schedule: constant for 5 epochs, then halved every 5.
    """

    motion_dim: int = 6
    context_frames: int = 7
    chunk_samples: int = CHUNK_SAMPLES
    audio_conv: tuple[int, ...] = (8, 16)
    audio_hidden: int = 512
    audio_dim: int = 256
    audio_kernel: int = 3
    motion_hidden: int = 128
    motion_embed: int = 256
    encoder_channels: int = 512
    encoder_kernel: int = 5
    encoder_stride: int = 2
    encoder_layers: int = 2
    dropout: float = 0.1
    leaky_slope: float = 0.3
    audio_scale: float = 32768.0
    pose_smoothing: int = 11
    audio_smoothing: int = 21
    reference_range: tuple[int, int] = (32, 96)
    predict_range: tuple[int, int] = (16, 96)
    infer_context: int = 64
    infer_chunk: int = 64
    disc_hidden: tuple[int, ...] = ()
    adversarial_weight: float = 0.0
    lr: float = 3e-4
    weight_decay: float = 2e-5
    lr_constant_epochs: int = 5
    lr_half_life: float = 5.0

    def __post_init__(self) -> None:
        for name in ("audio_conv", "reference_range", "predict_range", "disc_hidden"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        self.validate()

    # -- derived sizes ----------------------------------------------------------------------
    @property
    def audio_flat(self) -> int:
        """Flattened ``mid_net.conv`` output per frame (official 16 * 3 * 636 = 30528)."""
        shrink = 2 * len(self.audio_conv)
        return self.audio_conv[-1] * (self.context_frames - shrink) * (self.chunk_samples - shrink)

    @property
    def window_samples(self) -> int:
        """Samples of one frame's audio window (7 * 640 = 4480)."""
        return self.context_frames * self.chunk_samples

    @property
    def decode_out(self) -> int:
        """``decode.l`` outputs: the dynamic weights (audio_dim x motion_dim) and bias (motion_dim)."""
        return self.audio_dim * self.motion_dim + self.motion_dim

    @property
    def min_reference(self) -> int:
        """Fewest reference frames ``encode.backend_conv1`` accepts (official 13)."""
        need = 1
        for _ in range(self.encoder_layers):
            need = (need - 1) * self.encoder_stride + self.encoder_kernel
        return need

    def validate(self) -> None:
        """Raise ValueError naming every size that does not fit the others."""
        problems = []
        if self.motion_dim < 1:
            problems.append(f"motion_dim must be >= 1, got {self.motion_dim}")
        if not self.audio_conv:
            problems.append("audio_conv needs at least one Conv2d width")
        if self.context_frames - 2 * len(self.audio_conv) < 1 or self.chunk_samples - 2 * len(self.audio_conv) < 1:
            problems.append(f"{len(self.audio_conv)} unpadded 3x3 convs do not fit a {self.context_frames} x "
                            f"{self.chunk_samples} audio window")
        if self.context_frames < 1 or self.context_frames % 2 == 0:
            problems.append(f"context_frames must be odd (centred on the frame), got {self.context_frames}")
        if self.audio_kernel < 1 or self.audio_kernel % 2 == 0:
            problems.append(f"audio_kernel must be odd (same-length temporal conv), got {self.audio_kernel}")
        if self.encoder_layers < 1 or self.encoder_kernel < 1 or self.encoder_stride < 1:
            problems.append("encoder_layers, encoder_kernel and encoder_stride must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("reference_range", "predict_range"):
            lo, hi = getattr(self, name)
            if len(getattr(self, name)) != 2 or lo < 1 or hi < lo:
                problems.append(f"{name} must be (min, max) with 1 <= min <= max, got {getattr(self, name)}")
        if self.reference_range[0] < self.min_reference:
            problems.append(f"reference_range starts at {self.reference_range[0]} < min_reference "
                            f"{self.min_reference} (encoder_layers x Conv1d k{self.encoder_kernel} "
                            f"s{self.encoder_stride})")
        if self.infer_context < self.min_reference:
            problems.append(f"infer_context {self.infer_context} < min_reference {self.min_reference}")
        if self.infer_chunk < 1:
            problems.append(f"infer_chunk must be >= 1, got {self.infer_chunk}")
        if self.audio_scale <= 0:
            problems.append(f"audio_scale must be > 0, got {self.audio_scale}")
        if self.adversarial_weight < 0:
            problems.append(f"adversarial_weight must be >= 0, got {self.adversarial_weight}")
        if problems:
            raise ValueError("inconsistent head-motion config: " + "; ".join(problems))

    # -- presets ----------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides: Any) -> "HeadMotionConfig":
        """The official RotateAudio model (recommended options), the released checkpoint's shapes."""
        return replace(cls(), **overrides) if overrides else cls()

    @classmethod
    def tiny(cls, **overrides: Any) -> "HeadMotionConfig":
        """A CPU-trainable learner: the same layout (7 x 640-sample windows, two 3x3 convs, two
        Conv1d k5 s2 encoder blocks, one dynamic linear layer) with narrow widths and short
        windows (past 16-24, future 8-16 frames; min_reference 13)."""
        cfg = cls(audio_conv=(2, 4), audio_hidden=32, audio_dim=16, motion_hidden=16, motion_embed=16,
                  encoder_channels=32, dropout=0.0, reference_range=(16, 24), predict_range=(8, 16),
                  infer_context=16, infer_chunk=8)
        return replace(cfg, **overrides) if overrides else cfg


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------
class WaveformEncoder(nn.Module):
    """``mid_net`` (official ``SingleEmb``): audio windows (B, T, C, S) (C = context_frames chunks
    of S = chunk_samples samples, int16 scale) -> per-frame features (B, T, audio_dim).

    ``conv``: unpadded 3x3 Conv2d's with ReLU between them (none after the last), per frame;
    ``audio_l``: two same-length Conv1d's over time (BN, LeakyReLU, dropout after the first).
    """

    def __init__(self, config: HeadMotionConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        cin = 1
        for i, width in enumerate(config.audio_conv):
            if i:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Conv2d(cin, width, 3, 1))
            cin = width
        self.conv = nn.Sequential(*layers)
        k, pad = config.audio_kernel, config.audio_kernel // 2
        self.audio_l = nn.Sequential(
            nn.Conv1d(config.audio_flat, config.audio_hidden, k, stride=1, padding=pad),
            nn.BatchNorm1d(config.audio_hidden),
            nn.LeakyReLU(config.leaky_slope),
            nn.Dropout(config.dropout),
            nn.Conv1d(config.audio_hidden, config.audio_dim, k, stride=1, padding=pad),
            nn.BatchNorm1d(config.audio_dim),
            nn.LeakyReLU(config.leaky_slope),
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if audio.dim() == 5:  # the official (B, T, 1, C, S)
            audio = audio.squeeze(2)
        if audio.dim() != 4 or tuple(audio.shape[2:]) != (cfg.context_frames, cfg.chunk_samples):
            raise ValueError(f"audio windows must be (B, T, {cfg.context_frames}, {cfg.chunk_samples}), got "
                             f"{tuple(audio.shape)}")
        b, t = audio.shape[:2]
        feat = self.conv(audio.reshape(b * t, 1, cfg.context_frames, cfg.chunk_samples))
        feat = feat.reshape(b, t, -1).transpose(1, 2)  # (B, flat, T)
        return self.audio_l(feat).transpose(1, 2)


class ReferenceEncoder(nn.Module):
    """``encode`` (official ``TemporalConv_no_LSTM``), the paper's f: reference motion (B, tau, 6)
    (normalised) and its audio features (B, tau, audio_dim) -> reference feature (B, encoder_channels).

    ``l``: per-frame Linear, BN, LeakyReLU, Linear; ``backend_conv1``: unpadded strided Conv1d
    blocks over time on [motion embedding, audio feature]; then the mean over the remaining steps.
    tau >= ``config.min_reference``.
    """

    def __init__(self, config: HeadMotionConfig):
        super().__init__()
        self.config = config
        self.l = nn.Sequential(
            nn.Linear(config.motion_dim, config.motion_hidden),
            nn.BatchNorm1d(config.motion_hidden),
            nn.LeakyReLU(config.leaky_slope),
            nn.Linear(config.motion_hidden, config.motion_embed),
        )
        layers: list[nn.Module] = []
        cin = config.motion_embed + config.audio_dim
        for _ in range(config.encoder_layers):
            layers += [nn.Conv1d(cin, config.encoder_channels, config.encoder_kernel, stride=config.encoder_stride),
                       nn.BatchNorm1d(config.encoder_channels), nn.LeakyReLU(config.leaky_slope),
                       nn.Dropout(config.dropout)]
            cin = config.encoder_channels
        self.backend_conv1 = nn.Sequential(*layers)

    def forward(self, motion: torch.Tensor, audio_feat: torch.Tensor) -> torch.Tensor:
        b, t, d = motion.shape
        if t < self.config.min_reference:
            raise ValueError(f"the reference needs >= {self.config.min_reference} frames, got {t}")
        emb = self.l(motion.reshape(b * t, d)).reshape(b, t, -1)
        feat = torch.cat([emb, audio_feat], dim=-1).transpose(1, 2)
        return self.backend_conv1(feat).mean(-1)


class DynamicLinearDecoder(nn.Module):
    """``decode`` (official ``L2LDecode``): ``l`` maps the reference feature (B, encoder_channels)
    to the weights w (B, audio_dim, motion_dim) and bias (B, motion_dim) of a per-sequence linear
    layer, applied to every driving frame's audio feature (B, T', audio_dim) -> (B, T', motion_dim)."""

    def __init__(self, config: HeadMotionConfig):
        super().__init__()
        self.config = config
        self.l = nn.Linear(config.encoder_channels, config.decode_out)

    def dynamic_weights(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference feature (B, C) -> (w (B, audio_dim, motion_dim), bias (B, motion_dim))."""
        d = self.config.motion_dim
        feat = self.l(reference)
        return feat[:, :-d].reshape(-1, self.config.audio_dim, d), feat[:, -d:]

    def forward(self, reference: torch.Tensor, audio_feat: torch.Tensor) -> torch.Tensor:
        w, bias = self.dynamic_weights(reference)
        return torch.bmm(audio_feat, w) + bias.unsqueeze(1)


class MotionNormaliser(nn.Module):
    """Fixed per-dimension motion normalisation, (x - mean) / std, with ``mean`` / ``std`` (motion_dim,)
    as buffers (they travel in checkpoints). Identity until fitted (`motion_normaliser`) or set."""

    def __init__(self, motion_dim: int = 6):
        super().__init__()
        self.register_buffer("mean", torch.zeros(motion_dim))
        self.register_buffer("std", torch.ones(motion_dim))

    def set(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> "MotionNormaliser":
        mean = torch.as_tensor(mean, dtype=self.mean.dtype).reshape(-1)
        std = torch.as_tensor(std, dtype=self.std.dtype).reshape(-1)
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(f"normaliser statistics must have {self.mean.numel()} values, got {mean.numel()} / "
                             f"{std.numel()}")
        if not bool((std > 0).all()):
            raise ValueError(f"normaliser std must be > 0, got {std.tolist()}")
        self.mean.copy_(mean)
        self.std.copy_(std)
        return self

    def normalise(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.mean.to(motion)) / self.std.to(motion)

    def denormalise(self, motion: torch.Tensor) -> torch.Tensor:
        return motion * self.std.to(motion) + self.mean.to(motion)


class HeadMotionLearner(nn.Module):
    """Phi: ``encode`` (f), ``mid_net`` (audio), ``decode`` (dynamic MLP), plus ``normaliser``
    (`MotionNormaliser`, buffers only). See the module docstring.

    `forward` works on normalised motion, as the official networks (and the training losses) do;
    `extrapolate` takes and returns store poses and handles any output length.
    """

    def __init__(self, config: HeadMotionConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = HeadMotionConfig.paper()
        elif isinstance(config, dict):
            config = HeadMotionConfig.from_dict(config)
        self.config = config
        self.encode = ReferenceEncoder(config)
        self.mid_net = WaveformEncoder(config)
        self.decode = DynamicLinearDecoder(config)
        self.normaliser = MotionNormaliser(config.motion_dim)

    def forward(self, ref_motion: torch.Tensor, ref_audio: torch.Tensor, drive_audio: torch.Tensor) -> torch.Tensor:
        """ref_motion (B, tau, 6) normalised; ref_audio (B, tau, 7, 640) and drive_audio (B, T', 7, 640)
        audio windows (`motion_audio_frames`; a singleton dim 2 as in the official (B, T, 1, 7, 640) is
        accepted) -> predicted normalised motion (B, T', 6). tau >= ``config.min_reference``, T' >= 1.

        The audio of both parts goes through ``mid_net`` as one sequence, then is split at tau.
        """
        tau = ref_motion.shape[1]
        if ref_audio.shape[1] != tau:
            raise ValueError(f"ref_audio has {ref_audio.shape[1]} frames, ref_motion {tau}")
        feat = self.mid_net(torch.cat([ref_audio, drive_audio], dim=1))
        reference = self.encode(ref_motion, feat[:, :tau])
        return self.decode(reference, feat[:, tau:])

    def extrapolate(self, ref_pose: torch.Tensor, ref_audio: torch.Tensor, drive_audio: torch.Tensor,
                    context: int | None = None, chunk: int | None = None) -> torch.Tensor:
        """Long-sequence inference in pose units: ref_pose (B, tau, 6) (store poses, un-normalised),
        ref_audio (B, tau, 7, 640), drive_audio (B, T', 7, 640), any T' >= 1 -> poses (B, T', 6).

        Chunks of `chunk` frames (default ``config.infer_chunk``), each predicted from the last
        `context` frames (default ``config.infer_context``, at most what exists) of reference and
        already predicted motion with their audio. Give inputs prepared as in training (poses
        smoothed, audio windows of `motion_audio_frames` over one continuous waveform; see
        `motion_clip_inputs`). Call in eval mode (BatchNorm statistics, no
        dropout) and under ``torch.no_grad()`` unless gradients are wanted.
        """
        cfg = self.config
        context = int(context or cfg.infer_context)
        chunk = int(chunk or cfg.infer_chunk)
        tau, total = ref_pose.shape[1], drive_audio.shape[1]
        if min(tau, context) < cfg.min_reference:
            raise ValueError(f"extrapolate needs a reference / context of >= {cfg.min_reference} frames, got "
                             f"{tau} / {context}")
        motion = self.normaliser.normalise(ref_pose)
        audio = torch.cat([ref_audio, drive_audio], dim=1)
        pos = tau
        while pos < tau + total:
            n = min(chunk, tau + total - pos)
            lo = pos - min(context, pos)
            pred = self(motion[:, lo:pos], audio[:, lo:pos], audio[:, pos:pos + n])
            motion = torch.cat([motion, pred], dim=1)
            pos += n
        return self.normaliser.denormalise(motion[:, tau:])


def motion_statistics(motion: torch.Tensor) -> torch.Tensor:
    """The official discriminator's input: (B, T, D) -> (B, 4D) = [mean, std, delta mean, delta std]
    over time (std unbiased, as ``torch.std``; deltas h_t+1 - h_t). T >= 3."""
    if motion.shape[1] < 3:
        raise ValueError(f"motion statistics need >= 3 frames, got {motion.shape[1]}")
    delta = motion[:, 1:] - motion[:, :-1]
    return torch.cat([motion.mean(1), motion.std(1), delta.mean(1), delta.std(1)], dim=-1)


class MotionDiscriminator(nn.Module):
    """Discriminator on motion statistics (official ``DT_Discriminator``): normalised motion (B, T, D)
    -> real/fake logit (B,). ``l``: an MLP on `motion_statistics` (4D = 24 inputs); the official
    one is a single Linear(24, 1) (``disc_hidden`` empty; key ``l.0``), hidden layers use
    LeakyReLU(0.2). The official sigmoid + BCELoss is `motion_losses`' BCE-with-logits."""

    def __init__(self, config: HeadMotionConfig):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 4 * config.motion_dim
        for width in config.disc_hidden:
            layers += [nn.Linear(cin, width), nn.LeakyReLU(0.2)]
            cin = width
        layers.append(nn.Linear(cin, 1))
        self.l = nn.Sequential(*layers)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        return self.l(motion_statistics(motion)).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def motion_losses(pred: torch.Tensor, target: torch.Tensor, discriminator: MotionDiscriminator | None = None,
                  adversarial_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Generator losses on normalised motion (B, T', 6): {"mse", ["adversarial"], "total"}.

    "mse": the official MSE. "adversarial" (only with a discriminator and a weight > 0; the
    official generator loss has none): non-saturating BCE of D(pred) against "real".
    total = mse + adversarial_weight * adversarial.
    """
    mse = F.mse_loss(pred, target)
    out = {"mse": mse}
    total = mse
    if discriminator is not None and adversarial_weight > 0:
        logits = discriminator(pred)
        adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        out["adversarial"] = adv
        total = total + adversarial_weight * adv
    out["total"] = total
    return out


def motion_discriminator_losses(discriminator: MotionDiscriminator, real: torch.Tensor,
                                fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """The official discriminator step: BCE of D(real future) vs 1 and D(prediction) vs 0 (the
    prediction detached); {"real", "fake", "total" = real + fake}."""
    real_logits = discriminator(real)
    fake_logits = discriminator(fake.detach())
    real_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return {"real": real_loss, "fake": fake_loss, "total": real_loss + fake_loss}


# ---------------------------------------------------------------------------------------------
# data helpers
# ---------------------------------------------------------------------------------------------
def _as_tensor(x) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t if t.is_floating_point() else t.float()


def smooth_sequence(x, window: int, dim: int = 0) -> torch.Tensor:
    """Hanning smoothing along `dim` (time): weights ``np.hanning(window)`` normalised to sum 1,
    reflect padding (no edge repeat) of window // 2 at both ends, centred (the official ``smooth``
    lags by one frame, see the module docstring). A window longer than the sequence shrinks to the
    longest odd one that fits; window < 3 returns the input. Any shape; returns a float tensor."""
    x = _as_tensor(x)
    n = x.shape[dim]
    window = int(window)
    if window > n:
        window = n if n % 2 else n - 1
    if window < 3:
        return x
    if window % 2 == 0:
        raise ValueError(f"smooth_sequence needs an odd window, got {window}")
    weights = torch.as_tensor(np.hanning(window), dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    moved = x.movedim(dim, -1)
    shape = moved.shape
    flat = moved.reshape(-1, 1, n)
    padded = F.pad(flat, (window // 2, window // 2), mode="reflect")
    out = F.conv1d(padded, weights.view(1, 1, -1)).reshape(shape)
    return out.movedim(-1, dim)


def motion_audio_frames(wav, num_frames: int, config: HeadMotionConfig | None = None,
                        smooth: bool = True) -> torch.Tensor:
    """The official per-frame audio input: wav (N,) or (B, N), 16 kHz in [-1, 1] (the store's
    ``audio``) -> (num_frames, C, S) or (B, num_frames, C, S) float32, C = context_frames (7) chunks
    of S = chunk_samples (640).

    Frame t's window is samples [(t - 3) * 640, (t + 4) * 640): chunks t-3 .. t+3. As the official
    ``parse_audio``: the first 3 chunks are copied in front and the last 4 appended (so the
    windows at the ends repeat audio, they are not zero), audio shorter than num_frames * 640 is
    zero-padded first; then x ``audio_scale`` (int16 scale) and, with `smooth`, each sample position
    smoothed over frames with a Hanning window of ``audio_smoothing`` (`smooth_sequence`).
    """
    cfg = config or HeadMotionConfig.paper()
    x = _as_tensor(wav).float()
    squeeze = x.dim() == 1
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"motion_audio_frames expects (N,) or (B, N) audio, got {tuple(x.shape)}")
    s, c = cfg.chunk_samples, cfg.context_frames
    left = (c - 1) // 2
    need = num_frames * s
    if x.shape[1] < need:
        x = F.pad(x, (0, need - x.shape[1]))
    if x.shape[1] < c * s:
        raise ValueError(f"motion_audio_frames needs >= {c * s} samples ({c} chunks), got {x.shape[1]}")
    padded = torch.cat([x[:, :left * s], x, x[:, -(c - left) * s:]], dim=1)
    frames = padded.unfold(1, c * s, s)[:, :num_frames].reshape(x.shape[0], num_frames, c, s)
    frames = frames * cfg.audio_scale
    if smooth and cfg.audio_smoothing >= 3:
        frames = smooth_sequence(frames, cfg.audio_smoothing, dim=1)
    return frames[0] if squeeze else frames


def sample_window_lengths(config: HeadMotionConfig, rng: random.Random | None = None,
                          available: int | None = None) -> tuple[int, int]:
    """(past, future) frame counts for one training batch, uniform in ``reference_range`` /
    ``predict_range`` (official: 32-96 / 16-96, one draw per batch). With `available` (the shortest
    clip of the batch) the future, then the past, shrink to fit (past never below
    ``min_reference``; a clip shorter than min_reference + 1 frames is a ValueError)."""
    rng = rng or random
    past = rng.randint(*config.reference_range)
    future = rng.randint(*config.predict_range)
    if available is not None:
        if available < config.min_reference + 1:
            raise ValueError(f"a clip of {available} frames is too short (needs >= {config.min_reference + 1})")
        if past + future > available:
            future = max(1, min(future, available - past))
            past = min(past, available - future)
    return past, future


def training_window(motion: torch.Tensor, audio: torch.Tensor, lengths: Sequence[int] | torch.Tensor | None,
                    config: HeadMotionConfig, rng: random.Random | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One official training crop of a padded batch: motion (B, T, 6) normalised, audio (B, T, 7, 640),
    lengths (B,) valid frames per row (None: all T) -> (ref_motion (B, past, 6), ref_audio (B, past,
    7, 640), drive_audio (B, future, 7, 640), target (B, future, 6)).

    Lengths from `sample_window_lengths` (one draw per batch, shrunk to the shortest row); one
    random start for the whole batch in [0, min(lengths) - past - future) (0 when it does not fit,
    as the official loop).
    """
    rng = rng or random
    available = int(min(lengths)) if lengths is not None else motion.shape[1]
    past, future = sample_window_lengths(config, rng, available=available)
    span = available - past - future
    start = rng.randrange(span) if span > 0 else 0
    mid, end = start + past, start + past + future
    return motion[:, start:mid], audio[:, start:mid], audio[:, mid:end], motion[:, mid:end]


def motion_clip_inputs(source, entry, config: HeadMotionConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One store clip as the learner's training data: (poses (T, 6) float32 in pose units, smoothed
    over time with a Hanning window of ``pose_smoothing``; audio windows (T, 7, 640) of
    `motion_audio_frames`, smoothed with ``audio_smoothing``). Normalise the poses with the model's
    ``normaliser`` (smoothing and normalising commute). `source`: `ClipStore` / `ShardSource`."""
    cfg = config or HeadMotionConfig.paper()
    arrays = source.load(entry, ["pose", "audio"])
    pose = torch.as_tensor(np.asarray(arrays["pose"], dtype=np.float32))
    if cfg.pose_smoothing >= 3:
        pose = smooth_sequence(pose, cfg.pose_smoothing, dim=0)
    return pose, motion_audio_frames(arrays["audio"], len(pose), cfg)


def _iter_poses(source, split: str | None, max_clips: int | None) -> Iterable[np.ndarray]:
    if hasattr(source, "clips") and hasattr(source, "load"):
        entries = source.clips(split)
        if max_clips is not None:
            entries = entries[:max_clips]
        for entry in entries:
            yield np.asarray(source.load(entry, ["pose"])["pose"])
    else:
        for poses in source:
            yield np.asarray(poses)


def motion_normaliser(source, split: str | None = "train", max_clips: int | None = None,
                      motion_dim: int = 6, min_std: float = 1e-6) -> MotionNormaliser:
    """A `MotionNormaliser` with the per-dimension mean and (population) std of all frames' poses.

    source: a clip store (`ClipStore` / `ShardSource`: its `split` clips' ``pose``, the first
    `max_clips`) or an iterable of (T, 6) arrays. A std below `min_std` (a constant dimension) is
    raised to it. No frames is a ValueError.
    """
    total = np.zeros(motion_dim)
    total_sq = np.zeros(motion_dim)
    count = 0
    for poses in _iter_poses(source, split, max_clips):
        p = poses.reshape(-1, motion_dim).astype(np.float64)
        p = p[np.isfinite(p).all(1)]
        total += p.sum(0)
        total_sq += (p ** 2).sum(0)
        count += len(p)
    if count == 0:
        raise ValueError(f"motion_normaliser: no poses found (split {split!r})")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return MotionNormaliser(motion_dim).set(mean, np.maximum(std, min_std))


# ---------------------------------------------------------------------------------------------
# official RotateAudio checkpoints
# ---------------------------------------------------------------------------------------------
#: Explicit key map of the official checkpoint: for each entry of the dict, (official key prefix,
#: our key prefix), first match wins. The official modules' inner names are ours too.
MOTION_KEY_MAP: dict[str, tuple[tuple[str, str], ...]] = {
    "encode": (("l.", "encode.l."), ("backend_conv1.", "encode.backend_conv1.")),
    "mid_net": (("conv.", "mid_net.conv."), ("audio_l.", "mid_net.audio_l.")),
    "decode": (("l.", "decode.l."),),
}


def official_motion_shapes(config: HeadMotionConfig | None = None) -> dict[str, Shapes]:
    """Every tensor of an official checkpoint ``{encode, mid_net, decode}`` of the recommended option
    set, ``{entry: {official key: shape}}``, written out from the official module definitions
    (``TemporalConv_no_LSTM``, ``SingleEmb``, ``L2LDecode``) with `config`'s sizes (paper: the
    official constants, e.g. ``mid_net.audio_l.0.weight`` (512, 30528, 3), ``decode.l.weight``
    (1542, 512))."""
    cfg = config or HeadMotionConfig.paper()
    encode: Shapes = {**linear_shapes("l.0", cfg.motion_dim, cfg.motion_hidden), **bn_shapes("l.1", cfg.motion_hidden),
                      **linear_shapes("l.3", cfg.motion_hidden, cfg.motion_embed)}
    cin = cfg.motion_embed + cfg.audio_dim
    for i in range(cfg.encoder_layers):
        encode.update(conv_shapes(f"backend_conv1.{4 * i}", cin, cfg.encoder_channels, (cfg.encoder_kernel,), True))
        encode.update(bn_shapes(f"backend_conv1.{4 * i + 1}", cfg.encoder_channels))
        cin = cfg.encoder_channels
    mid: Shapes = {}
    cin = 1
    for i, width in enumerate(cfg.audio_conv):
        mid.update(conv_shapes(f"conv.{2 * i}", cin, width, 3, True))
        cin = width
    mid.update(conv_shapes("audio_l.0", cfg.audio_flat, cfg.audio_hidden, (cfg.audio_kernel,), True))
    mid.update(bn_shapes("audio_l.1", cfg.audio_hidden))
    mid.update(conv_shapes("audio_l.4", cfg.audio_hidden, cfg.audio_dim, (cfg.audio_kernel,), True))
    mid.update(bn_shapes("audio_l.5", cfg.audio_dim))
    decode = linear_shapes("l", cfg.encoder_channels, cfg.decode_out)
    return {"encode": encode, "mid_net": mid, "decode": decode}


def motion_keymap(name: str = "RotateAudio checkpoint") -> KeyMap:
    """`MOTION_KEY_MAP` as a `talkinghead.nn.official.KeyMap` whose messages name `name` (the file)
    and the entry; our ``normaliser`` buffers are filled by no official tensor (the official code
    keeps the statistics in its dataset)."""
    return KeyMap("Rhythmic Head RotateAudio", {c: f"{name} [{c!r}]" for c in MOTION_COMPONENTS}, MOTION_KEY_MAP,
                  unfilled=("normaliser.",))


def official_motion_state_dict(model: HeadMotionLearner) -> dict[str, dict[str, torch.Tensor]]:
    """Our learner's weights in the official checkpoint layout ``{encode, mid_net, decode}`` (the
    inverse of the key map; the normaliser, which the official code keeps in its dataset, is left out)."""
    state = model.state_dict()
    out: dict[str, dict[str, torch.Tensor]] = {c: {} for c in MOTION_COMPONENTS}
    for component, rules in MOTION_KEY_MAP.items():
        for official, ours in rules:
            for key, value in state.items():
                if key.startswith(ours):
                    out[component][official + key[len(ours):]] = value.clone()
    return out


def load_official_motion(path: str | Path, config: HeadMotionConfig | None = None,
                         official_normaliser: bool = True) -> HeadMotionLearner:
    """A `HeadMotionLearner` with the weights of an official RotateAudio checkpoint, in eval mode.

    path: a ``torch.save({'encode': ..., 'mid_net': ..., 'decode': ...})`` file of the recommended
    options (``tc_no_lstm`` / ``se`` / ``l2l``), read with ``weights_only=True``; a ``module.`` prefix
    is removed. config: the sizes (default paper). A missing file is a FileNotFoundError, an
    unreadable one, a missing entry, a key outside `MOTION_KEY_MAP`, a tensor of the wrong shape
    (e.g. another option set) or a missing tensor a ValueError, all naming the file.
    With `official_normaliser` the normaliser is set to `OFFICIAL_RT_MEAN` / `OFFICIAL_RT_STD`
    (the official RT units, not our store's pose units: see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (an official RotateAudio checkpoint, "
                                f"torch.save({{'encode', 'mid_net', 'decode'}}))")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - corrupt / foreign files: say which one
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path}: not an official RotateAudio checkpoint (a {type(ckpt).__name__}, expected a dict "
                         f"with {list(MOTION_COMPONENTS)})")
    missing = [c for c in MOTION_COMPONENTS if c not in ckpt]
    if missing:
        raise ValueError(f"{path}: not an official RotateAudio checkpoint: no {missing} entries (has "
                         f"{sorted(map(str, ckpt))[:8]})")
    states = {c: check_state_dict(ckpt[c], f"{path} [{c!r}]") for c in MOTION_COMPONENTS}
    model = HeadMotionLearner(config or HeadMotionConfig.paper())
    motion_keymap(str(path)).load_into(model, states, hint=" (the recommended tc_no_lstm / se / l2l options at "
                                                     "the config's sizes)")
    if official_normaliser:
        model.normaliser.set(OFFICIAL_RT_MEAN, OFFICIAL_RT_STD)
    return model.eval()


def lr_factor(config: HeadMotionConfig, epoch: int) -> float:
    """The official ``AdjustLR`` multiplier of epoch `epoch` (0-based): 1 for the first
    ``lr_constant_epochs``, then 0.5 ** ((epoch - lr_constant_epochs + 1) / lr_half_life)."""
    if epoch < config.lr_constant_epochs:
        return 1.0
    return math.pow(0.5, (epoch - config.lr_constant_epochs + 1) / config.lr_half_life)
