"""SynthTalk head motion, natural and large: the pose ranges, and whether preprocessing copes.

    python benchmarks/motion.py                  # 12 test identities, one 3 s clip each, both motions
    python benchmarks/motion.py --motions large --identities 24

For each motion (`talkinghead.data.synthtalk.generate.MOTIONS`) a small VoxCeleb2-layout corpus is
written to a temporary folder with the real writer (mp4 + m4a) and preprocessed with the real
pipeline (dlib 68 landmarks, alignment), then the store is read back and printed:
* the true head pose ranges: pitch / yaw / roll in degrees (min, max, and the 5th-95th percentile
  span), translation of the eye midpoint and scale change (max / min);
* dlib's detection rate over all frames and over frames with |yaw| > 25 degrees, and the clips
  stored (a clip with a face, detected or tracked, in under half of its frames is not);
* the frames tracked from their neighbours (`faces.track_missing`) and the frames interpolated;
* the landmark error: mean distance (px, aligned 224 frames) of the store's landmarks to the exact
  ground truth, over frames where dlib found the face, over tracked and interpolated frames, and
  over all frames, and per clip: the worst clip's mean error over its detected frames and how many
  clips exceed 6 px (a face dlib misreads: one such clip dominates a bench's mean LMD);
* the head-pose fit (`faces.estimate_head_pose` on the store's landmarks, the store's ``pose``, all
  frames) against
  the true pose mapped into the aligned frames (``truth_pose``): mean absolute error in degrees.
About 1.5 min per motion on two cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkinghead.data.preprocess import preprocess_corpus  # noqa: E402
from talkinghead.data.store import ClipStore  # noqa: E402
from talkinghead.data.synthtalk import puppet  # noqa: E402
from talkinghead.data.synthtalk.generate import MOTIONS, SynthConfig, generate  # noqa: E402

WIDE_YAW = np.radians(25.0)


MISREAD_CLIP_ERROR = 6.0  # px: a clip whose detected landmarks are this far from the truth on average


def measure(motion: str, identities: int, seed: int, workers: int, folder: Path,
            candidates: int = puppet.CANDIDATES) -> dict:
    raw, store_root = folder / f"raw-{motion}", folder / f"store-{motion}"
    config = SynthConfig(layout="vox2", train_identities=0, test_identities=identities, clips_per_video=1,
                         motion=motion, seed=seed, identity_candidates=candidates)
    generate(raw, config, workers=workers, progress=False)
    report = preprocess_corpus("vox2", raw, store_root, workers=workers, progress=False)
    store = ClipStore(store_root)
    keys = ["truth_raw_pose", "truth_pose", "pose", "landmarks", "landmarks_found", "landmarks_tracked",
            "truth_landmarks"]
    rows = {k: [] for k in keys}
    clip_errors = []
    for entry in store.clips():
        arrays = store.load(entry, keys[1:])
        for k in keys[1:]:
            rows[k].append(np.asarray(arrays[k]))
        detected = np.asarray(arrays["landmarks_found"]).astype(bool)
        if detected.any():
            distance = np.linalg.norm(np.asarray(arrays["landmarks"]) - np.asarray(arrays["truth_landmarks"]), axis=-1)
            clip_errors.append(float(distance[detected].mean()))
    # the raw-frame truth of every clip written, stored or not (what the motion generator drew)
    for truth_file in sorted(raw.rglob("*.truth.npz")):
        with np.load(truth_file) as truth:
            rows["truth_raw_pose"].append(truth["pose"])
    cat = {k: np.concatenate(v) for k, v in rows.items() if v}
    angles = np.degrees(cat["truth_raw_pose"][:, :3])
    found = cat["landmarks_found"].astype(bool)
    tracked = cat["landmarks_tracked"].astype(bool)
    filled = ~found & ~tracked
    yaw = cat["truth_pose"][:, 1]
    error = np.linalg.norm(cat["landmarks"] - cat["truth_landmarks"], axis=-1).mean(-1)
    pose_error = np.degrees(np.abs(cat["pose"][:, :3] - cat["truth_pose"][:, :3])).mean(0)

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else float("nan")

    translation = cat["truth_raw_pose"][:, 3:5]
    scale = np.exp(cat["truth_raw_pose"][:, 5])
    return {
        "motion": motion, "clips": report["clips"], "stored": len(store.clips()), "failed": len(report["failed"]),
        "angles": angles, "translation": np.ptp(translation, axis=0), "scale": scale.max() / scale.min(),
        "detected": found.mean(), "detected_wide": found[np.abs(yaw) > WIDE_YAW].mean() if (np.abs(yaw) > WIDE_YAW).any()
        else float("nan"), "wide_frames": int((np.abs(yaw) > WIDE_YAW).sum()), "frames": len(found),
        "tracked": tracked.mean(), "filled": filled.mean(),
        "landmark_error": mean(error[found]), "landmark_error_p95": np.percentile(error[found], 95),
        "tracked_error": mean(error[tracked]), "filled_error": mean(error[filled]), "all_error": mean(error),
        "pose_error": pose_error, "clip_error_max": max(clip_errors, default=float("nan")),
        "misread_clips": sum(e > MISREAD_CLIP_ERROR for e in clip_errors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--motions", nargs="+", choices=MOTIONS, default=list(MOTIONS))
    parser.add_argument("--identities", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--identity-candidates", type=int, default=puppet.CANDIDATES,
                        help="draws per identity the corpus chooses from (1: the first usable draw, no choice)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for motion in args.motions:
            start = time.perf_counter()
            r = measure(motion, args.identities, args.seed, args.workers, Path(tmp), args.identity_candidates)
            a = r["angles"]
            print(f"motion {motion}: {r['stored']}/{r['clips']} clips stored ({r['failed']} rejected), "
                  f"{r['frames']} frames, {time.perf_counter() - start:.0f} s")
            for k, name in enumerate(("pitch", "yaw", "roll")):
                lo, hi = np.percentile(a[:, k], [5, 95])
                print(f"  {name:5s} {a[:, k].min():+6.1f} .. {a[:, k].max():+6.1f} deg (5-95%: {lo:+6.1f} .. {hi:+6.1f})")
            print(f"  eye-midpoint travel {r['translation'][0]:.1f} x {r['translation'][1]:.1f} px, "
                  f"scale max/min {r['scale']:.2f}")
            print(f"  dlib detection {100 * r['detected']:.1f}% of frames; |yaw| > 25 deg: "
                  f"{100 * r['detected_wide']:.1f}% of {r['wide_frames']} frames; tracked "
                  f"{100 * r['tracked']:.1f}%, interpolated {100 * r['filled']:.1f}%")
            print(f"  landmark error against the exact ground truth (aligned 224 px): detected "
                  f"{r['landmark_error']:.2f} px (95th percentile {r['landmark_error_p95']:.2f}), tracked "
                  f"{r['tracked_error']:.2f}, interpolated {r['filled_error']:.2f}, all frames {r['all_error']:.2f}; "
                  f"worst clip {r['clip_error_max']:.2f}, {r['misread_clips']} clips above {MISREAD_CLIP_ERROR:.0f} px")
            print("  pose fit error pitch / yaw / roll: " + " / ".join(f"{e:.1f}" for e in r["pose_error"]) + " deg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
