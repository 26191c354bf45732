"""Metric speed: our batched CPBD vs the reference port, then LSE, LMD and FID costs.

    python benchmarks/perf/metrics.py                 # defaults: ~1-2 minutes on two cores
    python benchmarks/perf/metrics.py --repeats 5 --clip-frames 50

Prints:
* CPBD per 224-px grayscale image: the reference port (PyPI ``cpbd-py312``, ``cpbd.compute``, one
  image at a time) against ours (`talkinghead.metrics.cpbd.cpbd_scores`, frames in batches of
  16 as the CPBD metric runs them), on skimage's natural images (astronaut, camera, coffee,
  chelsea, rocket, immunohistochemistry) resized to 224 and blurred (sigma 0, 0.7, 1.5, 3);
  the largest score difference, the per-image times (process CPU time, which the other jobs of
  a shared machine disturb least, and wall time) and their ratio (target >= 20x). Both sides
  are single-threaded. Best of `--repeats` passes, the two implementations alternating;
* the LSE benchmark, ``run()`` of ``benchmarks/perf/metrics_lse.py``, when that file exists;
* for information: the LMD cost per clip (dlib detection on the generated and the ground-truth
  frames) and the FID feature-extraction cost per clip (InceptionV3 at 299 px, CPU), for a
  `--clip-frames` clip built from skimage's astronaut (a face) with a small drift.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkinghead.metrics.cpbd import cpbd_scores, rgb_to_gray8  # noqa: E402

NATURAL = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry")
SIGMAS = (0.0, 0.7, 1.5, 3.0)
FRAME_BATCH = 16


def cpbd_images() -> np.ndarray:
    """(24, 224, 224) uint8: the natural images x blur levels."""
    from skimage import data

    out = []
    for name in NATURAL:
        image = getattr(data, name)()
        if image.ndim == 3:
            image = rgb_to_gray8(torch.from_numpy(image[..., :3]).permute(2, 0, 1)[None].float() / 255)[0]
        image = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
        out.extend(image if s == 0 else cv2.GaussianBlur(image, (0, 0), s) for s in SIGMAS)
    return np.stack(out)


def _timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def bench_cpbd(repeats: int) -> dict:
    try:
        reference = importlib.import_module("cpbd.compute")
    except ImportError:
        print("CPBD: the reference port is not installed (pip install cpbd-py312); skipping the comparison")
        return {}
    images = cpbd_images()
    n = len(images)
    ours_cpu, ours_wall, ref_cpu, ref_wall = [], [], [], []
    ours = theirs = None
    for _ in range(repeats):
        c, w, theirs = _timed(lambda: np.array([reference.compute(im) for im in images]))
        ref_cpu.append(c / n)
        ref_wall.append(w / n)
        c, w, ours = _timed(lambda: np.concatenate([cpbd_scores(images[i : i + FRAME_BATCH]) for i in range(0, n, FRAME_BATCH)]))
        ours_cpu.append(c / n)
        ours_wall.append(w / n)
    diff = float(np.abs(ours - theirs).max())
    result = {
        "images": n,
        "max_abs_diff": diff,
        "reference_ms_cpu": 1e3 * min(ref_cpu),
        "ours_ms_cpu": 1e3 * min(ours_cpu),
        "reference_ms_wall": 1e3 * min(ref_wall),
        "ours_ms_wall": 1e3 * min(ours_wall),
    }
    result["ratio_cpu"] = result["reference_ms_cpu"] / result["ours_ms_cpu"]
    result["ratio_wall"] = result["reference_ms_wall"] / result["ours_ms_wall"]
    print(f"CPBD on {n} images of 224 x 224 ({len(NATURAL)} natural x blur sigmas {SIGMAS}), best of {repeats}:")
    print(f"  max |ours - reference| = {diff:.3g}")
    print(
        f"  reference port: {result['reference_ms_cpu']:.2f} ms/image CPU ({result['reference_ms_wall']:.2f} wall)"
        f"   ours: {result['ours_ms_cpu']:.2f} ms/image CPU ({result['ours_ms_wall']:.2f} wall)"
    )
    verdict = "ok" if result["ratio_cpu"] >= 20 else "BELOW TARGET"
    print(f"  speed-up: {result['ratio_cpu']:.1f}x CPU time, {result['ratio_wall']:.1f}x wall time (target >= 20x: {verdict})")
    return result


def run_lse() -> None:
    path = Path(__file__).with_name("metrics_lse.py")
    if not path.is_file():
        print(f"LSE: {path.name} is absent; no LSE benchmark")
        return
    spec = importlib.util.spec_from_file_location("benchmarks_perf_metrics_lse", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run()


def face_clip(frames: int) -> torch.Tensor:
    """(T, 3, 224, 224) in [0, 1]: skimage's astronaut face, drifting by up to ~3 px."""
    from skimage import data

    face = cv2.resize(data.astronaut()[0:260, 100:360], (224, 224), interpolation=cv2.INTER_AREA)
    out = []
    for t in range(frames):
        shift = np.float32([[1, 0, 3 * np.sin(t / 5)], [0, 1, 2 * np.cos(t / 7)]])
        out.append(cv2.warpAffine(face, shift, (224, 224), borderMode=cv2.BORDER_REPLICATE))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def bench_lmd_fid(clip_frames: int) -> None:
    clip = face_clip(clip_frames)
    real = face_clip(clip_frames).flip(0)
    try:
        from talkinghead.metrics.lmd import LMD

        metric = LMD()
        _, wall, _ = _timed(lambda: metric.update(clip, real))
        print(
            f"LMD: {wall:.2f} s per {clip_frames}-frame clip ({1e3 * wall / (2 * clip_frames):.0f} ms per frame, "
            f"dlib detection on both sides; {int(metric.skipped_frames)} frames without a face)"
        )
    except Exception as error:  # a missing model must not stop the report
        print(f"LMD: not measured ({error})")
    try:
        from talkinghead.metrics.fid import InceptionFeatures

        feature = InceptionFeatures()
        feature(clip[:2])  # warm-up
        _, wall, _ = _timed(lambda: [feature(clip[i : i + 32]) for i in range(0, len(clip), 32)])
        print(
            f"FID features: {wall:.2f} s per {clip_frames}-frame clip ({1e3 * wall / clip_frames:.0f} ms per frame, "
            f"InceptionV3 at 299 px on {torch.get_num_threads()} CPU threads)"
        )
    except Exception as error:
        print(f"FID features: not measured ({error})")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of the CPBD comparison (best is kept)")
    parser.add_argument("--clip-frames", type=int, default=25, help="frames of the clip timed for LMD / FID")
    args = parser.parse_args(argv)
    result = bench_cpbd(args.repeats)
    run_lse()
    bench_lmd_fid(args.clip_frames)
    return result


if __name__ == "__main__":
    main()
