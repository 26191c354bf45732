"""Audio I/O and features: the one place in the project for loading audio, mel and MFCC.

* `load_audio` / `probe_audio`: decode anything ffmpeg reads (PyAV) to 16 kHz mono float32.
* `rms_normalize`: PC-AVS waveform normalisation (RMS 0.1, eps floor 1e-4).
* `mel_spectrogram` / `mel_windows`: the lws-style 80-bin log-mel of PC-AVS and PD-FGC
  (checkpoint-compatible), batched torch, on the input's device.
* `mfcc` / `mfcc_windows`: the python_speech_features MFCC that SyncNet (LSE-C/LSE-D) uses.

Time bases at the default rates: 1 video frame (25 fps) = 640 samples = 4 mel or MFCC frames
(hop 160 samples = 10 ms).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import torch

from talkinghead.data.corpora.base import FPS, SAMPLE_RATE
from talkinghead.errors import InputError

__all__ = [
    "load_audio",
    "probe_audio",
    "rms_normalize",
    "mel_spectrogram",
    "mel_windows",
    "num_mel_frames",
    "mfcc",
    "mfcc_windows",
    "num_mfcc_frames",
    "MEL_N_FFT",
    "MEL_HOP",
    "MEL_BINS",
    "MEL_WINDOW",
    "MFCC_WINDOW",
    "FRAMES_PER_VIDEO_FRAME",
]

# ---------------------------------------------------------------------------------------------
# constants
# ---------------------------------------------------------------------------------------------
MEL_N_FFT = 1280            # lws fsize = FFT size (80 ms at 16 kHz)
MEL_HOP = 160               # 10 ms
MEL_PAD = MEL_N_FFT - MEL_HOP  # 1120 zeros before the signal (lws perfectrec)
MEL_BINS = 80
MEL_FMIN = 125.0
MEL_FMAX = 7600.0
MEL_MIN_LEVEL_DB = -100.0
MEL_REF_LEVEL_DB = 20.0
MEL_WINDOW = 20             # mel frames per video-frame window (0.2 s)
FRAMES_PER_VIDEO_FRAME = SAMPLE_RATE // MEL_HOP // FPS  # 4 mel / MFCC frames per video frame

MFCC_WIN = 400              # 25 ms at 16 kHz
MFCC_STEP = 160             # 10 ms
MFCC_NFFT = 512
MFCC_FILTERS = 26
MFCC_CEPS = 13
MFCC_PREEMPH = 0.97
MFCC_LIFTER = 22
MFCC_WINDOW = 20            # MFCC frames per SyncNet window (0.2 s)
INT16_SCALE = 32768.0

_EPS64 = float(np.finfo(np.float64).eps)  # python_speech_features' log floor (where == 0)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _open(path: Path):
    """Open `path` with PyAV and return (container, first audio stream); InputError otherwise."""
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a readable media file (corrupt or unknown format): {exc}") from exc
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise InputError(path, f"no audio stream (streams: {', '.join(kinds)})")
    return container, container.streams.audio[0]


def probe_audio(path: str | Path) -> dict:
    """Describe the first audio stream of `path` as stored, without resampling.

    Returns dict(sample_rate=int Hz, channels=int, duration=float seconds, codec=str).
    `duration` comes from the stream/container header when present, else from decoding.
    Raises InputError for a missing/unreadable file or one without an audio stream.
    """
    path = Path(path)
    container, stream = _open(path)
    try:
        ctx = stream.codec_context
        sample_rate = int(ctx.sample_rate or 0)
        channels = int(ctx.channels or (ctx.layout.nb_channels if ctx.layout else 0))
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = float(container.duration) / av.time_base
        if duration is None or sample_rate == 0 or channels == 0:
            samples = 0
            try:
                for frame in container.decode(stream):
                    samples += frame.samples
                    sample_rate = sample_rate or int(frame.sample_rate)
                    channels = channels or int(frame.layout.nb_channels)
            except av.FFmpegError as exc:
                raise InputError(path, f"corrupt audio stream: {exc}") from exc
            duration = samples / sample_rate if sample_rate else 0.0
        return dict(sample_rate=sample_rate, channels=channels, duration=duration, codec=ctx.name)
    finally:
        container.close()


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of `path` (mp4, m4a, wav, anything ffmpeg reads).

    Returns float32 (T,) mono in [-1, 1] at `sample_rate` Hz. Channels are averaged
    (like librosa's to_mono; no +3 dB pan law), then resampled with libswresample.
    Raises InputError(path, reason) if the file is missing, not decodable/corrupt,
    has no audio stream, or holds no samples. (A PCM wav cut short decodes to the samples
    present: ffmpeg clamps its header to the file size, so it looks like a shorter file.)
    """
    path = Path(path)
    container, stream = _open(path)
    # Keep the source layout (planar float) so the downmix is a plain channel mean.
    resampler = av.AudioResampler(format="fltp", rate=int(sample_rate))
    chunks: list[np.ndarray] = []

    def take(frames) -> None:
        for out in frames:
            arr = out.to_ndarray()  # (channels, n) float32 planar
            if arr.size:
                chunks.append(arr.reshape(out.layout.nb_channels, -1).mean(axis=0))

    try:
        for frame in container.decode(stream):
            take(resampler.resample(frame))
        take(resampler.resample(None))  # flush the resampler's delay line
    except av.FFmpegError as exc:
        raise InputError(path, f"corrupt audio stream, decoding failed: {exc}") from exc
    except ValueError as exc:  # e.g. the layout/rate changes mid-stream
        raise InputError(path, f"audio stream cannot be decoded: {exc}") from exc
    finally:
        container.close()
    if not chunks:
        raise InputError(path, "audio stream is empty (no samples decoded)")
    wav = np.concatenate(chunks).astype(np.float32, copy=False)
    if wav.size == 0:
        raise InputError(path, "audio stream is empty (no samples decoded)")
    if not np.all(np.isfinite(wav)):
        raise InputError(path, "audio contains NaN/inf samples")
    return np.clip(wav, -1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------
def rms_normalize(wav, target_rms: float = 0.1, eps: float = 1e-4):
    """Scale `wav` so its RMS over the last axis is `target_rms` (PC-AVS `audio_normalize`).

    numpy or torch, (T,) or (..., T). The RMS is floored at `eps`, so silence stays
    (near) silent instead of blowing up. Same type/dtype/device as the input.
    """
    if isinstance(wav, torch.Tensor):
        x = wav if wav.is_floating_point() else wav.float()
        rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(eps)
        return x * (target_rms / rms)
    x = np.asarray(wav)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    rms = np.maximum(eps, np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)))
    return (x * (target_rms / rms)).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# mel (lws STFT, PC-AVS / PD-FGC)
