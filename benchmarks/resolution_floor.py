"""The landmark distance a method cannot go below at its output size (LMD's resolution floor).

    python benchmarks/resolution_floor.py                       # synth, 24 clips, 56 and 112 px
    python benchmarks/resolution_floor.py --sizes 56 --clips 8 --store data/store/synth-vox2

The CPU configurations generate small frames (PD-FGC's `synth.yaml` 56 px, PC-AVS's 112 px), which
generation resizes (bicubic) back to the clip's size before the bench scores them. dlib reads a
face that passed through 56 px less exactly than the original, so a method's LMD there has a floor
above 0 even if it drew every frame perfectly. For the bench's own clips (protocol ``synth``, the
same selection as ``talkinghead bench --dataset synth --clips N``), this script scores:

* ``ground_truth@S``: the real frames resized to S px and back (antialiased area-like downsampling,
  bicubic upsampling, as generation does), the best any method at S px can do;
* ``static`` and ``static@S``: the reference frame repeated, at full size and through S px;

against dlib's landmarks of the real frames, as the bench's LMD (mean over points, pixels of a
224 px frame, frames where either side has no face skipped). Columns: LMD (68 points), LMD-mouth
(points 48-67), its two parts ``mouth shape`` (each set of mouth points centred on its own mean)
and ``mouth offset`` (distance between the two mouth centres), and the share of frames with a
face found on both sides. A second table gives the factor-control columns (``ctl-*``, the bench's
`FactorControl` against the clip's own SynthTalk truth) of ``ground_truth`` and ``ground_truth@S``:
how well the estimators read mouth, pose, blink and gaze from frames that passed through S px, the
ceiling of a method's ctl-* at that size (``static`` scores 0 by definition). About 2 min for 24
clips on two quiet cores.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkinghead.bench.protocol import get_protocol, load_clip, select_clips  # noqa: E402
from talkinghead.data import faces  # noqa: E402
from talkinghead.data.store import ClipStore  # noqa: E402
from talkinghead.metrics.factors import FactorControl  # noqa: E402
from talkinghead.metrics.image import frames_to_uint8  # noqa: E402
from talkinghead.metrics.lmd import LANDMARK_SETS, REFERENCE_WIDTH  # noqa: E402

MOUTH = LANDMARK_SETS["LMD-mouth"]
CONTROL = ("ctl-mouth", "ctl-pose", "ctl-blink", "ctl-gaze")


def through_size(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> the same frames resized to `size` px and back (bicubic up)."""
    height, width = frames.shape[-2:]
    small = F.interpolate(frames.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(small, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def distances(fake: np.ndarray, real: np.ndarray, width: int) -> np.ndarray | None:
    """(T, 68, 2) landmarks (NaN rows: no face) -> [LMD, mouth, mouth shape, mouth offset, found
    share] for one clip, in pixels of a 224 px frame; None when no frame has both faces."""
    valid = np.isfinite(fake).all(axis=(1, 2)) & np.isfinite(real).all(axis=(1, 2))
    if not valid.any():
        return None
    scale = REFERENCE_WIDTH / width
    f, r = fake[valid].astype(np.float64), real[valid].astype(np.float64)
    per_point = np.linalg.norm(f - r, axis=-1) * scale
    fm, rm = f[:, MOUTH], r[:, MOUTH]
    f_centre, r_centre = fm.mean(axis=1, keepdims=True), rm.mean(axis=1, keepdims=True)
    shape = np.linalg.norm((fm - f_centre) - (rm - r_centre), axis=-1) * scale
    offset = np.linalg.norm(f_centre[:, 0] - r_centre[:, 0], axis=-1) * scale
    return np.array([per_point.mean(), per_point[:, MOUTH].mean(), shape.mean(), offset.mean(), valid.mean()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/store/synth-vox2")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--sizes", type=int, nargs="+", default=[56, 112])
    args = parser.parse_args(argv)
    if not (Path(args.store) / "index.json").is_file():
        parser.error(f"no clip store at {args.store} (no index.json): run `make data` first")
    start = time.perf_counter()
    store = ClipStore(args.store)
    selections, _ = select_clips(store, get_protocol("synth", store=args.store, num_clips=args.clips))
    rows: dict[str, list[np.ndarray]] = {}
    control: dict[str, FactorControl] = {}
    width = 0
    for selection in selections:
        clip = load_clip(store, selection)
        real = clip.real
        width = real.shape[-1]
        real_landmarks, _ = faces.detect_landmarks(frames_to_uint8(real))
        control.setdefault("ground_truth", FactorControl()).update(real, clip.driver_truth, real_landmarks)
        # static rows repeat one frame: detect it once and repeat its landmarks
        variants = {"static": real[:1]}
        for size in args.sizes:
            variants[f"ground_truth@{size}"] = through_size(real, size)
            variants[f"static@{size}"] = through_size(real[:1], size)
        for name, frames in variants.items():
            landmarks, _ = faces.detect_landmarks(frames_to_uint8(frames))
            landmarks = np.repeat(landmarks, len(real) // len(frames), axis=0)
            row = distances(landmarks, real_landmarks, width)
            if row is not None:
                rows.setdefault(name, []).append(row)
            if name.startswith("ground_truth"):
                control.setdefault(name, FactorControl()).update(frames, clip.driver_truth, landmarks)
    print(f"protocol synth, {len(selections)} clips of {args.store}, {width} px frames "
          f"(distances in pixels of a 224 px frame; {time.perf_counter() - start:.0f} s)")
    print(f"{'row':18s} {'LMD':>6s} {'LMD-mouth':>10s} {'mouth shape':>12s} {'mouth offset':>13s} "
          f"{'found':>6s} {'clips':>6s}")
    for name in sorted(rows, key=lambda n: (n.split("@")[0], int(n.split("@")[1]) if "@" in n else 10 ** 6)):
        mean = np.mean(rows[name], axis=0)
        print(f"{name:18s} {mean[0]:6.2f} {mean[1]:10.2f} {mean[2]:12.2f} {mean[3]:13.2f} "
              f"{mean[4]:6.2f} {len(rows[name]):6d}")
    print("\nfactor control of the real frames (the clip's own truth; the ceiling at each size)")
    print(f"{'row':18s} " + " ".join(f"{c:>10s}" for c in CONTROL))
    for name, metric in control.items():
        values = metric.compute()
        print(f"{name:18s} " + " ".join(f"{float(values[c]):10.3f}" for c in CONTROL))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
