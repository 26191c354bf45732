"""Video I/O: the one place the suite reads and writes video files (PyAV).

Conventions
-----------
* frames: uint8 RGB, shape (T, H, W, 3), values 0..255.
* fps: frames per second (float).
* audio: mono float32 samples in [-1, 1], shape (N,), at `sample_rate` Hz.
* Every writer is atomic: it writes a hidden temporary file in the target's folder and
  `os.replace`s it onto the target, so a crash never leaves a half-written file behind.
* Unusable input files (missing, corrupt, truncated, no video stream) raise
  `talkinghead.errors.InputError(path, reason)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from talkinghead.errors import InputError
from talkinghead.fileio import atomic_write

__all__ = ["VideoInfo", "probe_video", "read_video", "convert_fps", "write_video", "write_audio"]


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` finds in a file, without decoding it.

    fps:            video frame rate (frames / second).
    num_frames:     number of video frames (container count, else round(duration * fps)).
    width, height:  frame size in pixels.
    duration:       video duration in seconds.
    has_audio:      whether the file has an audio stream.
    audio_rate:     audio sample rate in Hz, None without audio.
    audio_channels: audio channel count, None without audio.
    audio_duration: audio duration in seconds when the container states it, else None.
    """

    fps: float
    num_frames: int
    width: int
    height: int
    duration: float
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    audio_duration: float | None = None


# ----------------------------------------------------------------------------- reading


def _open_input(path: Path) -> "av.container.InputContainer":
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    try:
        return av.open(str(path), "r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot open as a media container ({_why(e)})") from e


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if value > 0:
                return value
    return 0.0


def _stream_duration(stream, container) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Header facts of the video file `path` (nothing is decoded). InputError if unusable."""
    path = Path(path)
    container = _open_input(path)
    try:
        if not container.streams.video:
            raise InputError(path, "no video stream")
        vs = container.streams.video[0]
        fps = _stream_fps(vs)
        duration = _stream_duration(vs, container)
        num_frames = int(vs.frames or 0)
        if num_frames <= 0:
            num_frames = int(round(duration * fps))
        if duration <= 0 and fps > 0:
            duration = num_frames / fps
        width, height = int(vs.codec_context.width), int(vs.codec_context.height)
        if width <= 0 or height <= 0:
            raise InputError(path, "video stream has no frame size")
        audio_rate = audio_channels = audio_duration = None
        has_audio = bool(container.streams.audio)
        if has_audio:
            a = container.streams.audio[0]
            audio_rate = int(a.codec_context.sample_rate or a.rate or 0) or None
            audio_channels = int(a.codec_context.channels or 0) or None
            if a.duration is not None and a.time_base is not None:
                audio_duration = float(a.duration * a.time_base)
        return VideoInfo(fps, num_frames, width, height, duration, has_audio, audio_rate,
                         audio_channels, audio_duration)
    finally:
        container.close()


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode every frame of `path`: (frames uint8 (T, H, W, 3) RGB, fps).

    InputError if the file is missing, corrupt, has no video stream, fails mid-decode,
    decodes to no frames, or decodes to clearly fewer frames than its header states
    (a truncated file).
    """
    path = Path(path)
    container = _open_input(path)
    try:
        if not container.streams.video:
            raise InputError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        expected = int(stream.frames or 0)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        # Preallocate from the header count (saves the np.stack copy); grow if it was short.
        buf = np.empty((max(expected, 1), height, width, 3), np.uint8) if width and height else None
        n = 0
        extra: list[np.ndarray] = []
        try:
            for frame in container.decode(video=0):
                img = frame.to_ndarray(format="rgb24")
                if buf is not None and n < len(buf) and img.shape == buf.shape[1:]:
                    buf[n] = img
                else:
                    if buf is not None and not extra:
                        extra.extend(buf[:n])
                        buf = None
                    extra.append(img)
                n += 1
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise InputError(path, f"video decoding failed after {n} frames ({_why(e)})") from e
    finally:
        container.close()
    if n == 0:
        raise InputError(path, "video stream decoded to 0 frames")
    if expected > 0 and n < expected - max(2, int(0.02 * expected)):
        raise InputError(path, f"truncated: decoded {n} of {expected} frames")
    if buf is not None:
        frames = buf[:n]
    else:
        try:
            frames = np.stack(extra)
        except ValueError as e:
            raise InputError(path, "frame size changes within the video") from e
    if fps <= 0:
        raise InputError(path, "video stream has no frame rate")
    return frames, fps


