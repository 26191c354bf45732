"""VoxCeleb2 reader ('vox2').

Layout (under `root`)::

    {dev,test}/mp4/idNNNNN/<youtube_id>/NNNNN.mp4
    {dev,test}/aac/idNNNNN/<youtube_id>/NNNNN.m4a     (optional audio twin)

`root` may also be the `dev/` or `test/` folder itself. Split: dev -> 'train',
test -> 'test' (test identities are unseen in training). clip_id 'idNNNNN/<video>/NNNNN',
speaker 'idNNNNN', labels empty. Indexing only lists folders (fixed depth, no decoding,
no per-clip stat calls), so a million clips index quickly.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from talkinghead.data.corpora.base import Clip, register_reader

_SPLITS = {"dev": "train", "test": "test"}
_SPEAKER = re.compile(r"id\d+$")
TRUTH_SUFFIX = ".truth.npz"


def _subdirs(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if e.is_dir() and not e.name.startswith(".")),
                          key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _files(path: Path | str) -> set[str]:
    try:
        with os.scandir(path) as it:
            return {e.name for e in it if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _split_folders(root: Path) -> list[tuple[str, Path]]:
    """(split name, folder holding mp4/ and aac/) pairs found under root."""
    found = [(name, root / name) for name in _SPLITS if (root / name).is_dir()]
    if not found and root.name in _SPLITS and (root / "mp4").is_dir():
        found = [(root.name, root)]
    if not found:
        raise FileNotFoundError(
            f"{root}: no VoxCeleb2 data; expected dev/mp4/idNNNNN/<video>/NNNNN.mp4 "
            "and/or test/mp4/idNNNNN/<video>/NNNNN.mp4 (or root being dev/ or test/)")
    return found


@register_reader("vox2")
def read_vox2(root: Path) -> list[Clip]:
    """Index VoxCeleb2 under `root`; see the module docstring."""
    root = Path(root)
    clips: list[Clip] = []
    for split_dir_name, folder in _split_folders(root):
        split = _SPLITS[split_dir_name]
        mp4_root = folder / "mp4" if (folder / "mp4").is_dir() else folder
        aac_root = folder / "aac"
        for spk in _subdirs(mp4_root):
            if not _SPEAKER.match(spk.name):
                continue
            for vid in _subdirs(Path(spk.path)):
                names = _files(vid.path)
                aac_dir = aac_root / spk.name / vid.name
                aac_names = _files(aac_dir)
                vdir = Path(vid.path)
                for name in sorted(names):
                    if not name.endswith(".mp4") or name.startswith("."):
                        continue
                    stem = name[:-4]
                    truth = stem + TRUTH_SUFFIX
                    clips.append(Clip(
                        dataset="vox2",
                        clip_id=f"{spk.name}/{vid.name}/{stem}",
                        video=vdir / name,
                        audio=aac_dir / (stem + ".m4a") if stem + ".m4a" in aac_names else None,
                        speaker=spk.name,
                        split=split,
                        labels={},
                        truth=vdir / truth if truth in names else None,
                    ))
    return clips
