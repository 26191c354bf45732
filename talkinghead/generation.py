"""The generation base every method's inference uses: requests, input readers, the mp4 writer,
default checkpoints, and the `Generator` base class with its command line.

Conventions
-----------
* Frames are ``torch.float32`` tensors ``(T, 3, H, W)``, RGB in ``[0, 1]`` (H = W = 224 for
  aligned faces: those of the clip store, `talkinghead.data.store`). A single image is ``(3, H, W)``.
* Audio is ``torch.float32`` ``(N,)``, mono, 16 kHz, in ``[-1, 1]`` (not normalised).
* Video runs at 25 fps: frame ``t`` covers audio samples ``[640 t, 640 (t + 1))``; an audio of N
  samples gives ``num_frames_for(N) = round(N / 640)`` frames (at least 1).
* Request tensors may share memory with each other and with what the metrics see (a repeated
  frame is an expanded view): methods read them and never write into them.
* Requests arrive on the CPU; a generator moves what it needs to its own device and may return
  frames on any device.

A method's generator subclasses `Generator` and implements only `Generator.synthesize` (model
inputs -> frames, in chunks). The base gives it

* ``generate(request)``: the benchmark's / validation's entry (`GenerationRequest` -> frames);
* ``generate_file(reference, audio, out, **controls)``: files in, mp4 out (inputs read and aligned
  as the clip store aligns training data: `talkinghead.data.preprocess.align_frames`);
* `main` / `build_parser`: the ``talkinghead generate --method <name>`` command line, one option
  per declared `Control`.

Ground truth is never given to a method: `GenerationRequest.ground_truth` is filled by the
benchmark harness only for generators whose ``needs_ground_truth`` attribute is True — the
``ground_truth`` baseline, which exists to score the real video itself.

Reference videos. A generator whose class sets ``reference_video = True`` (Rhythmic Head) takes a
short VIDEO as its reference: `generate_file` reads the first ``max_reference_frames`` frames of
``--reference`` as a clip is read into the store (`read_reference_video`: 25 fps, landmarks
detected, aligned as a whole, head poses estimated, the audio under those frames) and hands it to
`Generator.synthesize` as the keyword ``reference_video`` (a `ReferenceVideo`), with ``reference``
its first frame; an image given as the reference is a 1-frame `ReferenceVideo` without audio. In
the benchmark the protocol's ``reference_frames`` (`talkinghead.bench.protocol`) fill
`GenerationRequest.reference_video` with the clip's first frames (the store's landmarks, poses and
audio), and the generated clip is the rest. Every other generator is unchanged: one reference image.
"""
from __future__ import annotations

import abc
import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # torch, cv2 and PyAV are imported on use: `talkinghead --help` stays fast
    import torch

__all__ = [
    "CONTROL_KINDS",
    "FPS",
    "REQUEST_SOURCES",
    "SAMPLE_RATE",
    "SAMPLES_PER_FRAME",
    "VIDEO_SUFFIXES",
    "Control",
    "GenerationRequest",
    "Generator",
    "ReferenceVideo",
    "TalkingHeadGenerator",
    "build_parser",
    "default_checkpoint",
    "frames_tensor",
    "main",
    "num_frames_for",
    "read_audio",
    "load_lightning_weights",
    "loader_crop",
    "paste_loader_crop",
    "read_driving_video",
    "read_reference",
    "read_reference_video",
    "runs_root",
    "write_talking_head",
]

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
#: suffixes `read_reference` reads as a video (its first frame)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
#: the `GenerationRequest` driving sources a video `Control` of the same name receives
REQUEST_SOURCES = ("pose_source", "eye_source", "emotion_source")
CONTROL_KINDS = ("video", "image", "flag", "choice", "float", "int")


