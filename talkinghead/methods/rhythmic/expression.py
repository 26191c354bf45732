"""The facial expression learner Psi of Rhythmic Head (Chen et al., ECCV 2020, Sec. 3.2), its loss and data.

Never released officially (the official demo reads precomputed ATVGnet landmarks in a PCA space);
built from the paper:

* Input: the driving audio and a subject-specific image y_tM, the most frontal reference frame
  (minimum head rotation, `most_frontal_index`; Sec. 4.1), "from which we extract the landmark
  identity feature p_tM". Output: "PCA components p_tau+1:T that convey the facial expression".
* "At time step t, we encode audio clip x_t-3:t+4 (0.04 x 7 s) into an audio feature vector,
  concatenate it with the encoded reference landmark feature, and then decode the fused feature
  into PCA components of target expression p_t."
* "During inference, we add the identity feature p_tM back to the resultant facial expressions."
* "During training, we mix x_tau+1:T with a randomly selected noise file in 6 to 30 dB SNRs with
  3 dB increments" (`mix_noise`, `NoiseMixer`, `SNR_LEVELS`).
* Landmarks live in the head-motion-free (frontal) space: p_t = R_t l_t + T_t aligns frame t's
  landmarks to the canonical 3D landmarks, so "p_t only carries the facial expressions" (Sec. 3.3).

What the paper cites and what we build. Psi follows ATVGnet's AT-net (Chen et al., CVPR 2019, the
paper's [7], lelechen63/ATVGnet ``code/models.py``): a landmark encoder of the example landmarks'
PCA coefficients (Linear 6->256->512, ReLU), an audio encoder of 0.28 s MFCC windows (28 x 12: 2-D
conv blocks with BatchNorm + ReLU and max pooling, fc 12288->2048->256), the two features
concatenated per time step into a 3-layer LSTM (256) and a Linear to 6 PCA coefficients; trained
with MSE on the PCA coefficients (Adam 2e-4, betas (0.5, 0.999)); its outputs are absolute
coefficients, decoded as coef @ U^T + mean, the example landmarks being an input only (``demo.py``,
which also multiplies coefficients 1..5 by ad-hoc gains). We build the same layout
(`ExpressionLearner`: ``lmark_encoder``, ``audio_encoder`` + ``audio_fc``, ``lstm``, ``lstm_fc``)
with these differences:

* audio: the project's PC-AVS log-mel (80 bins, 100 frames/s, `talkinghead.data.audio`), a window
  of 7 video frames = 28 mel frames per frame (`expression_mel_windows`, (1, 80, 28)), instead of
  12 MFCCs; the conv stack downsamples with strides (no max pooling), sized by the config.
* landmarks: frontalised dlib-68 landmarks from the store (`frontalise_landmarks`: each frame's
  store pose undone against the 3D template), instead of ATVGnet's 2D-normalised landmarks; the PCA
  (`LandmarkPCA`, 6 components as ATVGnet's ``U_lrw1[:, :6]``) is fitted on the training store's
  frontalised landmarks and kept as buffers, so it travels with the checkpoint.
* target: the expression relative to the identity, p_t - p_tM (coefficients of the frontal
  landmarks minus those of the most frontal reference frame), as the paper's "we add the identity
  feature p_tM back" implies (ATVGnet predicts absolute coefficients instead); at inference the
  identity is added back in landmark space, frontal_tM + PCA^-1(p_t - p_tM)
  (`ExpressionLearner.predict_landmarks`): the same as adding p_tM in PCA space except that the
  identity keeps the detail outside the truncated basis. ATVGnet's test-time gains are not applied.
* the decoder can be the ATVGnet LSTM (paper preset) or a per-frame MLP (``lstm_layers`` 0, the
  paper's text "at time step t ... decode" read literally).
* noise: the paper mixes noise *files*; none ships with the project, so `NoiseMixer` takes any
  bank of noise waveforms and falls back to white Gaussian noise.
* loss: the paper states none for Psi; `expression_losses` is AT-net's MSE on the PCA coefficients,
  with an optional landmark-space term (mean point distance in canonical units, weight 0 by default).

Frontalisation. The store pose is a weak-perspective fit (`talkinghead.data.faces.estimate_head_pose`):
x = s (R P)_xy + (tx, ty), s = 50 exp(tz) px. With 2D landmarks only, the depth of each point is
taken from the template: P = (u, v, z_template), so (u, v) = A^-1 ((x - t) / s - r z_template),
A = R[:2, :2], r = R[:2, 2]; det A = R[2, 2] = cos(yaw) cos(pitch) (poses beyond ~87 degrees are
rejected). `pose_landmarks` is the exact inverse (`faces.project` of (u, v, z_template)).
Canonical units: the template's, inter-ocular distance 1, centred between eyes and mouth, y down.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.data import faces
from talkinghead.data.audio import FRAMES_PER_VIDEO_FRAME, MEL_BINS, mel_spectrogram, mel_windows
from talkinghead.nn.config import ConfigDict

__all__ = [
    "NUM_LANDMARKS",
    "SNR_LEVELS",
    "ExpressionConfig",
    "ExpressionLearner",
    "LandmarkPCA",
    "NoiseMixer",
    "expression_losses",
    "expression_mel_windows",
    "expression_targets",
    "fit_landmark_pca",
    "frontalise_landmarks",
    "frontalise_store_clip",
    "mix_noise",
    "most_frontal_index",
    "noisy_mel",
    "pose_landmarks",
]

NUM_LANDMARKS = 68
#: The paper's training SNRs: 6 to 30 dB in 3 dB steps.
SNR_LEVELS = tuple(float(v) for v in range(6, 31, 3))
#: Frontalisation refuses frames whose |R[2, 2]| (cos yaw cos pitch) is below this (~87 degrees).
MIN_FRONTAL_DET = 0.05


# ---------------------------------------------------------------------------------------------
# frontal landmarks
# ---------------------------------------------------------------------------------------------
def _rotations(pose: np.ndarray) -> np.ndarray:
    return np.stack([faces.rotation_matrix(p[:3]) for p in pose]) if len(pose) else np.zeros((0, 3, 3))


def frontalise_landmarks(landmarks: np.ndarray, pose: np.ndarray, template: np.ndarray | None = None,
                         reference_scale: float = faces.POSE_REFERENCE_IOD) -> np.ndarray:
    """Undo each frame's head pose: landmarks (T, 68, 2) px in the aligned image and their store
    poses (T, 6) -> frontal landmarks (T, 68, 2) float32 in canonical template units (inter-ocular
    distance 1; a neutral face matches ``template[:, :2]``). Each point keeps the template's depth
    (see the module docstring). A single frame (68, 2) / (6,) is accepted. A frame turned so far
    that |R[2, 2]| < `MIN_FRONTAL_DET` is a ValueError naming it."""
    lm = np.asarray(landmarks, dtype=np.float64)
    pose = np.asarray(pose, dtype=np.float64)
    single = lm.ndim == 2
    if single:
        lm, pose = lm[None], pose[None]
    if lm.shape[1:] != (NUM_LANDMARKS, 2) or pose.shape != (len(lm), 6):
        raise ValueError(f"frontalise_landmarks expects (T, 68, 2) landmarks and (T, 6) poses, got "
                         f"{lm.shape} and {pose.shape}")
    tmpl = np.asarray(faces.face_template() if template is None else template, dtype=np.float64)
    rot = _rotations(pose)
    det = rot[:, 2, 2]
    bad = np.flatnonzero(np.abs(det) < MIN_FRONTAL_DET)
    if bad.size:
        raise ValueError(f"frontalise_landmarks: frames {bad[:10].tolist()} are turned too far to frontalise "
                         f"(|cos yaw cos pitch| < {MIN_FRONTAL_DET})")
    scale = reference_scale * np.exp(pose[:, 5])
    q = (lm - pose[:, None, 3:5]) / scale[:, None, None]  # (T, 68, 2) = A (u, v) + r z
    q = q - rot[:, None, :2, 2] * tmpl[None, :, 2:3]
    uv = np.linalg.solve(rot[:, None, :2, :2], q[..., None])[..., 0]
    out = uv.astype(np.float32)
    return out[0] if single else out


def pose_landmarks(frontal: np.ndarray, pose: np.ndarray, template: np.ndarray | None = None,
                   reference_scale: float = faces.POSE_REFERENCE_IOD) -> np.ndarray:
    """Inverse of `frontalise_landmarks`: frontal landmarks (T, 68, 2) (canonical units) and poses
    (T, 6) -> image landmarks (T, 68, 2) float32 px, by `faces.project` of (u, v, template depth).
    A single frame (68, 2) / (6,) is accepted; one frontal set with T poses is broadcast."""
    fr = np.asarray(frontal, dtype=np.float64)
    pose = np.asarray(pose, dtype=np.float64)
    single = fr.ndim == 2 and pose.ndim == 1
    if pose.ndim == 1:
        pose = pose[None]
    if fr.ndim == 2:
        fr = np.broadcast_to(fr, (len(pose), *fr.shape))
    if fr.shape[1:] != (NUM_LANDMARKS, 2) or len(fr) != len(pose) or pose.shape[1] != 6:
        raise ValueError(f"pose_landmarks expects (T, 68, 2) frontal landmarks and (T, 6) poses, got "
                         f"{fr.shape} and {pose.shape}")
    tmpl = np.asarray(faces.face_template() if template is None else template, dtype=np.float64)
    out = np.stack([faces.project(np.column_stack([f, tmpl[:, 2]]), p, reference_scale) for f, p in zip(fr, pose)])
    out = out.astype(np.float32)
    return out[0] if single else out


def most_frontal_index(poses) -> int:
    """Index of the frame with the smallest head rotation (norm of the rotation vector, poses[:, :3];
    the paper's t_M with R_tM -> 0). poses: (T, 6) numpy or torch; non-finite rows are skipped."""
    p = poses.detach().cpu().numpy() if isinstance(poses, torch.Tensor) else np.asarray(poses)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 3:
        raise ValueError(f"most_frontal_index expects (T, 6) poses with T >= 1, got {p.shape}")
    angle = np.linalg.norm(p[:, :3].astype(np.float64), axis=1)
    angle[~np.isfinite(angle)] = np.inf
    return int(np.argmin(angle))


def frontalise_store_clip(source, entry) -> tuple[np.ndarray, np.ndarray]:
    """(frontal landmarks (T, 68, 2), poses (T, 6)) of one clip of a `ClipStore` / `ShardSource`."""
    arrays = source.load(entry, ["landmarks", "pose"])
    return frontalise_landmarks(arrays["landmarks"], arrays["pose"]), np.asarray(arrays["pose"], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# PCA of frontal landmarks
# ---------------------------------------------------------------------------------------------
class LandmarkPCA(nn.Module):
    """PCA of frontal landmarks: buffers ``mean`` (136,), ``components`` (K, 136) (orthonormal rows,
    by decreasing variance), ``variance`` (K,) and ``fitted``; all travel in checkpoints.

    transform: (..., 68, 2) or (..., 136) -> coefficients (..., K) = (x - mean) @ components^T.
    inverse:   (..., K) -> (..., 68, 2) = coef @ components + mean.
    delta:     (..., K) -> (..., 68, 2) = coef @ components (a displacement, no mean).
    """

    def __init__(self, n_components: int = 6, num_points: int = NUM_LANDMARKS):
        super().__init__()
        dim = 2 * num_points
        if not 1 <= n_components <= dim:
            raise ValueError(f"n_components must be in [1, {dim}], got {n_components}")
        self.n_components, self.num_points = int(n_components), int(num_points)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.eye(dim)[:n_components].clone())
        self.register_buffer("variance", torch.zeros(n_components))
        self.register_buffer("fitted", torch.tensor(False))

    def _flat(self, x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=self.mean.dtype, device=self.mean.device) \
            if not isinstance(x, torch.Tensor) else x.to(self.mean)
        if x.shape[-2:] == (self.num_points, 2):
            return x.reshape(*x.shape[:-2], 2 * self.num_points)
        if x.shape[-1] != 2 * self.num_points:
            raise ValueError(f"expected (..., {self.num_points}, 2) or (..., {2 * self.num_points}) landmarks, got "
                             f"{tuple(x.shape)}")
        return x

    @torch.no_grad()
    def fit(self, landmarks) -> "LandmarkPCA":
        """Fit on N frontal landmark sets (N, 68, 2) or (N, 136) (float64 SVD of the centred data).
        K must not exceed min(N, 136); K = min(N - 1, 136) reconstructs the data exactly."""
        x = self._flat(landmarks).reshape(-1, 2 * self.num_points).double()
        x = x[torch.isfinite(x).all(1)]
        n = x.shape[0]
        if n < 2 or self.n_components > min(n, x.shape[1]):
            raise ValueError(f"LandmarkPCA.fit: {n} samples cannot give {self.n_components} components")
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        comps = vh[:self.n_components]
        # a deterministic sign: the largest-magnitude entry of each component is positive
        sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        comps = comps * torch.where(sign == 0, torch.ones_like(sign), sign)
        self.mean.copy_(mean)
        self.components.copy_(comps)
        self.variance.copy_(s[:self.n_components] ** 2 / (n - 1))
        self.fitted.fill_(True)
        return self

    def transform(self, landmarks) -> torch.Tensor:
        return (self._flat(landmarks) - self.mean) @ self.components.t()

    def delta(self, coefficients: torch.Tensor) -> torch.Tensor:
        out = coefficients.to(self.components) @ self.components
        return out.reshape(*out.shape[:-1], self.num_points, 2)

    def inverse(self, coefficients: torch.Tensor) -> torch.Tensor:
        out = coefficients.to(self.components) @ self.components + self.mean
        return out.reshape(*out.shape[:-1], self.num_points, 2)

    def reconstruction_error(self, landmarks) -> torch.Tensor:
        """Mean point distance (canonical units) between landmarks and their projection on the basis."""
        x = self._flat(landmarks)
        rec = self.inverse(self.transform(x)).reshape(x.shape)
        return (rec - x).reshape(*x.shape[:-1], self.num_points, 2).norm(dim=-1).mean()

    def forward(self, landmarks) -> torch.Tensor:
        return self.transform(landmarks)


def fit_landmark_pca(source, n_components: int = 6, split: str | None = "train", max_clips: int | None = None,
                     stride: int = 1) -> LandmarkPCA:
    """A `LandmarkPCA` fitted on frontalised landmarks: `source` a clip store (its `split` clips,
    first `max_clips`, every `stride`-th frame, frontalised with their store poses) or an iterable of
    frontal (T, 68, 2) arrays. Frames the detector did not find (``landmarks_found`` False) are
    left out when the store has that flag."""
    chunks = []
    if hasattr(source, "clips") and hasattr(source, "load"):
        entries = source.clips(split)
        for entry in entries[:max_clips] if max_clips is not None else entries:
            frontal, _ = frontalise_store_clip(source, entry)
            if source.has(entry, "landmarks_found"):
                frontal = frontal[np.asarray(source.load(entry, ["landmarks_found"])["landmarks_found"], bool)]
            chunks.append(frontal[::stride])
    else:
        chunks = [np.asarray(f)[::stride] for f in source]
    if not chunks:
        raise ValueError(f"fit_landmark_pca: no landmarks found (split {split!r})")
    return LandmarkPCA(n_components).fit(np.concatenate(chunks, 0))


# ---------------------------------------------------------------------------------------------
# audio: windows and noise
# ---------------------------------------------------------------------------------------------
def expression_mel_windows(mel: torch.Tensor, num_frames: int, context: int = 7) -> torch.Tensor:
    """Per-video-frame mel windows for Psi: mel (80, M) or (B, 80, M) (`mel_spectrogram`, 100
    frames/s) -> (num_frames, 1, 80, 4 * context) or (B, num_frames, 1, 80, 4 * context).

    Frame t's window covers video frames t - context // 2 .. t + context // 2, i.e. mel frames
    (t - 3) * 4 .. (t + 4) * 4 - 1 for context 7 (0.28 s, the paper's x_t-3:t+4); out-of-range mel
    frames repeat the edge: `talkinghead.data.audio.mel_windows` with this context."""
    return mel_windows(mel, num_frames, context)


def _power(x: torch.Tensor) -> torch.Tensor:
    return x.double().pow(2).mean(-1)


def mix_noise(wav, snr_db, noise=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """`wav` plus noise scaled to the requested SNR: 10 log10(P_wav / P_noise) = `snr_db` (P = mean
    square over the whole row).

    wav: (N,) or (B, N) float (numpy or torch); snr_db: a number or (B,); noise: a waveform (M,) or
    (B, M), tiled when shorter and cut at a random offset (`generator`) when longer; None = white
    Gaussian noise from `generator`. A silent row (or silent noise) is returned unchanged. Returns a
    float tensor of wav's shape.
    """
    x = wav if isinstance(wav, torch.Tensor) else torch.as_tensor(np.asarray(wav))
    x = x.float() if not x.is_floating_point() else x
    squeeze = x.dim() == 1
    if squeeze:
        x = x.unsqueeze(0)
    b, n = x.shape
    if noise is None:
        nz = torch.randn(b, n, generator=generator, dtype=torch.float64).to(x.device)
    else:
        nz = noise if isinstance(noise, torch.Tensor) else torch.as_tensor(np.asarray(noise))
        nz = nz.to(device=x.device, dtype=torch.float64)
        if nz.dim() == 1:
            nz = nz.unsqueeze(0).expand(b, -1)
        if nz.shape[0] != b or nz.shape[1] == 0:
            raise ValueError(f"noise {tuple(nz.shape)} does not fit audio {tuple(x.shape)}")
        if nz.shape[1] < n:
            nz = nz.repeat(1, math.ceil(n / nz.shape[1]))
        if nz.shape[1] > n:
            offset = int(torch.randint(0, nz.shape[1] - n + 1, (1,), generator=generator))
            nz = nz[:, offset:offset + n]
    snr = torch.as_tensor(snr_db, dtype=torch.float64, device=x.device).reshape(-1).expand(b)
    p_sig, p_noise = _power(x), _power(nz)
    gain = torch.where((p_sig > 0) & (p_noise > 0),
                       torch.sqrt(p_sig / (p_noise.clamp_min(1e-30) * 10.0 ** (snr / 10.0))),
                       torch.zeros_like(p_sig))
    out = (x.double() + gain[:, None] * nz).to(x.dtype)
    return out[0] if squeeze else out


class NoiseMixer:
    """Training-time noise augmentation (paper: a random noise file at 6-30 dB SNR, 3 dB steps).

    snr_levels: the SNRs drawn uniformly (default `SNR_LEVELS`); noises: a bank of noise waveforms
    (16 kHz, any lengths), one drawn per row; empty = white Gaussian noise; probability: chance that
    a row is mixed at all (paper: always, 1.0); seed: an own random stream; None: torch's global
    stream (what a trainer checkpoints and restores, so a resumed run mixes the same noise).
    ``mixer(wav)`` with wav (N,) or (B, N) -> (noisy wav, snr_db (B,) with NaN for unmixed rows).
    """

    def __init__(self, snr_levels: Sequence[float] = SNR_LEVELS, noises: Iterable = (), probability: float = 1.0,
                 seed: int | None = None):
        self.snr_levels = torch.as_tensor(list(snr_levels), dtype=torch.float64)
        if self.snr_levels.numel() == 0:
            raise ValueError("NoiseMixer needs at least one SNR level")
        self.noises = [torch.as_tensor(np.asarray(n), dtype=torch.float32).reshape(-1) for n in noises]
        if any(n.numel() == 0 for n in self.noises):
            raise ValueError("NoiseMixer: an empty noise waveform")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        self.probability = float(probability)
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator()
            self.generator.manual_seed(int(seed))

    def sample_snr(self, count: int) -> torch.Tensor:
        """`count` SNRs (dB) drawn uniformly from the levels."""
        idx = torch.randint(0, self.snr_levels.numel(), (count,), generator=self.generator)
        return self.snr_levels[idx]

    def __call__(self, wav) -> tuple[torch.Tensor, torch.Tensor]:
        x = wav if isinstance(wav, torch.Tensor) else torch.as_tensor(np.asarray(wav), dtype=torch.float32)
        squeeze = x.dim() == 1
        if squeeze:
            x = x.unsqueeze(0)
        snr = self.sample_snr(x.shape[0])
        mixed = torch.rand(x.shape[0], generator=self.generator) < self.probability
        if not self.noises:  # white noise: the mixed rows in one call
            out = x.clone()
            if bool(mixed.any()):
                out[mixed] = mix_noise(x[mixed], snr[mixed].to(x.device), generator=self.generator)
        else:
            rows = []
            for i in range(x.shape[0]):
                if not mixed[i]:
                    rows.append(x[i])
                    continue
                noise = self.noises[int(torch.randint(0, len(self.noises), (1,), generator=self.generator))]
                rows.append(mix_noise(x[i], snr[i], noise, generator=self.generator))
            out = torch.stack(rows)
        snr = torch.where(mixed, snr, torch.full_like(snr, float("nan")))
        return (out[0], snr) if squeeze else (out, snr)


def noisy_mel(wav, num_frames: int, mixer: NoiseMixer | None = None, context: int = 7) -> torch.Tensor:
    """Psi's audio input from raw audio: optional noise (`mixer`), `mel_spectrogram` (RMS-normalised
    as everywhere in the project), `expression_mel_windows`. wav (N,) or (B, N) in [-1, 1] ->
    (num_frames, 1, 80, 4 * context) or (B, num_frames, 1, 80, 4 * context)."""
    x = wav if isinstance(wav, torch.Tensor) else torch.as_tensor(np.asarray(wav), dtype=torch.float32)
    if mixer is not None:
        x, _ = mixer(x)
    return expression_mel_windows(mel_spectrogram(x), num_frames, context)


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpressionConfig(ConfigDict):
    """Sizes and training settings of Psi. `paper()`: ATVGnet AT-net widths on mel windows (see the
    module docstring; the paper gives no sizes); `tiny()`: a CPU-trainable one.

    n_components:     PCA coefficients (6, as ATVGnet).
    context:          video frames per audio window (7 = 0.28 s = 28 mel frames).
    audio_channels / audio_strides: the 3x3 conv blocks (Conv, BatchNorm, ReLU) of the audio encoder
                      on (1, 80, 28) mel windows, strides as (mel, time).
    audio_fc:         hidden widths of the fc after the flattened conv map (ATVGnet 2048).
    audio_dim:        audio feature per frame (256).
    lmark_hidden / lmark_dim: the landmark encoder on the identity coefficients (256 / 512, ReLU).
    lstm_layers / lstm_hidden: the decoder LSTM (3 x 256, ATVGnet); lstm_layers 0 = a per-frame MLP
                      with one hidden layer of lstm_hidden.
    snr_levels / noise_probability: training noise (6..30 dB step 3, always).
    landmark_weight:  weight of the landmark-space term of `expression_losses` (0).
    lr / betas:       Adam (ATVGnet and the paper: 2e-4, (0.5, 0.999)).
    """

    n_components: int = 6
    context: int = 7
    audio_channels: tuple[int, ...] = (64, 128, 256, 256, 512)
    audio_strides: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (2, 2), (2, 1), (2, 2))
    audio_fc: tuple[int, ...] = (2048,)
    audio_dim: int = 256
    lmark_hidden: int = 256
    lmark_dim: int = 512
    lstm_layers: int = 3
    lstm_hidden: int = 256
    snr_levels: tuple[float, ...] = SNR_LEVELS
    noise_probability: float = 1.0
    landmark_weight: float = 0.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)

    def __post_init__(self) -> None:
        object.__setattr__(self, "audio_channels", tuple(int(c) for c in self.audio_channels))
        object.__setattr__(self, "audio_strides", tuple(tuple(int(v) for v in s) for s in self.audio_strides))
        object.__setattr__(self, "audio_fc", tuple(int(c) for c in self.audio_fc))
        object.__setattr__(self, "snr_levels", tuple(float(v) for v in self.snr_levels))
        object.__setattr__(self, "betas", tuple(float(v) for v in self.betas))
        self.validate()

    @property
    def window(self) -> int:
        """Mel frames per audio window (4 * context = 28)."""
        return FRAMES_PER_VIDEO_FRAME * self.context

    @property
    def audio_map(self) -> tuple[int, int]:
        """(mel, time) size of the audio encoder's last map (paper (5, 7))."""
        h, w = MEL_BINS, self.window
        for sh, sw in self.audio_strides:
            h, w = (h - 1) // sh + 1, (w - 1) // sw + 1
        return h, w

    def validate(self) -> None:
        problems = []
        if self.n_components < 1 or self.n_components > 2 * NUM_LANDMARKS:
            problems.append(f"n_components must be in [1, {2 * NUM_LANDMARKS}], got {self.n_components}")
        if self.context < 1 or self.context % 2 == 0:
            problems.append(f"context must be odd, got {self.context}")
        if not self.audio_channels or len(self.audio_channels) != len(self.audio_strides):
            problems.append(f"audio_channels {self.audio_channels} and audio_strides {self.audio_strides} must be "
                            "non-empty and of one length")
        if any(len(s) != 2 or min(s) < 1 for s in self.audio_strides):
            problems.append(f"audio_strides must be (mel, time) pairs >= 1, got {self.audio_strides}")
        if self.lstm_layers < 0 or self.lstm_hidden < 1:
            problems.append("lstm_layers must be >= 0 and lstm_hidden >= 1")
        if not self.snr_levels:
            problems.append("snr_levels must not be empty")
        if not 0.0 <= self.noise_probability <= 1.0:
            problems.append(f"noise_probability must be in [0, 1], got {self.noise_probability}")
        if self.landmark_weight < 0:
            problems.append(f"landmark_weight must be >= 0, got {self.landmark_weight}")
        if problems:
            raise ValueError("inconsistent expression config: " + "; ".join(problems))

    @classmethod
    def paper(cls, **overrides: Any) -> "ExpressionConfig":
        return replace(cls(), **overrides) if overrides else cls()

    @classmethod
    def tiny(cls, **overrides: Any) -> "ExpressionConfig":
        """Narrow widths, one LSTM layer of 32; same input windows and PCA size."""
        cfg = cls(audio_channels=(8, 16, 16, 32), audio_strides=((2, 1), (2, 2), (2, 2), (2, 2)), audio_fc=(),
                  audio_dim=32, lmark_hidden=32, lmark_dim=32, lstm_layers=1, lstm_hidden=32)
        return replace(cfg, **overrides) if overrides else cfg

    def noise_mixer(self, noises: Iterable = (), seed: int | None = None) -> NoiseMixer:
        """The training `NoiseMixer` of this config."""
        return NoiseMixer(self.snr_levels, noises, self.noise_probability, seed)


