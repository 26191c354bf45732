"""Tests for talkinghead.data.audio: loading, lws-style mel, psf-style MFCC, windows."""
from __future__ import annotations

import fractions
import wave

import av
import librosa
import numpy as np
import pytest
import torch

from talkinghead.data import audio as A
from talkinghead.errors import InputError

SR = 16_000


# ---------------------------------------------------------------------------------------------
# independent numpy transcription of the reference facts (lws STFT -> mel -> dB -> [0, 1])
# ---------------------------------------------------------------------------------------------
def ref_frame_count(length: int) -> int:
    """lws rule, stated on the 1120+1120 zero-padded length."""
    padded = length + 2 * 1120
    return (padded - 1280) // 160 + (1 if length % 160 == 0 else 2)


def ref_stft_mag(y: np.ndarray) -> np.ndarray:
    """(M, 641) magnitude, float64, loop-free."""
    m = ref_frame_count(len(y))
    x = np.concatenate([np.zeros(1120), y, np.zeros(1120)])
    x = np.concatenate([x, np.zeros((m - 1) * 160 + 1280 - len(x))])
    i = np.arange(1280)
    hann_sym = 0.5 * (1 - np.cos(2 * np.pi * (2 * i + 1) / (2 * 1280)))
    win = np.sqrt(hann_sym * 2 * 160 / 1280)
    idx = np.arange(m)[:, None] * 160 + i[None, :]
    return np.abs(np.fft.rfft(x[idx] * win, axis=1))


def ref_mel(y: np.ndarray) -> np.ndarray:
    y = y * (0.1 / max(1e-4, np.sqrt(np.mean(y**2))))
    basis = librosa.filters.mel(sr=SR, n_fft=1280, n_mels=80, fmin=125, fmax=7600, dtype=np.float64)
    s = 20 * np.log10(np.maximum(1e-5, basis @ ref_stft_mag(y).T)) - 20
    return np.clip((s + 100) / 100, 0, 1)


def signals(length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + length)
    t = np.arange(length) / SR
    return {
        "noise": rng.standard_normal(length) * 0.2,
        "tone": 0.5 * np.sin(2 * np.pi * 440.0 * t),
        "chirp": 0.3 * np.sin(2 * np.pi * (80.0 + 2500.0 * t) * t),
    }


LENGTHS = [16000, 16001, 12345, 3200, 999, 160, 1]  # % 160 == 0 and != 0, shorter than a window


@pytest.mark.parametrize("length", LENGTHS)
def test_mel_matches_reference(length):
    for name, y in signals(length).items():
        ref = ref_mel(y)
        assert ref.shape == (80, ref_frame_count(length))
        assert A.num_mel_frames(length) == ref_frame_count(length)
        for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-6)):
            out = A.mel_spectrogram(torch.tensor(y, dtype=dtype))
            assert out.dtype == torch.float32 and out.shape == ref.shape, name
            assert 0.0 <= out.min() and out.max() <= 1.0
            err = np.abs(out.numpy() - ref).max()
            assert err < tol, (name, length, dtype, err)