# ---------------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------------
@dataclass
class ReferenceVideo:
    """A reference video processed like a clip of the store (P frames, 25 fps).

    frames:    (P, 3, H, W) float32 aligned faces in [0, 1] (the clip store's alignment).
    landmarks: (P, 68, 2) float32 dlib-68 landmarks in the pixels of `frames`, no NaN (frames
               without a face interpolated, as the store does).
    poses:     (P, 6) float32 head poses in the store's convention
               (`talkinghead.data.faces.estimate_head_pose` of the aligned 224 px landmarks:
               rotation vector (rad), tx, ty (px at 224), log scale).
    audio:     (P * 640,) float32 16 kHz audio under the frames (frame t: samples [640 t,
               640 (t + 1))), or None (an image, or a video without an audio track).
    """

    frames: torch.Tensor
    landmarks: torch.Tensor
    poses: torch.Tensor
    audio: torch.Tensor | None = None

    def __post_init__(self) -> None:
        p = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[1] != 3 or p < 1:
            raise ValueError(f"reference video frames must be (P >= 1, 3, H, W), got {tuple(self.frames.shape)}")
        if tuple(self.landmarks.shape) != (p, 68, 2):
            raise ValueError(f"reference video landmarks must be ({p}, 68, 2), got {tuple(self.landmarks.shape)}")
        if tuple(self.poses.shape) != (p, 6):
            raise ValueError(f"reference video poses must be ({p}, 6), got {tuple(self.poses.shape)}")
        if self.audio is not None and tuple(self.audio.shape) != (p * SAMPLES_PER_FRAME,):
            raise ValueError(f"reference video audio must be ({p * SAMPLES_PER_FRAME},), got "
                             f"{tuple(self.audio.shape)}")

    def __len__(self) -> int:
        return len(self.frames)

    def first(self, count: int) -> "ReferenceVideo":
        """The first `count` frames (all when there are fewer)."""
        count = max(1, min(int(count), len(self)))
        audio = None if self.audio is None else self.audio[: count * SAMPLES_PER_FRAME]
        return ReferenceVideo(self.frames[:count], self.landmarks[:count], self.poses[:count], audio)


