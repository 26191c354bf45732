"""The clip record every corpus reader returns, and the registry of readers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# Frame rate and sample rate every processed clip is converted to.
FPS = 25
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Clip:
    """One utterance of a corpus, as found on disk.

    dataset:  corpus name ('vox2', 'lrw', 'mead').
    clip_id:  unique within the corpus, '/'-separated, e.g. 'id00012/abcdEFGH/00001'.
    video:    the mp4.
    audio:    a separate audio file (VoxCeleb2 aac/, MEAD audio/) or None: use the mp4's track.
    speaker:  speaker / actor id; identity labels come from it.
    split:    'train', 'val' or 'test' (VoxCeleb2 dev -> train).
    labels:   dataset labels: LRW {'word', 'word_start', 'word_end'} (seconds),
              MEAD {'emotion', 'level', 'view'}; empty for VoxCeleb2.
    truth:    SynthTalk ground-truth file beside the clip (`<stem>.truth.npz`), else None.
    """

    dataset: str
    clip_id: str
    video: Path
    audio: Path | None
    speaker: str
    split: str
    labels: dict = field(default_factory=dict, compare=False, hash=False)
    truth: Path | None = None


def truth_path(video: Path) -> Path | None:
    """The SynthTalk ground-truth file beside `video`, if there is one."""
    candidate = video.with_name(video.stem + ".truth.npz")
    return candidate if candidate.exists() else None


Reader = Callable[[Path], list[Clip]]
READERS: dict[str, Reader] = {}


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Decorator: register a corpus reader `fn(root) -> list[Clip]` under `name`."""

    def wrap(fn: Reader) -> Reader:
        READERS[name] = fn
        return fn

    return wrap


def read_corpus(name: str, root: str | Path) -> list[Clip]:
    """Index corpus `name` under `root`; clips sorted by clip_id. Unknown names list the choices.

    Every built-in reader is registered: importing this module imports the package
    `talkinghead.data.corpora` first, and its ``__init__`` imports each reader module by name."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(READERS))}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: corpus folder not found")
    return sorted(READERS[name](root), key=lambda c: c.clip_id)
