"""LRW reader ('lrw').

Layout: `lipread_mp4/WORD/{train,val,test}/WORD_NNNNN.{mp4,txt}`; `root` may contain
`lipread_mp4/` or be it. Split from the folder name. clip_id 'WORD/split/WORD_NNNNN'.

Labels: {'word': WORD, 'duration': d, 'word_start': s, 'word_end': e} in seconds, where d
is parsed from the .txt line starting with 'Duration:' (the 5th line in real LRW, e.g.
`Duration: 0.53 seconds`). Every LRW clip is 29 frames (1.16 s) with the word centred, so
s = (1.16 - d) / 2 and e = s + d (clamped to [0, 1.16]). If the .txt is missing or has no
parsable Duration line, the clip is kept with labels {'word': WORD} only (no boundary, no
'duration'); consumers must treat the boundary as optional.

Speaker: LRW publishes no speaker ids (clips are cut from BBC broadcasts), so each clip is
its own identity: speaker = clip_id. Do not build identity-disjoint splits or same-speaker
pairs from LRW.
"""
from __future__ import annotations

import os
from pathlib import Path

from talkinghead.data.corpora.base import Clip, register_reader

CLIP_SECONDS = 1.16  # 29 frames at 25 fps
_SPLITS = ("train", "val", "test")
TRUTH_SUFFIX = ".truth.npz"


def parse_duration(text: str) -> float | None:
    """Seconds from the first line starting with 'Duration:' ('Duration: 0.53 seconds')."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Duration:"):
            parts = line[len("Duration:"):].split()
            try:
                d = float(parts[0])
            except (IndexError, ValueError):
                return None
            return d if d >= 0 else None
    return None


def word_boundary(duration: float) -> tuple[float, float]:
    """(start, end) seconds of a word of `duration` s centred in the 1.16 s LRW clip."""
    start = (CLIP_SECONDS - duration) / 2
    end = start + duration
    return max(0.0, start), min(CLIP_SECONDS, end)


def _labels(word: str, txt: Path | None) -> dict:
    labels: dict = {"word": word}
    if txt is None:
        return labels
    try:
        d = parse_duration(txt.read_text(errors="replace"))
    except OSError:
        d = None
    if d is not None:
        s, e = word_boundary(d)
        labels.update(duration=d, word_start=s, word_end=e)
    return labels


def _base(root: Path) -> Path:
    inner = root / "lipread_mp4"
    return inner if inner.is_dir() else root


@register_reader("lrw")
def read_lrw(root: Path) -> list[Clip]:
    """Index LRW under `root`; see the module docstring."""
    base = _base(Path(root))
    clips: list[Clip] = []
    with os.scandir(base) as it:
        words = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    for word in words:
        for split in _SPLITS:
            d = base / word / split
            try:
                with os.scandir(d) as it:
                    names = {e.name for e in it if e.is_file()}
            except (FileNotFoundError, NotADirectoryError):
                continue
            prefix = word + "_"
            for name in sorted(names):
                if not (name.endswith(".mp4") and name.startswith(prefix)):
                    continue
                stem = name[:-4]
                txt = stem + ".txt"
                truth = stem + TRUTH_SUFFIX
                clip_id = f"{word}/{split}/{stem}"
                clips.append(Clip(
                    dataset="lrw",
                    clip_id=clip_id,
                    video=d / name,
                    audio=None,
                    speaker=clip_id,
                    split=split,
                    labels=_labels(word, d / txt if txt in names else None),
                    truth=d / truth if truth in names else None,
                ))
    return clips
