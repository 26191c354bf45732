"""MEAD reader ('mead').

Layout: `<actor>/video/<view>/<emotion>/level_<n>/NNN.mp4` with the audio shared by all
views at `<actor>/audio/<emotion>/level_<n>/NNN.m4a` (Clip.audio when present, else None).
`root` is a folder of actor folders, or a single actor folder (one holding `video/`).

clip_id 'actor/view/emotion/level_n/NNN'; speaker = actor; labels {'emotion', 'level'
(int), 'view'}.

Split: MEAD has no official split, so `mead_split(actor)` assigns whole actors (identity-
disjoint) by a stable hash of the actor name: zlib.crc32(actor) % 10 == 0 -> 'test',
== 1 -> 'val', otherwise 'train'. It depends only on the name, so it is the same on every
machine, every Python run and every subset of actors (unlike a cut of a sorted list).
About 10 % of actors land in test and 10 % in val; a small subset may have none in either.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

from talkinghead.data.corpora.base import Clip, register_reader

TRUTH_SUFFIX = ".truth.npz"


def mead_split(actor: str) -> str:
    """'test' if crc32(actor) % 10 == 0, 'val' if == 1, else 'train' (stable, actor-level)."""
    bucket = zlib.crc32(actor.encode("utf-8")) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def _subdirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _files(path: Path) -> set[str]:
    try:
        with os.scandir(path) as it:
            return {e.name for e in it if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _level(name: str) -> int | None:
    if not name.startswith("level_"):
        return None
    try:
        return int(name[len("level_"):])
    except ValueError:
        return None


def _read_actor(actor_dir: Path, actor: str) -> list[Clip]:
    clips: list[Clip] = []
    split = mead_split(actor)
    audio_cache: dict[tuple[str, str], set[str]] = {}
    for view in _subdirs(actor_dir / "video"):
        for emotion in _subdirs(actor_dir / "video" / view):
            for level_name in _subdirs(actor_dir / "video" / view / emotion):
                level = _level(level_name)
                if level is None:
                    continue
                d = actor_dir / "video" / view / emotion / level_name
                names = _files(d)
                adir = actor_dir / "audio" / emotion / level_name
                key = (emotion, level_name)
                if key not in audio_cache:
                    audio_cache[key] = _files(adir)
                anames = audio_cache[key]
                for name in sorted(names):
                    if not name.endswith(".mp4") or name.startswith("."):
                        continue
                    stem = name[:-4]
                    truth = stem + TRUTH_SUFFIX
                    clips.append(Clip(
                        dataset="mead",
                        clip_id=f"{actor}/{view}/{emotion}/{level_name}/{stem}",
                        video=d / name,
                        audio=adir / (stem + ".m4a") if stem + ".m4a" in anames else None,
                        speaker=actor,
                        split=split,
                        labels={"emotion": emotion, "level": level, "view": view},
                        truth=d / truth if truth in names else None,
                    ))
    return clips


@register_reader("mead")
def read_mead(root: Path) -> list[Clip]:
    """Index MEAD under `root`; see the module docstring."""
    root = Path(root)
    if (root / "video").is_dir():
        return _read_actor(root, root.name)
    clips: list[Clip] = []
    for actor in _subdirs(root):
        if (root / actor / "video").is_dir():
            clips.extend(_read_actor(root / actor, actor))
    return clips
