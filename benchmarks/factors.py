"""How well the per-factor estimators (`talkinghead.metrics.factors`) read SynthTalk's ground truth.

    python benchmarks/factors.py                  # test identities 48-59, 40 frames each per motion
    python benchmarks/factors.py --identities 48 49 --frames 20

Per identity, `generate.factor_sweep` renders frames whose mouth, blink and gaze are drawn
independently per frame and whose head follows a natural or a large-motion track; dlib's landmarks
are detected on them as the bench does, and every estimator is compared with the truth it should
follow: Pearson r of mouth_open with the true opening, pitch / yaw / roll with the true rotation,
eye_closure with the blink, gaze_x / gaze_y with the gaze, and the pose error in degrees. Printed:
the median and the worst r over identities, per factor and motion.

Expression: per identity, 6 frames of each SynthTalk emotion at level 3, every emotion with the same
(random) pose, mouth, blink and gaze tracks, so the emotion is the only difference; the expression features minus that identity's neutral mean are
classified by the nearest class centroid of the *other* identities (leave one identity out).
Printed: the accuracy over the 7 non-neutral emotions (chance 14 %) and the confusions.
About 2 min on two cores.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkinghead.data import faces  # noqa: E402
from talkinghead.data.synthtalk import puppet  # noqa: E402
from talkinghead.data.synthtalk.generate import MOTIONS, factor_sweep  # noqa: E402
from talkinghead.metrics.factors import emotion_accuracy, sweep_correlations  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, nargs="+", default=list(range(48, 60)))
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for motion in MOTIONS:
        table: dict[str, list[float]] = {}
        for ident in args.identities:
            frames, truth = factor_sweep(ident, args.seed, args.frames, motion)
            landmarks, found = faces.detect_landmarks(frames)
            for name, value in sweep_correlations(frames, landmarks, truth).items():
                table.setdefault(name, []).append(value)
        print(f"motion {motion} ({len(args.identities)} identities x {args.frames} frames):")
        for name, values in table.items():
            v = np.asarray(values)
            unit = "deg" if name.startswith("error") else "r"
            worst = int(np.nanargmin(v) if unit == "r" else np.nanargmax(v))
            print(f"  {name:18s} median {unit} {np.nanmedian(v):+.3f}   worst {v[worst]:+.3f} "
                  f"(identity {args.identities[worst]})")
    features: dict[int, dict[str, np.ndarray]] = {}  # identity -> emotion -> landmarks
    for ident in args.identities:
        features[ident] = {}
        for emotion in puppet.EMOTIONS:
            frames, _ = factor_sweep(ident, args.seed + 1, 6, "natural", emotion=emotion, level=3)
            features[ident][emotion] = faces.detect_landmarks(frames)[0]
    accuracy, confusions = emotion_accuracy(features)
    print(f"expression: nearest-centroid emotion accuracy {100 * accuracy:.1f}% (leave one identity out, "
          f"7 emotions, chance 14%)")
    for (truth, guess), count in sorted(confusions.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  {truth} read as {guess}: {count}")
    print(f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