def convert_fps(frames: np.ndarray, src_fps: float, dst_fps: float = 25) -> np.ndarray:
    """Resample frames (T, ...) from `src_fps` to `dst_fps` by nearest frame in time.

    Output frame i (time i / dst_fps) is the source frame whose interval
    [j / src_fps, (j+1) / src_fps) covers that time; the output spans the source duration
    T / src_fps, i.e. ceil(T * dst_fps / src_fps) frames. Identity (same array) when the
    rates are equal.
    """
    if src_fps <= 0 or dst_fps <= 0:
        raise ValueError(f"frame rates must be positive, got {src_fps} -> {dst_fps}")
    if abs(src_fps - dst_fps) < 1e-9:
        return frames
    t = len(frames)
    if t == 0:
        return frames[:0]
    eps = 1e-6
    n_out = max(1, int(np.ceil(t * dst_fps / src_fps - eps)))
    idx = np.floor(np.arange(n_out) * (src_fps / dst_fps) + eps).astype(np.int64)
    return frames[np.clip(idx, 0, t - 1)]


# ----------------------------------------------------------------------------- writing


def _as_mono(audio, what: str = "audio") -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"{what} must be mono (N,), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{what} is empty")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    return np.clip(a.astype(np.float32, copy=False), -1.0, 1.0)


def _rate(fps: float) -> Fraction:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(100_000)


def _check_frame(img, shape: tuple | None) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"frames must be (H, W, 3) RGB, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {img.dtype}")
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even width and height, got {w}x{h}")
    if shape is not None and img.shape != shape:
        raise ValueError(f"frame size changed from {shape} to {img.shape}")
    return np.ascontiguousarray(img)


def _audio_frames(samples: np.ndarray, start: int, sample_rate: int):
    frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = start
    frame.time_base = Fraction(1, sample_rate)
    return frame


def write_video(
    path: str | Path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: str = "medium",
) -> None:
    """Write an H.264 (libx264, yuv420p) mp4, atomically.

    frames:      uint8 RGB (T, H, W, 3) array, or any iterable of (H, W, 3) frames
                 (streamed; all the same size). H and W must be even (ValueError otherwise).
    fps:         frame rate of the output.
    audio:       optional mono float samples in [-1, 1] (N,), muxed as AAC in the same file.
    sample_rate: rate of `audio` in Hz.
    crf, preset: libx264 quality (lower crf = better; 18 ~ visually lossless) and speed.
    """
    path = Path(path)
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
        if len(frames) == 0:
            raise ValueError("no frames to write")
        _check_frame(frames[0], None)
    samples = _as_mono(audio) if audio is not None else None
    rate = _rate(fps)

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as out:
            it = iter(frames)
            try:
                first = next(it)
            except StopIteration:
                raise ValueError("no frames to write") from None
            first = _check_frame(first, None)
            shape = first.shape
            vs = out.add_stream("libx264", rate=rate)
            vs.width, vs.height = shape[1], shape[0]
            vs.pix_fmt = "yuv420p"
            # one encoder thread: x264's threaded rate control makes the bytes differ run to run
            vs.options = {"crf": str(crf), "preset": preset, "threads": "1"}
            aus = None
            if samples is not None:
                aus = out.add_stream("aac", rate=sample_rate, layout="mono")
            a_pos = 0
            n = 0

            def push_audio(upto: int) -> None:
                nonlocal a_pos
                upto = min(upto, len(samples))
                if upto > a_pos:
                    out.mux(aus.encode(_audio_frames(samples[a_pos:upto], a_pos, sample_rate)))
                    a_pos = upto

            img = first
            while True:
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                vf.pts = n
                vf.time_base = 1 / rate
                out.mux(vs.encode(vf))
                n += 1
                if aus is not None:  # interleave: audio up to the end of this video frame
                    push_audio(int(round(n / rate * sample_rate)))
                try:
                    img = _check_frame(next(it), shape)
                except StopIteration:
                    break
            out.mux(vs.encode(None))
            if aus is not None:
                push_audio(len(samples))
                out.mux(aus.encode(None))

    atomic_write(path, write)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int = 16000) -> None:
    """Write mono float audio in [-1, 1] (N,) atomically: `.m4a` -> AAC, `.wav` -> 16-bit PCM."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".m4a":
        fmt, codec = "ipod", "aac"
    elif suffix == ".wav":
        fmt, codec = "wav", "pcm_s16le"
    else:
        raise ValueError(f"{path}: audio suffix must be .m4a or .wav")
    samples = _as_mono(audio)

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format=fmt) as out:
            st = out.add_stream(codec, rate=sample_rate, layout="mono")
            out.mux(st.encode(_audio_frames(samples, 0, sample_rate)))
            out.mux(st.encode(None))

    atomic_write(path, write)