# ---------------------------------------------------------------------------------------------
def num_mel_frames(num_samples: int) -> int:
    """Mel frame count of `mel_spectrogram` for `num_samples` samples: ceil(T/160) + 7.

    Same as lws' rule on the 1120+1120 zero-padded length L: (L-1280)//160 + 1 if
    T % 160 == 0 else + 2.
    """
    length = num_samples + 2 * MEL_PAD
    return (length - MEL_N_FFT) // MEL_HOP + (1 if num_samples % MEL_HOP == 0 else 2)


@lru_cache(maxsize=None)
def _mel_consts_np() -> tuple[np.ndarray, np.ndarray]:
    import librosa

    n = np.arange(MEL_N_FFT, dtype=np.float64)
    hann_sym = 0.5 * (1.0 - np.cos(2.0 * np.pi * (2.0 * n + 1.0) / (2.0 * MEL_N_FFT)))
    window = np.sqrt(hann_sym * 2.0 * MEL_HOP / MEL_N_FFT)
    basis = librosa.filters.mel(
        sr=SAMPLE_RATE, n_fft=MEL_N_FFT, n_mels=MEL_BINS, fmin=MEL_FMIN, fmax=MEL_FMAX, dtype=np.float64
    )
    return window, basis


@lru_cache(maxsize=16)
def _mel_consts(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    window, basis = _mel_consts_np()
    return (
        torch.as_tensor(window, dtype=dtype, device=device),
        torch.as_tensor(basis, dtype=dtype, device=device),
    )


def _as_float_tensor(wav) -> torch.Tensor:
    x = wav if isinstance(wav, torch.Tensor) else torch.as_tensor(np.asarray(wav))
    if not x.is_floating_point():
        x = x.float()
    return x


def _stft_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|lws(1280, 160, mode="speech").stft(x)|, transposed: x (B, T) float -> (B, 641, M)."""
    t = x.shape[-1]
    m = num_mel_frames(t)
    right = (m - 1) * MEL_HOP + MEL_N_FFT - (t + MEL_PAD)
    x = torch.nn.functional.pad(x, (MEL_PAD, right))
    window, _ = _mel_consts(x.device, x.dtype)
    return torch.stft(
        x, n_fft=MEL_N_FFT, hop_length=MEL_HOP, win_length=MEL_N_FFT, window=window,
        center=False, onesided=True, return_complex=True,
    ).abs()


def mel_spectrogram(wav, normalize: bool = True) -> torch.Tensor:
    """lws-style log-mel of a 16 kHz waveform, as PC-AVS / PD-FGC checkpoints expect.

    wav: torch (or numpy) (T,) or (B, T), float in [-1, 1] at 16 kHz. With `normalize`
    (default) each row is first RMS-normalised to 0.1 (`rms_normalize`), as the reference
    pipeline does on the whole clip; pass normalize=False if the caller already did.
    Returns float32 (80, M) or (B, 80, M) in [0, 1] on the input's device,
    M = num_mel_frames(T) = ceil(T/160) + 7; mel frame m covers samples [160m-1120, 160m+160).

    Pipeline (lws(1280, 160, mode="speech").stft, perfectrec): 1120 zeros before, 1120 (+ up
    to 159 to complete a hop) after; 1280-sample frames every 160; analysis window
    sqrt(hann_sym(1280) * 2*160/1280) with hann_sym[i] = 0.5*(1-cos(2*pi*(2i+1)/2560));
    |rfft| (641 bins); 80 Slaney mel filters 125-7600 Hz (librosa); 20*log10(max(1e-5, mel)) - 20;
    clip((S + 100)/100, 0, 1). Computed in float64 for float64 input, float32 otherwise.
    """
    x = _as_float_tensor(wav)
    squeeze = x.dim() == 1
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"mel_spectrogram expects (T,) or (B, T), got {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError("mel_spectrogram: empty signal")
    if x.dtype != torch.float64:
        x = x.float()
    if normalize:
        x = rms_normalize(x)
    spec = _stft_magnitude(x)  # (B, 641, M)
    _, basis = _mel_consts(x.device, x.dtype)
    mel = torch.matmul(basis, spec)  # (B, 80, M)
    min_level = 10.0 ** (MEL_MIN_LEVEL_DB / 20.0)
    s = 20.0 * torch.log10(mel.clamp_min(min_level)) - MEL_REF_LEVEL_DB
    out = ((s - MEL_MIN_LEVEL_DB) / -MEL_MIN_LEVEL_DB).clamp(0.0, 1.0).float()
    return out[0] if squeeze else out


def _edge_windows(feat: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
    """feat (..., C, N); returns (..., F, 1, C, width) with indices clamped to [0, N-1]."""
    n = feat.shape[-1]
    idx = (starts[:, None] + torch.arange(width, device=feat.device)[None, :]).clamp(0, n - 1)
    win = feat[..., idx]  # (..., C, F, width)
    return win.movedim(-2, -3).unsqueeze(-3)  # (..., F, 1, C, width)


def mel_windows(mel: torch.Tensor, num_frames: int, context: int = MEL_WINDOW // FRAMES_PER_VIDEO_FRAME
                ) -> torch.Tensor:
    """Per-video-frame mel windows (PC-AVS / PD-FGC audio input; Rhythmic Head's Psi with context 7).

    mel: (80, M) or (B, 80, M) from `mel_spectrogram`. Window for video frame f (25 fps) covers the
    `context` (odd) video frames centred on f: mel frames (f - context // 2) * 4 ...
    (f - context // 2) * 4 + 4 * context - 1; the default 5 gives (f-2)*4 ... (f-2)*4 + 19 (0.2 s,
    target frame in the middle). Returns (num_frames, 1, 80, 4 * context) or (B, num_frames, 1, 80,
    4 * context). Out-of-range indices (the first frames, and the tail when M is short) are filled by
    edge replication: index i -> clamp(i, 0, M-1). The reference code only uses frames
    2 .. M//4-3, where no padding is needed.
    """
    if mel.dim() not in (2, 3) or mel.shape[-2] != MEL_BINS:
        raise ValueError(f"mel_windows expects (80, M) or (B, 80, M), got {tuple(mel.shape)}")
    if context < 1 or context % 2 == 0:
        raise ValueError(f"mel_windows: context must be odd, got {context}")
    if mel.shape[-1] == 0:
        raise ValueError("mel_windows: empty mel spectrogram")
    f = torch.arange(num_frames, device=mel.device)
    starts = (f - context // 2) * FRAMES_PER_VIDEO_FRAME
    return _edge_windows(mel, starts, context * FRAMES_PER_VIDEO_FRAME)


# ---------------------------------------------------------------------------------------------
# MFCC (python_speech_features defaults, SyncNet)
# ---------------------------------------------------------------------------------------------
def num_mfcc_frames(num_samples: int) -> int:
    """MFCC frame count for `num_samples`: 1 if T <= 400 else 1 + ceil((T - 400)/160)."""
    if num_samples <= MFCC_WIN:
        return 1
    return 1 + math.ceil((num_samples - MFCC_WIN) / MFCC_STEP)


@lru_cache(maxsize=None)
def _mfcc_consts_np() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(filterbank (26, 257), DCT-II ortho (26, 13), lifter (13,)) exactly as psf builds them."""
    hz2mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    mel2hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
    melpoints = np.linspace(hz2mel(0.0), hz2mel(SAMPLE_RATE / 2), MFCC_FILTERS + 2)
    bins = np.floor((MFCC_NFFT + 1) * mel2hz(melpoints) / SAMPLE_RATE)
    fbank = np.zeros((MFCC_FILTERS, MFCC_NFFT // 2 + 1))
    for j in range(MFCC_FILTERS):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    n = np.arange(MFCC_FILTERS)[:, None]
    k = np.arange(MFCC_CEPS)[None, :]
    dct = np.sqrt(2.0 / MFCC_FILTERS) * np.cos(np.pi * k * (2 * n + 1) / (2 * MFCC_FILTERS))
    dct[:, 0] = np.sqrt(1.0 / MFCC_FILTERS)
    lift = 1.0 + (MFCC_LIFTER / 2.0) * np.sin(np.pi * np.arange(MFCC_CEPS) / MFCC_LIFTER)
    return fbank, dct, lift


@lru_cache(maxsize=16)
def _mfcc_consts(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.as_tensor(a, dtype=torch.float64, device=device) for a in _mfcc_consts_np())


def mfcc(wav, scale: float = INT16_SCALE) -> torch.Tensor:
    """13 MFCCs exactly as `python_speech_features.mfcc(signal, 16000)` with all defaults.

    wav: torch or numpy (T,) or (B, T) at 16 kHz. Float input is taken as [-1, 1] and
    multiplied by `scale` (default 32768: the int16 scale SyncNet was trained on; pass
    scale=1.0 if the float input is already int16-scaled). Integer input (e.g. int16) is
    used as is. Returns float32 (N, 13) or (B, N, 13) on the input's device,
    N = num_mfcc_frames(T); frame n covers samples [160n, 160n+400) (zero-padded at the end).
    Column 0 is log frame energy (psf appendEnergy), columns 1-12 are liftered cepstra.
    Computed in float64 (matches psf to ~1e-10 relative).
    Steps: pre-emphasis 0.97 (first sample kept), rectangular 400-sample frames, power
    spectrum |rfft_512|^2 / 512, 26 triangular mel filters 0-8000 Hz, log (exact zeros
    -> float64 eps), DCT-II ortho, lifter 22, c0 := log energy.
    """
    is_int = (
        not wav.is_floating_point() if isinstance(wav, torch.Tensor)
        else not np.issubdtype(np.asarray(wav).dtype, np.floating)
    )
    x = wav if isinstance(wav, torch.Tensor) else torch.as_tensor(np.asarray(wav))
    x = x.to(torch.float64)
    if not is_int:
        x = x * scale
    squeeze = x.dim() == 1
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"mfcc expects (T,) or (B, T), got {tuple(x.shape)}")
    t = x.shape[-1]
    if t == 0:
        raise ValueError("mfcc: empty signal")
    x = torch.cat([x[:, :1], x[:, 1:] - MFCC_PREEMPH * x[:, :-1]], dim=1)
    n = num_mfcc_frames(t)
    x = torch.nn.functional.pad(x, (0, (n - 1) * MFCC_STEP + MFCC_WIN - t))
    frames = x.unfold(-1, MFCC_WIN, MFCC_STEP)  # (B, N, 400)
    pspec = torch.fft.rfft(frames, n=MFCC_NFFT).abs().square() / MFCC_NFFT  # (B, N, 257)
    fbank, dct, lift = _mfcc_consts(x.device)
    energy = pspec.sum(-1)
    energy = torch.where(energy == 0, torch.full_like(energy, _EPS64), energy)
    feat = pspec @ fbank.T
    feat = torch.where(feat == 0, torch.full_like(feat, _EPS64), feat)
    ceps = (feat.log() @ dct) * lift
    ceps[..., 0] = energy.log()
    out = ceps.float()
    return out[0] if squeeze else out


def mfcc_windows(feat: torch.Tensor, num_frames: int, pad: bool = False) -> torch.Tensor:
    """Per-video-frame MFCC windows (SyncNet audio input).

    feat: (N, 13) or (B, N, 13) from `mfcc`. Window for video frame v (25 fps) is MFCC
    frames 4v ... 4v+19 (0.2 s starting at the frame), transposed to (13, 20).
    Returns (num_frames, 1, 13, 20) or (B, num_frames, 1, 13, 20).
    If N < 4*(num_frames-1) + 20 this raises ValueError, unless pad=True, in which case the
    missing tail is zero-filled (as SyncNet zero-pads audio features for offsets).
    """
    if feat.dim() not in (2, 3) or feat.shape[-1] != MFCC_CEPS:
        raise ValueError(f"mfcc_windows expects (N, 13) or (B, N, 13), got {tuple(feat.shape)}")
    if num_frames <= 0:
        return feat.new_zeros((*feat.shape[:-2], 0, 1, MFCC_CEPS, MFCC_WINDOW))
    need = FRAMES_PER_VIDEO_FRAME * (num_frames - 1) + MFCC_WINDOW
    have = feat.shape[-2]
    if have < need:
        if not pad:
            raise ValueError(
                f"mfcc_windows: {num_frames} video frames need {need} MFCC frames, only {have} "
                f"(audio too short by {(need - have) * MFCC_STEP / SAMPLE_RATE:.3f} s)"
            )
        feat = torch.nn.functional.pad(feat, (0, 0, 0, need - have))
    feat = feat.transpose(-1, -2)  # (..., 13, N)
    win = feat.unfold(-1, MFCC_WINDOW, FRAMES_PER_VIDEO_FRAME)[..., :num_frames, :]  # (..., 13, F, 20)
    return win.movedim(-2, -3).unsqueeze(-3).contiguous()