@dataclass
class GenerationRequest:
    """Everything a method may use to generate one clip (see the module docstring for conventions).

    clip_id:        the clip being generated (the store's clip_id).
    reference:      (3, H, W) identity reference image (the protocol's choice: the clip's first frame).
    audio:          (N,) driving audio, 16 kHz.
    num_frames:     T, the number of frames to return (25 fps).
    pose_source:    (T, 3, H, W) frames to take head pose from, or None (method's own / frontal).
    eye_source:     (T, 3, H, W) frames to take blinks and gaze from, or None.
    emotion_source: (T, 3, H, W) frames to take the expression from, or None.
                    Self-driven: all three are the clip's own frames. Cross-driven (PD-FGC): the
                    protocol's cross sources (default all three) come from another clip
                    (`source_clip_id`), by default its first frame repeated T times.
    labels:         the clip's dataset labels (MEAD: emotion, level, view; LRW: word, ...).
    setting:        "self" or "cross" (see `talkinghead.bench.protocol`).
    source_clip_id: clip_id of the clip the cross-driven sources come from (the clip itself when
                    self-driven).
    fps, sample_rate: 25 and 16000.
    ground_truth:   (T, 3, H, W) the clip's real frames. Reserved to the ``ground_truth`` baseline:
                    the harness fills it only for generators with ``needs_ground_truth = True`` and
                    leaves it None for every other method, so no method can read it by mistake.
    reference_video: a `ReferenceVideo` of P frames that come right BEFORE the T frames to generate
                    (the protocol's ``reference_frames``: the clip's first P frames, whose first
                    frame is `reference`; `audio` and the sources then cover the T frames after
                    them), or None (protocols with a reference image only).
    """

    clip_id: str
    reference: torch.Tensor
    audio: torch.Tensor
    num_frames: int
    pose_source: torch.Tensor | None = None
    eye_source: torch.Tensor | None = None
    emotion_source: torch.Tensor | None = None
    labels: dict = field(default_factory=dict)
    setting: str = "self"
    source_clip_id: str | None = None
    fps: float = FPS
    sample_rate: int = SAMPLE_RATE
    ground_truth: torch.Tensor | None = field(default=None, repr=False)
    reference_video: ReferenceVideo | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.reference.ndim != 3 or self.reference.shape[0] != 3:
            raise ValueError(f"{self.clip_id}: reference must be (3, H, W), got {tuple(self.reference.shape)}")
        if self.audio.ndim != 1:
            raise ValueError(f"{self.clip_id}: audio must be (N,), got {tuple(self.audio.shape)}")
        if self.num_frames < 1:
            raise ValueError(f"{self.clip_id}: num_frames must be >= 1, got {self.num_frames}")
        for name in ("pose_source", "eye_source", "emotion_source", "ground_truth"):
            value = getattr(self, name)
            if value is not None and (value.ndim != 4 or value.shape[1] != 3 or len(value) != self.num_frames):
                raise ValueError(f"{self.clip_id}: {name} must be ({self.num_frames}, 3, H, W), "
                                 f"got {tuple(value.shape)}")
        video = self.reference_video
        if video is not None and tuple(video.frames.shape[-2:]) != tuple(self.reference.shape[-2:]):
            raise ValueError(f"{self.clip_id}: reference_video frames are {tuple(video.frames.shape[-2:])}, "
                             f"the reference {tuple(self.reference.shape[-2:])}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames to generate (the reference's size)."""
        return int(self.reference.shape[1]), int(self.reference.shape[2])


@runtime_checkable
class TalkingHeadGenerator(Protocol):
    """What the benchmark and training validation call (every `Generator` is one).

    name:      the registry name (a row of the results table).
    generate:  request -> float (T, 3, H, W) frames in [0, 1], T = request.num_frames and (H, W) =
               request.size.

    Optional attributes read with getattr: ``checkpoint`` (Path | None, recorded in run.json),
    ``description`` (str, recorded), ``needs_ground_truth`` (bool, default False; see
    `GenerationRequest.ground_truth`).
    """

    name: str

    def generate(self, request: GenerationRequest) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------
def runs_root() -> Path:
    """Folder of training runs: ``$TALKINGHEAD_RUNS`` or ``runs`` (relative to the working directory)."""
    return Path(os.environ.get("TALKINGHEAD_RUNS") or "runs")


def default_checkpoint(method: str, stage: str) -> Path | None:
    """``<runs_root()>/<method>/<stage>/checkpoints/last.ckpt`` when present, else the most recently
    modified ``*.ckpt`` in that folder, else None."""
    folder = runs_root() / method / stage / "checkpoints"
    last = folder / "last.ckpt"
    if last.is_file():
        return last
    found = [p for p in folder.glob("*.ckpt") if p.is_file()] if folder.is_dir() else []
    return max(found, key=lambda p: (p.stat().st_mtime, str(p))) if found else None


def num_frames_for(num_samples: int) -> int:
    """Video frames (25 fps) for `num_samples` of 16 kHz audio: round(N / 640), at least 1."""
    return max(1, int(round(num_samples / SAMPLES_PER_FRAME)))


def audio_and_length(audio, num_frames: int | None = None) -> tuple[torch.Tensor, int]:
    """A synthesize call's audio as a float (N,) tensor and its frame count (`num_frames_for` when
    None); ValueError for an empty or multi-channel signal or a count below 1."""
    import torch

    audio = torch.as_tensor(np.asarray(audio, dtype=np.float32)) if not torch.is_tensor(audio) else audio.float()
    if audio.ndim != 1 or audio.numel() == 0:
        raise ValueError(f"audio must be a non-empty (N,) signal, got shape {tuple(audio.shape)}")
    t_total = num_frames_for(audio.numel()) if num_frames is None else int(num_frames)
    if t_total < 1:
        raise ValueError(f"num_frames must be >= 1, got {t_total}")
    return audio, t_total


def frames_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) RGB -> float32 (T, 3, H, W) in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a file")
    return path


def _read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an image file, or of a video's first frame."""
    import cv2

    from talkinghead.data.video import read_video
    from talkinghead.errors import InputError

    if path.suffix.lower() in VIDEO_SUFFIXES:
        frames, _ = read_video(path)  # InputError (a ValueError naming the file) when unreadable
        return frames[0]
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is not None:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    try:  # a video under another suffix
        frames, _ = read_video(path)
    except InputError:
        raise ValueError(f"{path}: not a readable image or video") from None
    return frames[0]


def read_reference(path: str | Path) -> torch.Tensor:
    """The identity reference: an image (cv2) or a video's first frame, aligned as the clip store
    aligns faces (`talkinghead.data.preprocess.align_frames`) -> float32 (3, 224, 224) in [0, 1].

    FileNotFoundError for a missing file; ValueError naming the file when it is not a readable
    image / video or shows no face."""
    from talkinghead.data.preprocess import align_frames

    path = _require_file(path)
    image = _read_image(path)
    return frames_tensor(align_frames(image[None], str(path)))[0]


