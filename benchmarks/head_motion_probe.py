"""Rhythmic Head's head motion before rendering: Phi's predicted poses against the real ones.

    python benchmarks/head_motion_probe.py runs/rhythmic/head_motion/checkpoints/last.ckpt
    python benchmarks/head_motion_probe.py RUN/joint/checkpoints/last.ckpt --protocol synth-large-rhythmic --clips 8

The bench's head-motion columns (`talkinghead.metrics.head_motion`) score poses estimated from the
generated frames, so they mix what Phi predicts with how well Theta renders it and how well dlib
reads it back. This script scores Phi alone: on the protocol's clips (the first P frames are the
reference video, as the bench's), `RhythmicGenerator.predicted_poses` (what generation gives
Theta) against the store's poses of the frames after the reference, with the same
`head_motion_scores` (HM-rot degrees, HM-trans px at 224, HM-speed / HM-speed-std deg/s, HM-audio),
beside the two baselines of the bench at the pose level: ``static`` (the reference's first pose held,
as the repeated reference frame) and ``reference_replay`` (the reference poses played back and
forth in the bench baseline's order). Also printed: the mean angular speed (deg/s) of each, and of the real motion. Any
checkpoint from the ``head_motion`` stage on carries Phi. Seconds for 12 clips.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkinghead.bench.methods import ReferenceReplay  # noqa: E402
from talkinghead.bench.protocol import get_protocol, load_clip, select_clips  # noqa: E402
from talkinghead.data.store import ClipStore  # noqa: E402
from talkinghead.methods.rhythmic.generate import RhythmicGenerator  # noqa: E402
from talkinghead.metrics.head_motion import COLUMNS, angular_speed, head_motion_scores, smooth_poses  # noqa: E402

ROWS = ("static", "reference_replay", "phi")


def mean_speed(poses: np.ndarray) -> float:
    """Mean angular speed (deg/s) of (T, 6) poses, smoothed as the head-motion columns smooth them."""
    return float(np.nanmean(angular_speed(smooth_poses(poses, 5))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a Rhythmic Head checkpoint of the head_motion stage or later")
    parser.add_argument("--protocol", default="synth-rhythmic", help="a protocol with reference videos")
    parser.add_argument("--store", default=None, help="the protocol's store (default: its own)")
    parser.add_argument("--clips", type=int, default=12)
    args = parser.parse_args(argv)
    protocol = get_protocol(args.protocol, store=args.store, num_clips=args.clips)
    if protocol.reference_frames < 1:
        parser.error(f"protocol {args.protocol} has no reference video (reference_frames 0)")
    if not (Path(protocol.store) / "index.json").is_file():
        parser.error(f"no clip store at {protocol.store} (no index.json): run `make data` first")
    store = ClipStore(protocol.store)
    generator = RhythmicGenerator.from_checkpoint(args.checkpoint)
    selections, _ = select_clips(store, protocol)
    scores: dict[str, list[dict]] = {row: [] for row in ROWS}
    speeds: dict[str, list[float]] = {row: [] for row in (*ROWS, "real")}
    p = protocol.reference_frames
    for selection in selections:
        request = load_clip(store, selection).request
        real = np.asarray(store.load(selection.entry, ["pose"])["pose"], np.float64)[p:p + request.num_frames]
        reference = request.reference_video.poses.numpy().astype(np.float64)
        with torch.no_grad():
            phi = generator.predicted_poses(request.reference_video, request.audio, request.num_frames)
        replayed = reference[ReferenceReplay.replay_index(len(real), len(reference)).numpy()]
        rows = {"static": np.repeat(reference[:1], len(real), axis=0), "reference_replay": replayed,
                "phi": phi.numpy().astype(np.float64)}
        audio = request.audio.numpy()
        for row, poses in rows.items():
            scores[row].append(head_motion_scores(poses, real, audio))
            speeds[row].append(mean_speed(poses))
        speeds["real"].append(mean_speed(real))
    print(f"{args.checkpoint}: Phi's poses on {len(selections)} clips of {args.protocol} ({protocol.store}), "
          f"reference {p} frames")
    print(f"| row | {' | '.join(COLUMNS)} | mean speed deg/s |")
    print("|:---|" + "---:|" * (len(COLUMNS) + 1))
    for row in ROWS:
        values = [np.nanmean([s[c] for s in scores[row]]) for c in COLUMNS]
        print(f"| {row} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(speeds[row]):.2f} |")
    print(f"| real | " + " | ".join("0" for _ in COLUMNS) + f" | {np.mean(speeds['real']):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