def test_frame_count_rule_closed_form():
    for t in range(1, 2000):
        assert A.num_mel_frames(t) == ref_frame_count(t) == -(-t // 160) + 7


def test_mel_batched_numpy_and_normalize_flag():
    ys = np.stack([v for v in signals(8000).values()]).astype(np.float32)
    batched = A.mel_spectrogram(torch.from_numpy(ys))
    assert batched.shape == (3, 80, A.num_mel_frames(8000))
    for b in range(3):
        torch.testing.assert_close(batched[b], A.mel_spectrogram(torch.from_numpy(ys[b])), atol=1e-6, rtol=0)
    torch.testing.assert_close(A.mel_spectrogram(ys[0]), batched[0], atol=1e-6, rtol=0)  # numpy in
    pre = A.rms_normalize(torch.from_numpy(ys))
    torch.testing.assert_close(A.mel_spectrogram(pre, normalize=False), batched, atol=1e-6, rtol=0)
    # without normalisation the level matters
    assert (A.mel_spectrogram(torch.from_numpy(ys[:1]) * 0.01, normalize=False) - batched[:1]).abs().max() > 0.1


def test_mel_silence_is_zero():
    out = A.mel_spectrogram(torch.zeros(4000))
    assert out.shape == (80, A.num_mel_frames(4000)) and float(out.abs().max()) == 0.0


def test_tone_1khz_peaks_in_right_mel_bin():
    t = np.arange(SR) / SR
    mel = A.mel_spectrogram(torch.tensor(0.5 * np.sin(2 * np.pi * 1000.0 * t), dtype=torch.float32))
    centres = librosa.mel_frequencies(n_mels=82, fmin=125, fmax=7600)[1:-1]
    expected = int(np.argmin(np.abs(centres - 1000.0)))
    profile = mel[:, 20:-20].mean(dim=1)
    assert int(profile.argmax()) == expected
    assert profile[expected] > 0.8 and profile[:expected - 5].max() < profile[expected] - 0.3


def test_stft_matches_lws():
    lws = pytest.importorskip("lws")
    proc = lws.lws(1280, 160, mode="speech")
    for length in (16000, 16001, 4321):
        for y in signals(length, seed=3).values():
            ref = np.abs(proc.stft(y))  # (M, 641)
            ours = A._stft_magnitude(torch.tensor(y)[None])[0].numpy().T
            assert ours.shape == ref.shape == (ref_frame_count(length), 641)
            np.testing.assert_allclose(ours, ref, atol=1e-9 * max(1.0, ref.max()), rtol=0)
            np.testing.assert_allclose(ref_stft_mag(y), ref, atol=1e-9 * max(1.0, ref.max()), rtol=0)
            # the full PC-AVS melspectrogram on top of lws
            basis = librosa.filters.mel(sr=SR, n_fft=1280, n_mels=80, fmin=125, fmax=7600)
            yn = y * (0.1 / max(1e-4, np.sqrt(np.mean(y**2))))
            s = 20 * np.log10(np.maximum(1e-5, basis @ np.abs(proc.stft(yn)).T)) - 20
            pcavs = np.clip((s + 100) / 100, 0, 1)
            assert np.abs(A.mel_spectrogram(torch.tensor(y, dtype=torch.float32)).numpy() - pcavs).max() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mel_and_mfcc_on_cuda():
    y = torch.tensor(np.stack(list(signals(16001).values())), dtype=torch.float32)
    mel = A.mel_spectrogram(y.cuda())
    assert mel.device.type == "cuda"
    torch.testing.assert_close(mel.cpu(), A.mel_spectrogram(y), atol=1e-4, rtol=0)
    mf = A.mfcc(y.cuda())
    assert mf.device.type == "cuda"
    torch.testing.assert_close(mf.cpu(), A.mfcc(y), atol=1e-4, rtol=1e-5)


def test_rms_normalize():
    rng = np.random.default_rng(1)
    y = rng.standard_normal(5000).astype(np.float32) * 0.02
    out = A.rms_normalize(y)
    assert out.dtype == np.float32 and abs(np.sqrt(np.mean(out.astype(np.float64) ** 2)) - 0.1) < 1e-5
    tb = A.rms_normalize(torch.from_numpy(np.stack([y, 3 * y])))
    assert torch.allclose(tb.pow(2).mean(-1).sqrt(), torch.tensor([0.1, 0.1]), atol=1e-5)
    for z in (np.zeros(100, np.float32), torch.zeros(2, 100)):
        out = A.rms_normalize(z)
        assert float(np.abs(np.asarray(out)).max()) == 0.0 and np.all(np.isfinite(np.asarray(out)))


# ---------------------------------------------------------------------------------------------
# MFCC vs python_speech_features
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [16000, 16123, 400, 401, 250])
def test_mfcc_matches_psf(length):
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(length)
    t = np.arange(length) / SR
    cases = {
        "noise": rng.standard_normal(length) * 0.1,
        "chirp": 0.4 * np.sin(2 * np.pi * (100.0 + 3000.0 * t) * t),
    }
    for name, y in cases.items():
        y = y.astype(np.float32)
        ref = psf.mfcc(y.astype(np.float64) * 32768.0, samplerate=SR)
        out = A.mfcc(torch.from_numpy(y))  # float [-1, 1], scaled by 32768 inside
        assert out.shape == ref.shape == (A.num_mfcc_frames(length), 13), name
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-4, err_msg=name)
        # int16 input is taken as already int16-scaled
        i16 = np.round(y * 32767).astype(np.int16)
        np.testing.assert_allclose(A.mfcc(i16).numpy(), psf.mfcc(i16, samplerate=SR), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(
            A.mfcc(y * 32768.0, scale=1.0).numpy(), ref, rtol=1e-5, atol=1e-4
        )


def test_mfcc_batched_and_silence():
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(7)
    y = torch.from_numpy(rng.standard_normal((3, 6400)).astype(np.float32) * 0.1)
    out = A.mfcc(y)
    assert out.shape == (3, A.num_mfcc_frames(6400), 13) and out.dtype == torch.float32
    for b in range(3):
        torch.testing.assert_close(out[b], A.mfcc(y[b]))
    silent = A.mfcc(torch.zeros(1000))
    np.testing.assert_allclose(silent.numpy(), psf.mfcc(np.zeros(1000), samplerate=SR), rtol=1e-6, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------
def test_mel_windows_index_convention():
    m = 60
    mel = torch.zeros(80, m)
    mel[5, 30] = 1.0  # impulse at mel frame 30
    win = A.mel_windows(mel, num_frames=10)
    assert win.shape == (10, 1, 80, 20)
    for f in range(10):
        start = (f - 2) * 4
        pos = 30 - start
        hits = torch.nonzero(win[f, 0, 5]).flatten().tolist()
        assert hits == ([pos] if 0 <= pos < 20 else []), f
    # frame 9 starts at 28 -> impulse at position 2; frame 2 is exactly mel[:, 0:20]
    assert win[9, 0, 5, 2] == 1.0
    torch.testing.assert_close(win[2, 0], mel[:, 0:20])


def test_mel_windows_edge_replication_and_batch():
    mel = torch.arange(12, dtype=torch.float32).repeat(80, 1)  # value = frame index
    win = A.mel_windows(mel, num_frames=4)
    # frame 0 starts at -8: positions 0..8 replicate frame 0, then 1, 2, ..., 11, 11, ...
    expect0 = np.clip(np.arange(-8, 12), 0, 11)
    np.testing.assert_array_equal(win[0, 0, 0].numpy(), expect0)
    expect3 = np.clip(np.arange(4, 24), 0, 11)  # tail replicates the last frame
    np.testing.assert_array_equal(win[3, 0, 7].numpy(), expect3)
    batched = A.mel_windows(torch.stack([mel, mel + 100]), num_frames=4)
    assert batched.shape == (2, 4, 1, 80, 20)
    torch.testing.assert_close(batched[1], win + 100)


def test_mfcc_windows_index_convention():
    n = 60
    feat = torch.zeros(n, 13)
    feat[33, 4] = 1.0  # impulse at MFCC frame 33, coefficient 4
    win = A.mfcc_windows(feat, num_frames=10)  # needs 4*9 + 20 = 56 <= 60
    assert win.shape == (10, 1, 13, 20)
    for v in range(10):
        pos = 33 - 4 * v
        hits = torch.nonzero(win[v, 0, 4]).flatten().tolist()
        assert hits == ([pos] if 0 <= pos < 20 else []), v
    ramp = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 13)
    np.testing.assert_array_equal(A.mfcc_windows(ramp, 3)[2, 0, 0].numpy(), np.arange(8, 28))
    batched = A.mfcc_windows(torch.stack([feat, 2 * feat]), num_frames=10)
    assert batched.shape == (2, 10, 1, 13, 20)
    torch.testing.assert_close(batched[1], 2 * win)


def test_mfcc_windows_too_short():
    feat = torch.ones(50, 13)
    with pytest.raises(ValueError, match="need 56 MFCC frames"):
        A.mfcc_windows(feat, num_frames=10)
    padded = A.mfcc_windows(feat, num_frames=10, pad=True)
    assert padded.shape == (10, 1, 13, 20)
    assert float(padded[9, 0, :, :14].min()) == 1.0 and float(padded[9, 0, :, 14:].abs().max()) == 0.0


def test_syncnet_style_lengths_fit():
    # SyncNet uses windows for v < min(frames, samples // 640) - 5: always available.
    for seconds in (1.0, 2.37, 5.0):
        t = int(seconds * SR)
        frames = t // 640
        feat = A.mfcc(torch.zeros(t))
        assert A.mfcc_windows(feat, frames - 5).shape == (frames - 5, 1, 13, 20)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _write_audio(path, data: np.ndarray, rate: int, codec: str, fmt: str, layout: str) -> None:
    """data (channels, n) float in [-1, 1]."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        chunk = 1024
        for start in range(0, data.shape[1], chunk):
            piece = data[:, start : start + chunk]
            if fmt == "s16":  # packed: (1, n * channels), interleaved
                piece = np.round(piece.T * 32767).astype(np.int16).reshape(1, -1)
            else:  # planar float: (channels, n)
                piece = piece.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = fractions.Fraction(1, rate)
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)


def test_load_wav_exact(tmp_path):
    t = np.arange(int(0.75 * SR)) / SR
    y = 0.5 * np.sin(2 * np.pi * 300 * t) * np.exp(-t)
    path = tmp_path / "a.wav"
    _write_audio(path, y[None], SR, "pcm_s16le", "s16", "mono")
    wav = A.load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1 and wav.shape == y.shape
    expect = np.round(y * 32767).astype(np.int16) / 32768.0
    np.testing.assert_allclose(wav, expect, atol=1e-6)
    info = A.probe_audio(path)
    assert info["sample_rate"] == SR and info["channels"] == 1
    assert abs(info["duration"] - 0.75) < 1e-3


def test_load_m4a_stereo_44k(tmp_path):
    rate, seconds = 44100, 1.5
    t = np.arange(int(seconds * rate)) / rate
    left = 0.4 * np.sin(2 * np.pi * (200 + 400 * t) * t)
    right = 0.3 * np.sin(2 * np.pi * 660 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    path = tmp_path / "a.m4a"
    _write_audio(path, np.stack([left, right]), rate, "aac", "fltp", "stereo")

    info = A.probe_audio(path)
    assert info["sample_rate"] == rate and info["channels"] == 2 and info["codec"] == "aac"
    assert abs(info["duration"] - seconds) < 0.1

    wav = A.load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - seconds * SR) < 0.05 * SR
    assert np.abs(wav).max() <= 1.0
    ref = librosa.resample((left + right) / 2, orig_sr=rate, target_sr=SR)
    n = min(len(ref), len(wav)) - 400
    lags = range(-200, 201)
    corr = max(np.corrcoef(wav[200 + k : 200 + k + n - 400], ref[200 : 200 + n - 400])[0, 1] for k in lags)
    assert corr > 0.95
    rms_ratio = np.sqrt(np.mean(wav**2)) / np.sqrt(np.mean(ref**2))
    assert 0.9 < rms_ratio < 1.1  # channel mean, not a +3 dB sum

    wav8k = A.load_audio(path, sample_rate=8000)
    assert abs(len(wav8k) - seconds * 8000) < 0.05 * 8000


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as exc:
        A.load_audio(tmp_path / "nope.wav")
    assert exc.value.path.endswith("nope.wav")
    with pytest.raises(InputError, match="not found"):
        A.probe_audio(tmp_path / "nope.wav")


def test_garbage_and_truncated_files(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as exc:
        A.load_audio(garbage)
    assert exc.value.path == str(garbage)

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        A.load_audio(empty)

    good = tmp_path / "good.m4a"
    t = np.arange(44100) / 44100
    _write_audio(good, np.stack([np.sin(2 * np.pi * 440 * t)] * 2) * 0.3, 44100, "aac", "fltp", "stereo")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.m4a"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        A.load_audio(truncated)
    with pytest.raises(InputError):
        A.probe_audio(garbage)


def test_wav_without_samples(tmp_path):
    path = tmp_path / "nosamples.wav"
    with wave.open(str(path), "wb") as w:  # a valid header and zero frames
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(b"")
    assert A.probe_audio(path)["duration"] == 0.0
    with pytest.raises(InputError, match="empty"):
        A.load_audio(path)


def test_video_without_audio(tmp_path):
    path = tmp_path / "silent_video.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            img = np.full((64, 64, 3), i * 40, dtype=np.uint8)
            for pkt in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    with pytest.raises(InputError, match="no audio stream") as exc:
        A.load_audio(path)
    assert "video" in exc.value.reason
    with pytest.raises(InputError, match="no audio stream"):
        A.probe_audio(path)