def read_reference_video(path: str | Path, max_frames: int) -> ReferenceVideo:
    """A reference video: its first `max_frames` frames read as a clip is read into the store ->
    `ReferenceVideo` (frames (P, 3, 224, 224) in [0, 1], landmarks, poses, audio), P <= max_frames.

    A video (`VIDEO_SUFFIXES`, or any file PyAV reads) is converted to 25 fps
    (`data.video.convert_fps`) and cut to `max_frames`; the frames are aligned as a whole with their
    landmarks (`data.preprocess.align_frames_and_landmarks`: detection, frames without a face
    interpolated, `data.faces.align_clip`) and their head poses estimated from the aligned landmarks
    (`data.faces.estimate_head_pose`), exactly as `data.preprocess.process_clip` does for the store; the audio is the file's 16 kHz track under
    those frames (zero-padded at the end when shorter), None without an audio track. An image file
    is a 1-frame reference video without audio. FileNotFoundError / ValueError naming the file (not
    readable, or no face in any frame)."""
    import cv2
    import torch

    from talkinghead.data import faces
    from talkinghead.data.audio import load_audio
    from talkinghead.data.preprocess import align_frames_and_landmarks
    from talkinghead.data.video import convert_fps, read_video
    from talkinghead.errors import InputError

    if int(max_frames) < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    path = _require_file(path)
    raw = None
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            raw = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)[None]
    is_video = raw is None
    if is_video:
        try:
            raw, fps = read_video(path)
        except InputError:
            raise ValueError(f"{path}: not a readable image or video") from None
        raw = convert_fps(raw, fps, FPS)[: int(max_frames)]
    aligned, aligned_landmarks = align_frames_and_landmarks(raw, str(path))
    poses = faces.estimate_head_pose(aligned_landmarks)
    audio = None
    if is_video:
        try:
            wav = load_audio(path, SAMPLE_RATE)
        except InputError:
            wav = None  # a video without an audio track
        if wav is not None:
            track = np.zeros(len(aligned) * SAMPLES_PER_FRAME, np.float32)
            track[: min(len(wav), len(track))] = wav[: len(track)]
            audio = torch.from_numpy(track)
    return ReferenceVideo(frames_tensor(aligned), torch.from_numpy(np.asarray(aligned_landmarks, np.float32)),
                          torch.from_numpy(np.asarray(poses, np.float32)), audio)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _read_frame_folder(path: Path) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB of a folder of frames (image files sorted by name, taken as 25 fps).
    ValueError naming the folder when it holds no image or the images differ in size."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: a folder of frames must hold image files ({', '.join(IMAGE_SUFFIXES)})")
    frames = [_read_image(f) for f in files]
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"{path}: its frames differ in size")
    return np.stack(frames)


def read_driving_video(path: str | Path, num_frames: int, loop: bool = False) -> torch.Tensor:
    """A driving source (pose / eye / emotion...): a video, or a folder of frames (images sorted by
    name, 25 fps) -> aligned float32 (num_frames, 3, 224, 224) in [0, 1].

    A video is read with `data.video.read_video` and converted to 25 fps (`data.video.convert_fps`,
    nearest frame); the frames are aligned as a whole, as the clip store aligns a clip
    (`data.preprocess.align_frames`). Then fitted to `num_frames`: frame t % len with `loop` (the
    source repeats, PD-FGC's official convention), else frame min(t, len - 1) (a shorter source
    holds its last frame); a longer one is cut. FileNotFoundError / ValueError naming the file."""
    import torch

    from talkinghead.data.preprocess import align_frames
    from talkinghead.data.video import convert_fps, read_video

    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = _require_source(path)
    if path.is_dir():
        raw = _read_frame_folder(path)
    else:
        raw, fps = read_video(path)
        raw = convert_fps(raw, fps, FPS)
    frames = frames_tensor(align_frames(raw, str(path)))
    index = torch.arange(num_frames)
    return frames[index % len(frames) if loop else torch.clamp(index, max=len(frames) - 1)]