class ExpressionLearner(nn.Module):
    """Psi: mel windows (B, T, 1, 80, 28) + identity coefficients p_tM (B, K) -> expression
    coefficients relative to the identity, p_t - p_tM (B, T, K). Holds the `LandmarkPCA` (``pca``,
    buffers; fit it with `fit_landmark_pca` and copy it in with `set_pca`).

    ``audio_encoder`` (conv blocks) + ``audio_fc`` -> (B, T, audio_dim); ``lmark_encoder`` -> (B,
    lmark_dim), repeated over T; concatenated -> ``lstm`` (or ``mlp`` when ``lstm_layers`` is 0) ->
    ``lstm_fc`` -> K.
    """

    def __init__(self, config: ExpressionConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = ExpressionConfig.paper()
        elif isinstance(config, dict):
            config = ExpressionConfig.from_dict(config)
        self.config = config
        k = config.n_components
        self.pca = LandmarkPCA(k)
        self.lmark_encoder = nn.Sequential(nn.Linear(k, config.lmark_hidden), nn.ReLU(inplace=True),
                                           nn.Linear(config.lmark_hidden, config.lmark_dim), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = 1
        for cout, stride in zip(config.audio_channels, config.audio_strides):
            blocks += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.audio_encoder = nn.Sequential(*blocks)
        fc: list[nn.Module] = []
        fin = cin * config.audio_map[0] * config.audio_map[1]
        for width in config.audio_fc + (config.audio_dim,):
            fc += [nn.Linear(fin, width), nn.ReLU(inplace=True)]
            fin = width
        self.audio_fc = nn.Sequential(*fc)
        fused = config.audio_dim + config.lmark_dim
        if config.lstm_layers:
            self.lstm = nn.LSTM(fused, config.lstm_hidden, config.lstm_layers, batch_first=True)
        else:
            self.mlp = nn.Sequential(nn.Linear(fused, config.lstm_hidden), nn.ReLU(inplace=True))
        self.lstm_fc = nn.Linear(config.lstm_hidden, k)

    def set_pca(self, pca: LandmarkPCA) -> "ExpressionLearner":
        if pca.n_components != self.config.n_components:
            raise ValueError(f"PCA has {pca.n_components} components, the config {self.config.n_components}")
        self.pca.load_state_dict(pca.state_dict())
        return self

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, 1, 80, W) -> (B, T, audio_dim)."""
        cfg = self.config
        if mel.dim() != 5 or tuple(mel.shape[2:]) != (1, MEL_BINS, cfg.window):
            raise ValueError(f"mel windows must be (B, T, 1, {MEL_BINS}, {cfg.window}), got {tuple(mel.shape)}")
        b, t = mel.shape[:2]
        feat = self.audio_encoder(mel.reshape(b * t, 1, MEL_BINS, cfg.window))
        return self.audio_fc(feat.flatten(1)).reshape(b, t, -1)

    def forward(self, mel: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """mel (B, T, 1, 80, 28) windows (`expression_mel_windows`), identity (B, K) PCA coefficients of
        the most frontal reference frame's frontal landmarks -> (B, T, K) expression coefficients
        relative to the identity (the training target of `expression_targets`)."""
        audio = self.encode_audio(mel)
        ident = self.lmark_encoder(identity).unsqueeze(1).expand(-1, audio.shape[1], -1)
        fused = torch.cat([audio, ident], dim=-1)
        out = self.lstm(fused)[0] if self.config.lstm_layers else self.mlp(fused)
        return self.lstm_fc(out)

    def predict_landmarks(self, mel: torch.Tensor, identity_landmarks: torch.Tensor) -> torch.Tensor:
        """Inference: mel (B, T, 1, 80, 28), the frontal landmarks of the most frontal reference frame
        (B, 68, 2) (canonical units) -> frontal landmarks (B, T, 68, 2) = identity + PCA^-1 of the
        predicted expression (the identity added back). `pose_landmarks` puts them in the image."""
        coef = self(mel, self.pca.transform(identity_landmarks))
        return identity_landmarks.unsqueeze(1) + self.pca.delta(coef)


def expression_targets(frontal: torch.Tensor, reference_index, pca: LandmarkPCA
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs: frontal landmarks (B, T, 68, 2) or (T, 68, 2) and the index (per batch row)
    of the identity frame (`most_frontal_index` of the reference poses; it may lie outside the
    predicted window) -> (identity coefficients (B, K), target p_t - p_tM (B, T, K))."""
    squeeze = frontal.dim() == 3
    if squeeze:
        frontal = frontal.unsqueeze(0)
    coef = pca.transform(frontal)  # (B, T, K)
    idx = torch.as_tensor(reference_index, device=coef.device).reshape(-1).expand(coef.shape[0])
    identity = coef[torch.arange(coef.shape[0], device=coef.device), idx]
    target = coef - identity.unsqueeze(1)
    return (identity[0], target[0]) if squeeze else (identity, target)


def expression_losses(pred: torch.Tensor, target: torch.Tensor, pca: LandmarkPCA | None = None,
                      landmark_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Psi's losses on (B, T, K) coefficients: {"pca": MSE (AT-net's loss), ["landmark": mean point
    distance of the decoded displacements, canonical units; with `pca`], "total" = pca +
    landmark_weight * landmark}."""
    mse = F.mse_loss(pred, target)
    out = {"pca": mse}
    total = mse
    if pca is not None:
        dist = (pca.delta(pred) - pca.delta(target)).norm(dim=-1).mean()
        out["landmark"] = dist
        if landmark_weight > 0:
            total = total + landmark_weight * dist
    out["total"] = total
    return out
