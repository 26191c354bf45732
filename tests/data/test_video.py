"""Video I/O: round trips, fps conversion, atomic writes, unusable inputs."""
from __future__ import annotations

import av
import numpy as np
import pytest

from talkinghead.data.video import (VideoInfo, convert_fps, probe_video, read_video,
                                    write_audio, write_video)
from talkinghead.errors import InputError

SR = 16000


def smooth_frames(t=20, h=64, w=96) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = [np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 60.0 + 4 * i)], -1)
              for i in range(t)]
    return np.stack(frames).round().astype(np.uint8)


def tone(seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / SR)).astype(np.float32)


def decoded_audio_seconds(path) -> float:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        return sum(f.samples for f in c.decode(stream)) / stream.codec_context.sample_rate


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    frames = smooth_frames(t=25)
    write_video(path, frames, fps=25, audio=tone(1.0), sample_rate=SR)
    return path, frames


def test_round_trip_with_audio(clip):
    path, frames = clip
    out, fps = read_video(path)
    assert fps == 25
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert np.abs(out.astype(np.int16) - frames).mean() < 3

    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.fps, info.num_frames, info.width, info.height) == (25, 25, 96, 64)
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert info.has_audio and info.audio_rate == SR and info.audio_channels == 1
    assert info.audio_duration == pytest.approx(1.0, abs=0.05)
    # AAC adds encoder priming/padding (< 2 frames of 1024 samples).
    assert decoded_audio_seconds(path) == pytest.approx(1.0, abs=0.15)


def test_video_without_audio_and_from_iterable(tmp_path):
    frames = smooth_frames(t=10, h=32, w=32)
    path = tmp_path / "v.mp4"
    write_video(path, (f for f in frames), fps=30)
    info = probe_video(path)
    assert not info.has_audio and info.audio_rate is None and info.num_frames == 10
    out, fps = read_video(path)
    assert fps == pytest.approx(30) and out.shape == frames.shape


def test_write_rejects_odd_size_and_bad_dtype(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((3, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((3, 32, 32, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_write_audio_m4a_and_wav(tmp_path):
    for name in ("a.m4a", "a.wav"):
        write_audio(tmp_path / name, tone(0.5), SR)
        assert decoded_audio_seconds(tmp_path / name) == pytest.approx(0.5, abs=0.15)
    with pytest.raises(ValueError):
        write_audio(tmp_path / "a.mp3", tone(0.1), SR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.m4a", "a.wav"]


def test_atomic_write_leaves_no_temp(tmp_path):
    write_video(tmp_path / "x.mp4", smooth_frames(t=5, h=32, w=32))
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]


def test_failure_mid_write_leaves_nothing(tmp_path):
    def frames():
        for f in smooth_frames(t=6, h=32, w=32):
            yield f
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_video(tmp_path / "x.mp4", frames(), audio=tone(1.0))
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_previous_target(tmp_path):
    target = tmp_path / "x.mp4"
    write_video(target, smooth_frames(t=5, h=32, w=32))
    before = target.read_bytes()
    bad = [np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)]
    with pytest.raises(ValueError, match="size changed"):
        write_video(target, iter(bad))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]


def test_convert_fps():
    frames = np.arange(30)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = convert_fps(frames, 30, 25)
    assert len(out) == 25
    assert out[:6, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 6]
    assert out[-1, 0, 0, 0] == 28
    assert convert_fps(frames, 25, 25) is frames
    up = convert_fps(frames[:5], 25, 50)
    assert up[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError):
        convert_fps(frames, 0, 25)


def test_missing_file(tmp_path):
    for fn in (probe_video, read_video):
        with pytest.raises(InputError) as e:
            fn(tmp_path / "nope.mp4")
        assert "nope.mp4" in str(e.value) and "not found" in e.value.reason


def test_truncated_and_garbage(tmp_path, clip):
    data = clip[0].read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.mp4").write_bytes(b"not a video at all " * 200)
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name in ("half.mp4", "garbage.mp4", "empty.mp4"):
        for fn in (probe_video, read_video):
            with pytest.raises(InputError) as e:
                fn(tmp_path / name)
            assert e.value.path == str(tmp_path / name)


def test_truncated_moov_first_file(tmp_path):
    # A "faststart" mp4 (index before the data) cut in half still opens; reading must
    # notice that frames are missing.
    path = tmp_path / "fs.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=25)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        rng = np.random.default_rng(0)
        for f in rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8):
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|decod"):
        read_video(cut)


def test_audio_only_file_is_not_a_video(tmp_path):
    write_audio(tmp_path / "a.wav", tone(0.2), SR)
    for fn in (probe_video, read_video):
        with pytest.raises(InputError, match="no video stream"):
            fn(tmp_path / "a.wav")
