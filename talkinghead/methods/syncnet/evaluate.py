"""Does a SyncNet expert measure lip sync? Two checks on held-out clips of a store.

    python -m talkinghead.methods.syncnet.evaluate --store data/store/synth-vox2
    python -m talkinghead.methods.syncnet.evaluate --store S --checkpoint path/to/syncnet_expert.pt

(a) Planted offsets: for every clip of the split and every planted offset o in --offsets (frames;
    default -5 .. 5), shift the audio against the video by o frames and check that
    `sync_scores(...).offset` recovers o within +-tolerance (default 1) frame. Planting o > 0 drops
    the first o x 640 audio samples (the audio then leads the video by o frames: SyncNet's positive
    offset); o < 0 drops the first |o| video frames. Nothing is zero-filled.
(b) Shuffled audio: LSE-C of each clip with its own audio vs with the audio of a clip of another
    speaker (clip i takes the audio of clip i + n/2, or the next one of another speaker).

Without --checkpoint the store's default expert (`default_expert_path(store)`) is used; --official
scores with the official syncnet_v2 instead (needs the file).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from talkinghead.data.store import ClipStore
from talkinghead.metrics.lse import SAMPLES_PER_FRAME, sync_scores
from talkinghead.nn.syncnet import FusedSyncNet, SyncNet

__all__ = ["evaluate_expert", "plant_offset"]


def plant_offset(frames: torch.Tensor, audio: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift audio against video so that SyncNet should report `offset` (frames; positive = audio leads).

    offset > 0 drops the first offset x 640 audio samples; offset < 0 drops the first |offset| frames.
    """
    if offset > 0:
        return frames, audio[offset * SAMPLES_PER_FRAME:]
    if offset < 0:
        return frames[-offset:], audio
    return frames, audio


def _partners(entries: list[dict]) -> list[int]:
    """For clip i, a clip of another speaker, starting the search at i + n/2."""
    n = len(entries)
    out = []
    for i, entry in enumerate(entries):
        for step in range(n):
            j = (i + n // 2 + step) % n
            if entries[j]["speaker"] != entry["speaker"]:
                out.append(j)
                break
        else:
            raise ValueError("shuffled-audio check needs clips of at least two speakers")
    return out


def evaluate_expert(
    net: SyncNet,
    store: str | Path | ClipStore,
    split: str = "test",
    offsets: Sequence[int] = tuple(range(-5, 6)),
    tolerance: int = 1,
    batch_size: int = 256,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run checks (a) and (b) (module docstring) on `split` of `store`; returns the numbers.

    Keys: clips, planted (list of {clip, planted, found}), offset_within_tolerance (fraction),
    offset_exact (fraction), lse_c_real / lse_c_shuffled / lse_d_real / lse_d_shuffled (means),
    real_beats_shuffled (fraction of clips whose real LSE-C is higher), seconds.
    """
    source = store if isinstance(store, ClipStore) else ClipStore(store)
    entries = source.clips(split)[: limit or None]
    if len(entries) < 2:
        raise ValueError(f"{source.root}: split {split!r} has {len(entries)} clips; the checks need >= 2")
    started = time.perf_counter()
    fused = FusedSyncNet(net.eval())
    clips = []
    for entry in entries:
        frames = torch.from_numpy(source.load_frames(entry, range(int(entry["num_frames"]))))  # uint8 (T, H, W, 3)
        audio = torch.from_numpy(source.load(entry, ["audio"])["audio"])
        clips.append((entry["clip_id"], frames, audio))

    planted = []
    for clip_id, frames, audio in clips:
        for o in offsets:
            f, a = plant_offset(frames, audio, int(o))
            found = sync_scores(fused, f, a, batch_size=batch_size).offset
            planted.append({"clip": clip_id, "planted": int(o), "found": int(found)})
    errors = np.array([abs(p["found"] - p["planted"]) for p in planted])

    real, shuffled = [], []
    for i, j in enumerate(_partners(entries)):
        real.append(sync_scores(fused, clips[i][1], clips[i][2], batch_size=batch_size))
        shuffled.append(sync_scores(fused, clips[i][1], clips[j][2], batch_size=batch_size))
    conf_real = np.array([s.confidence for s in real])
    conf_shuf = np.array([s.confidence for s in shuffled])
    return {
        "split": split,
        "clips": len(clips),
        "offsets": [int(o) for o in offsets],
        "tolerance": int(tolerance),
        "planted": planted,
        "offset_within_tolerance": float(np.mean(errors <= tolerance)),
        "offset_exact": float(np.mean(errors == 0)),
        "lse_c_real": float(conf_real.mean()),
        "lse_c_shuffled": float(conf_shuf.mean()),
        "lse_d_real": float(np.mean([s.min_distance for s in real])),
        "lse_d_shuffled": float(np.mean([s.min_distance for s in shuffled])),
        "real_beats_shuffled": float(np.mean(conf_real > conf_shuf)),
        "real_offset_zero": float(np.mean([abs(s.offset) <= tolerance for s in real])),
        "seconds": time.perf_counter() - started,
    }


def report(result: dict[str, Any], name: str) -> str:
    """Human-readable summary of `evaluate_expert`'s result."""
    n = result["clips"]
    per = {}
    for p in result["planted"]:
        per.setdefault(p["planted"], []).append(abs(p["found"] - p["planted"]) <= result["tolerance"])
    per_text = ", ".join(f"{o:+d}: {np.mean(v):.0%}" for o, v in sorted(per.items()))
    return "\n".join([
        f"{name} on {n} held-out clips (split {result['split']!r}), {result['seconds']:.0f} s",
        f"(a) planted offsets {min(result['offsets'])}..{max(result['offsets'])} recovered within "
        f"+-{result['tolerance']} frame: {result['offset_within_tolerance']:.1%} of {len(result['planted'])} "
        f"(exact: {result['offset_exact']:.1%}); per offset: {per_text}",
        f"(b) LSE-C real {result['lse_c_real']:.3f} vs shuffled audio {result['lse_c_shuffled']:.3f} "
        f"(real higher in {result['real_beats_shuffled']:.0%} of clips); LSE-D real {result['lse_d_real']:.3f} vs "
        f"shuffled {result['lse_d_shuffled']:.3f}",
    ])


def main(argv: list[str] | None = None) -> int:
    from talkinghead.metrics.syncnet_expert import OFFICIAL_NAME, default_expert_path, load_expert, load_official

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=None, help="expert file (default: the store's)")
    parser.add_argument("--official", action="store_true", help="score with the official syncnet_v2 instead")
    parser.add_argument("--split", default="test")
    parser.add_argument("--offsets", type=int, nargs="+", default=list(range(-5, 6)))
    parser.add_argument("--tolerance", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument("--json", type=Path, default=None, help="also write the full result here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest for a tiny "
                        "expert on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.official:
        net, name = load_official(), OFFICIAL_NAME
    else:
        net, name = load_expert(args.checkpoint or default_expert_path(args.store))
    torch.set_grad_enabled(False)
    result = evaluate_expert(net, args.store, split=args.split, offsets=args.offsets, tolerance=args.tolerance,
                             limit=args.limit)
    print(report(result, name))
    if args.json is not None:
        args.json.write_text(json.dumps(dict(result, syncnet=name), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