def _require_source(path: str | Path) -> Path:
    """A driving source's path: an existing file or folder (FileNotFoundError naming it otherwise)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return path if path.is_dir() else _require_file(path)


def load_lightning_weights(path: str | Path, method: str, title: str, build: Callable[[dict], torch.nn.Module],
                           prefixes: tuple[str, ...] = ("model.",)) -> tuple[torch.nn.Module, dict]:
    """A model from the Lightning checkpoint of registered method `method` (`title`: its name in
    messages, e.g. "PC-AVS"): `build(hyper_parameters["model"])` filled, strictly,
    with the ``state_dict`` entries under the first of `prefixes` the checkpoint has. Returns (model,
    info: kind, crop (None), path, stage, name, global_step, weights (the prefix used)).
    FileNotFoundError / ValueError naming the file and saying what is wrong."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {title} checkpoint (train one with `make train METHOD={method}`)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: cannot load as a {title} checkpoint: {error}") from error
    if not isinstance(data, dict) or "state_dict" not in data or "hyper_parameters" not in data:
        raise ValueError(f"{path}: not a {title} Lightning checkpoint (no state_dict / hyper_parameters)")
    hp = data["hyper_parameters"]
    if "model" not in hp:
        raise ValueError(f"{path}: not a {title} Lightning checkpoint (no model hyper-parameter)")
    model = build(hp["model"])
    prefix = next((p for p in prefixes if any(k.startswith(p) for k in data["state_dict"])), prefixes[-1])
    state = {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit the checkpoint's own model config: {error}") from error
    info = {"kind": "lightning", "crop": None, "path": str(path), "stage": hp.get("stage"), "name": hp.get("name"),
            "global_step": int(data.get("global_step", 0)), "weights": prefix.rstrip(".")}
    return model, info


# The official loader's crop of aligned 224 px faces (PC-AVS, PD-FGC): rows 0:192, cols 16:208.
def loader_crop(images: torch.Tensor) -> torch.Tensor:
    """Aligned frames (N, 3, H, W) -> their official loader crop (N, 3, 192, 192) (resized to 224
    first when H != 224)."""
    from torch.nn import functional as F

    from talkinghead.data.faces import LOADER_CROP

    if images.shape[-2:] != (224, 224):
        images = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False)
    rows, cols = LOADER_CROP
    return images[:, :, rows, cols]


