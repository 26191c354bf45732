"""Where a clip store's clips come from: SynthTalk (the synthetic corpus) or a real recording.

`synthtalk_evidence(store)` says why a store is SynthTalk, or None when nothing says so. The
evidence, tried in order:

1. the raw corpus the store was made from (``report.json``'s ``root``, written by
   `talkinghead.data.preprocess.preprocess_corpus`) holds ``synthtalk.json``, the file the
   SynthTalk generator writes beside its clips (`talkinghead.data.synthtalk.generate`);
2. the store's clips carry SynthTalk ground truth (``truth_*`` arrays), which only SynthTalk
   clips have (`talkinghead.data.store`): this still holds after the raw corpus is deleted or
   moved, or for a store copied elsewhere.

A store with neither (a preprocessed VoxCeleb2, LRW or MEAD) is taken as the real corpus.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

__all__ = ["SYNTHTALK_MARKER", "synthtalk_evidence"]

#: written by the SynthTalk generator at the root of every corpus it makes
SYNTHTALK_MARKER = "synthtalk.json"


def _report_root(store: Path) -> Path | None:
    try:
        root = json.loads((store / "report.json").read_text()).get("root")
    except (OSError, ValueError, AttributeError):
        return None
    if not root:
        return None
    root = Path(root)
    return root if root.is_absolute() else Path.cwd() / root


def _clip_arrays(store: Path, limit: int = 3) -> list[list[str]]:
    """The array names of the store's first `limit` clips (read from the npz directories only)."""
    try:
        entries = json.loads((store / "index.json").read_text())
    except (OSError, ValueError):
        return []
    names = []
    for entry in entries[:limit] if isinstance(entries, list) else []:
        try:
            with zipfile.ZipFile(store / entry["file"]) as archive:
                names.append([n[:-4] if n.endswith(".npy") else n for n in archive.namelist()])
        except (OSError, KeyError, TypeError, zipfile.BadZipFile):
            continue
    return names


def synthtalk_evidence(store: str | Path) -> str | None:
    """Why the clip store `store` is SynthTalk (one sentence), or None (module docstring)."""
    store = Path(store)
    root = _report_root(store)
    if root is not None and (root / SYNTHTALK_MARKER).is_file():
        return f"its raw corpus {root} holds {SYNTHTALK_MARKER}, written by the SynthTalk generator"
    for names in _clip_arrays(store):
        truth = sorted(n for n in names if n.startswith("truth_"))
        if truth:
            return f"its clips carry SynthTalk ground truth ({', '.join(truth[:3])}, ...)"
    return None