def paste_loader_crop(images: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Generated crops (N, 3, S, S) pasted back where `loader_crop` took them from, onto `background`
    (3, H, W) resized to 224 -> (N, 3, 224, 224)."""
    from torch.nn import functional as F

    from talkinghead.data.faces import LOADER_CROP

    rows, cols = LOADER_CROP
    canvas = background.to(images.device, images.dtype)
    if canvas.shape[-2:] != (224, 224):
        canvas = F.interpolate(canvas[None], size=(224, 224), mode="bilinear", align_corners=False)[0]
    canvas = canvas.expand(len(images), -1, -1, -1).clone()
    canvas[:, :, rows, cols] = F.interpolate(images, size=(rows.stop - rows.start, cols.stop - cols.start),
                                             mode="bilinear", align_corners=False)
    return canvas


def read_audio(path: str | Path) -> np.ndarray:
    """The driving audio of any file ffmpeg reads -> float32 (N,) mono 16 kHz in [-1, 1]
    (`data.audio.load_audio`). FileNotFoundError / ValueError naming the file."""
    from talkinghead.data.audio import load_audio

    return load_audio(_require_file(path), SAMPLE_RATE)


def write_talking_head(out: str | Path, chunks: Iterable[torch.Tensor | np.ndarray], audio: torch.Tensor | np.ndarray,
                       num_frames: int) -> Path:
    """Write `out`: an H.264 mp4 at 25 fps of the frames in `chunks`, with `audio` muxed (AAC).

    chunks:     frames in chunks of (n, 3, H, W) float in [0, 1] (any device; streamed to the
                encoder), num_frames in all (ValueError otherwise).
    audio:      (N,) 16 kHz in [-1, 1]; zero-padded or cut to num_frames * 640 samples.
    The file is written to a temporary sibling and renamed into place (`data.video.write_video`),
    so an error (from the chunks or the encoder) leaves nothing at `out`. Returns `out`.
    """
    import torch

    from talkinghead.data.video import write_video

    out, num_frames = Path(out), int(num_frames)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    wav = audio.detach().cpu().numpy() if torch.is_tensor(audio) else np.asarray(audio)
    wav = np.asarray(wav, np.float32).reshape(-1)
    track = np.zeros(num_frames * SAMPLES_PER_FRAME, np.float32)
    track[: min(len(wav), len(track))] = wav[: len(track)]

    def frames() -> Iterator[np.ndarray]:
        count = 0
        for chunk in chunks:
            chunk = torch.as_tensor(chunk).detach()
            if chunk.ndim != 4 or chunk.shape[1] != 3:
                raise ValueError(f"{out}: frame chunks must be (n, 3, H, W), got {tuple(chunk.shape)}")
            if count + len(chunk) > num_frames:
                raise ValueError(f"{out}: got more than the {num_frames} frames expected")
            count += len(chunk)
            array = (chunk.float().cpu().permute(0, 2, 3, 1).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            yield from array
        if count != num_frames:
            raise ValueError(f"{out}: got {count} frames, expected {num_frames}")

    write_video(out, frames(), fps=FPS, audio=track, sample_rate=SAMPLE_RATE)
    return out


# ---------------------------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Control:
    """A driving signal or option a generator accepts besides the reference and the audio.

    name:    keyword of `Generator.synthesize` / `generate_file` (``pose_source``); the command-line
             option is ``--pose-source``. A video control named like a `GenerationRequest` source
             (`REQUEST_SOURCES`) receives that source in `Generator.generate`.
    kind:    "video" (a driving video: aligned (T, 3, 224, 224), `read_driving_video`), "image"
             (an aligned (3, 224, 224) image, `read_reference`), "flag" (bool), "choice" (one of
             `choices`), "float" or "int".
    help:    one line for ``--help``.
    choices: the values of a "choice".
    default: the value when not given (None for files, False for flags).
    group:   controls sharing a group are mutually exclusive (at most one given).
    """

    name: str
    kind: str
    help: str = ""
    choices: tuple[str, ...] = ()
    default: Any = None
    group: str | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"control name must be an identifier, got {self.name!r}")
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"control {self.name}: kind must be one of {CONTROL_KINDS}, got {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"control {self.name}: a choice needs choices")

    @property
    def option(self) -> str:
        """The command-line option: ``--pose-source``."""
        return "--" + self.name.replace("_", "-")

    def given(self, value: Any) -> bool:
        """Whether `value` counts as given (not None, not a False flag)."""
        return bool(value) if self.kind == "flag" else value is not None


class Generator(abc.ABC):
    """A method ready to generate: subclasses set `name`, `controls` and implement `synthesize`.

    Class attributes:  name (registry name), controls (the `Control`s it accepts), loop_sources
                       (how `generate_file` fits a short driving source: repeat it, or hold its end),
                       reference_video (True: the reference is a video of up to
                       ``max_reference_frames`` frames, given to `synthesize` as the keyword
                       ``reference_video``; see the module docstring).
    Instance attributes: device (torch.device), checkpoint (Path | None), description (str),
                       max_reference_frames (int: the reference frames read when reference_video).
    """

    name: str = ""
    controls: ClassVar[tuple[Control, ...]] = ()
    loop_sources: ClassVar[bool] = False  # a driving source shorter than the audio repeats (else holds its last frame)
    reference_video: ClassVar[bool] = False  # the reference is a video (`ReferenceVideo`), not one image
    max_reference_frames: int = 1

    def __init__(self, *, device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
                 description: str = ""):
        import torch

        self.device = torch.device(device)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.description = description

    @classmethod
    @abc.abstractmethod
    def from_checkpoint(cls, checkpoint: str | Path | None, device: str | torch.device = "cpu") -> "Generator":
        """Load from a checkpoint (what `main` uses when given no `load`)."""

    # ------------------------------------------------------------------ the method part
    @abc.abstractmethod
    def synthesize(self, reference: torch.Tensor, audio: torch.Tensor, num_frames: int,
                   **sources: Any) -> Iterator[torch.Tensor]:
        """Yield the frames in chunks of (n, 3, H, W), in [0, 1], on the CPU: num_frames in all.

        reference: (3, H, W) aligned face in [0, 1]; audio: (N,) 16 kHz in [-1, 1];
        sources: one keyword per declared control (videos (num_frames, 3, H, W) aligned, images
        (3, H, W), flags bool, ...; None / False when not given); for a class with
        ``reference_video``, also ``reference_video`` (a `ReferenceVideo` whose first frame is
        `reference`, or None when the caller had only an image).
        """

    # ------------------------------------------------------------------ given by the base
    @classmethod
    def control(cls, name: str) -> Control:
        for control in cls.controls:
            if control.name == name:
                return control
        raise KeyError(name)

    @classmethod
    def check_controls(cls, **values: Any) -> dict[str, Any]:
        """Every declared control's value (its default when not in `values`); ValueError for an
        unknown name, a choice out of its choices, or more than one of a group."""
        names = {c.name for c in cls.controls}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{cls.name or cls.__name__}: unknown control(s) {', '.join(unknown)}; "
                             f"accepted: {', '.join(sorted(names)) or 'none'}")
        out = {c.name: values.get(c.name, c.default) for c in cls.controls}
        groups: dict[str, list[Control]] = {}
        for c in cls.controls:
            if c.group is not None:
                groups.setdefault(c.group, []).append(c)
            if c.kind == "choice" and out[c.name] is not None and out[c.name] not in c.choices:
                raise ValueError(f"{c.name} must be one of {', '.join(c.choices)}, got {out[c.name]!r}")
        for members in groups.values():
            if sum(c.given(out[c.name]) for c in members) > 1:
                raise ValueError(f"give at most one of {', '.join(c.name for c in members)}")
        return out

    @classmethod
    def check_inputs(cls, reference: str | Path, audio: str | Path, **values: Any) -> dict[str, Any]:
        """`check_controls`, plus FileNotFoundError for a missing reference, audio or control file
        (so a command fails on a typo before loading a model)."""
        out = cls.check_controls(**values)
        for path in (reference, audio, *(out[c.name] for c in cls.controls if c.kind == "image" and out[c.name])):
            _require_file(path)
        for c in cls.controls:
            if c.kind == "video" and out[c.name] is not None:
                _require_source(out[c.name])
        return out

    def request_sources(self, request: GenerationRequest) -> dict[str, Any]:
        """The `synthesize` keywords for `request`: each video control named like a request source
        (`REQUEST_SOURCES`) gets it, the other controls their defaults. Override to map differently."""
        sources = {c.name: c.default for c in self.controls}
        for c in self.controls:
            if c.kind == "video" and c.name in REQUEST_SOURCES:
                sources[c.name] = getattr(request, c.name)
        if self.reference_video:
            video = request.reference_video
            sources["reference_video"] = None if video is None else video.first(self.max_reference_frames)
        return sources

    def generate(self, request: GenerationRequest) -> torch.Tensor:
        """`GenerationRequest` -> (T, 3, H, W) frames in [0, 1] (T = request.num_frames)."""
        import torch

        chunks = self.synthesize(request.reference, request.audio, request.num_frames, **self.request_sources(request))
        frames = torch.cat(list(chunks), dim=0)
        if len(frames) != request.num_frames:
            raise ValueError(f"{self.name}: generated {len(frames)} frames for {request.clip_id}, "
                             f"expected {request.num_frames}")
        return frames

    def generate_file(self, reference_path: str | Path, audio_path: str | Path, out: str | Path,
                      **control_values: Any) -> Path:
        """Files in, mp4 out: read and align the reference (`read_reference`; with ``reference_video``
        its first ``max_reference_frames`` frames, `read_reference_video`), read the audio
        (`read_audio`; T = `num_frames_for(N)`), read each given control by its kind (video:
        `read_driving_video(path, T, loop_sources)`, image: `read_reference`), `synthesize`, and write `out`
        (`write_talking_head`: 25 fps, 224 px, the driving audio muxed). Returns `out`."""
        import torch

        values = self.check_inputs(reference_path, audio_path, **control_values)
        extra: dict[str, Any] = {}
        if self.reference_video:
            video = read_reference_video(reference_path, self.max_reference_frames)
            reference, extra["reference_video"] = video.frames[0], video
        else:
            reference = read_reference(reference_path)
        wav = read_audio(audio_path)
        num_frames = num_frames_for(len(wav))
        sources: dict[str, Any] = {}
        for c in self.controls:
            value = values[c.name]
            if c.kind == "video":
                value = read_driving_video(value, num_frames, self.loop_sources) if value is not None else None
            elif c.kind == "image":
                value = read_reference(value) if value is not None else None
            elif c.kind == "flag":
                value = bool(value)
            elif c.kind == "float":
                value = float(value) if value is not None else None
            elif c.kind == "int":
                value = int(value) if value is not None else None
            sources[c.name] = value
        chunks = self.synthesize(reference, torch.from_numpy(wav), num_frames, **sources, **extra)
        return write_talking_head(out, chunks, wav, num_frames)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def build_parser(generator_class: type[Generator], prog: str | None = None, default_checkpoint_hint: str = "",
                 *, description: str | None = None) -> argparse.ArgumentParser:
    """``--checkpoint --reference --audio --out --device`` and one option per declared control
    (controls sharing a group in a mutually exclusive group). `prog` defaults to ``talkinghead
    generate --method <name>``, `description` to the class docstring's first line."""
    name = generator_class.name or generator_class.__name__
    prog = prog or f"talkinghead generate --method {name}"
    if description is None:
        description = (generator_class.__doc__ or name).strip().splitlines()[0]
    parser = argparse.ArgumentParser(prog=prog, description=description)
    hint = f" (default: {default_checkpoint_hint})" if default_checkpoint_hint else ""
    parser.add_argument("--checkpoint", default=None, help=f"checkpoint file or weights folder{hint}")
    if generator_class.reference_video:
        parser.add_argument("--reference", required=True,
                            help="reference video (its first frames: appearance and head-motion style) or an image")
    else:
        parser.add_argument("--reference", required=True, help="image or video (first frame) of the identity")
    parser.add_argument("--audio", required=True, help="driving audio (any file ffmpeg reads)")
    parser.add_argument("--out", required=True, help="output mp4")
    groups: dict[str, Any] = {}
    for c in generator_class.controls:
        target = parser
        if c.group is not None:
            if c.group not in groups:
                groups[c.group] = parser.add_mutually_exclusive_group()
            target = groups[c.group]
        if c.kind == "flag":
            target.add_argument(c.option, dest=c.name, action="store_true", help=c.help)
        elif c.kind == "choice":
            target.add_argument(c.option, dest=c.name, choices=c.choices, default=c.default, help=c.help)
        elif c.kind == "float":
            target.add_argument(c.option, dest=c.name, type=float, default=c.default, help=c.help)
        elif c.kind == "int":
            target.add_argument(c.option, dest=c.name, type=int, default=c.default, metavar="N", help=c.help)
        else:
            target.add_argument(c.option, dest=c.name, default=None, metavar=c.kind.upper(), help=c.help)
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def main(generator_class: type[Generator], argv: list[str] | None = None, *,
         load: Callable[[Path | None, str], Generator] | None = None, prog: str | None = None,
         default_checkpoint: Callable[[], Path | None] | None = None, train_hint: str = "",
         default_checkpoint_hint: str = "", description: str | None = None) -> int:
    """Run the command line of `generator_class` (see `build_parser`): 0 and "wrote OUT" on success,
    1 and one error line (no traceback) for a missing file or bad input (FileNotFoundError /
    ValueError).

    load:               ``load(checkpoint, device) -> generator`` (default ``generator_class.from_checkpoint``).
    default_checkpoint: ``() -> Path | None``, the checkpoint used without --checkpoint (e.g.
                        ``lambda: default_checkpoint("pcavs", "full")``); when given and it finds
                        none, a usage error (exit 2) telling to run `train_hint` (e.g. ``make train
                        METHOD=pcavs``). Without it, a missing --checkpoint reaches `load` as None.
    default_checkpoint_hint: where the default checkpoint is, for --help and that error.
    """
    hint = default_checkpoint_hint
    if not hint and default_checkpoint is not None:
        hint = f"the final checkpoint of `{train_hint}`" if train_hint else "the last trained checkpoint"
    parser = build_parser(generator_class, prog, hint, description=description)
    args = parser.parse_args(None if argv is None else [a for a in argv if a != "--"])  # `talkinghead generate -- ...`
    load = load or generator_class.from_checkpoint
    values = {c.name: getattr(args, c.name) for c in generator_class.controls}
    checkpoint = Path(args.checkpoint) if args.checkpoint is not None else None
    if checkpoint is None and default_checkpoint is not None:
        checkpoint = default_checkpoint()
        if checkpoint is None:
            where = f" ({default_checkpoint_hint})" if default_checkpoint_hint else ""
            todo = f"run `{train_hint}` first" if train_hint else "train one first"
            parser.error(f"no --checkpoint given and no trained checkpoint found{where}; {todo}")
    try:
        generator_class.check_inputs(args.reference, args.audio, **values)
        generator = load(checkpoint, args.device)
        path = generator.generate_file(args.reference, args.audio, args.out, **values)
    except (FileNotFoundError, ValueError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
