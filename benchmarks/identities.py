"""How distinct SynthTalk identities are to a face recogniser (dlib's 128-d descriptor, as CSIM).

    python benchmarks/identities.py                     # test identities 48-59 of seeds 0, 1, 2
    python benchmarks/identities.py --seeds 0 --first 0 --count 8

For each seed, the identities [first, first + count) (the default is the test split of the default
corpus: 48 train identities, then 12 test ones) are rendered
* frontal, at rest (mouth closed, eyes open): the pairwise descriptor distances are printed
  (median, min, max, and the fraction of pairs above dlib's same-person threshold 0.6);
* at 6 other poses and expressions (yaw +-0.35 rad, pitch +-0.2 rad, happy with the mouth open,
  surprised): then, per identity, whether all its renders are closer to each other (max distance
  within) than to any render of another identity (min distance across), and the leave-one-out
  nearest-neighbour identification accuracy over all renders.
Also printed: dlib's detection rate over all renders (the preprocessing needs every face found), and
the mean error (px at 224) of dlib's 68 landmarks against the renders' exact ground truth: the cost
of wide face shapes (`puppet.SHAPE_STRENGTH`), which pull dlib's shape prior off.
About 30 s per seed on two cores.
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
from talkinghead.metrics.csim import DlibFaceEmbedding  # noqa: E402

THRESHOLD = puppet.SAME_PERSON_DISTANCE  # dlib's same-person distance
REST = (puppet.REST_POSE[:3], puppet.REST_MOUTH, 0.0, "neutral")  # the render the identity choice describes
VARIANTS = [  # (rotation vector, mouth (open, width, round), blink, emotion)
    (np.array([0.0, 0.35, 0.0]), np.array([0.0, 0.45, 0.0]), 0.0, "neutral"),
    (np.array([0.0, -0.35, 0.0]), np.array([0.0, 0.45, 0.0]), 0.0, "neutral"),
    (np.array([0.2, 0.0, 0.0]), np.array([0.3, 0.5, 0.0]), 0.0, "neutral"),
    (np.array([-0.2, 0.0, 0.1]), np.array([0.0, 0.45, 0.0]), 0.3, "neutral"),
    (np.zeros(3), np.array([0.6, 0.6, 0.0]), 0.0, "happy"),
    (np.array([0.0, 0.15, -0.1]), np.array([0.4, 0.3, 0.5]), 0.0, "surprised"),
]


def render_all(identity: puppet.Identity) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, ground-truth landmarks) of the identity at REST and every VARIANTS entry."""
    renderer = puppet.Renderer(identity)
    return [renderer.render(np.array([*rotation, *puppet.FRAME_EYE_CENTRE, 0.0]), mouth, blink, (0.0, 0.0), emotion, 3)
            for rotation, mouth, blink, emotion in [REST, *VARIANTS]]


def measure(seed: int, first: int, count: int, embed: DlibFaceEmbedding, candidates: int = puppet.CANDIDATES) -> dict:
    renders = [render_all(puppet.make_identity(i, seed, candidates)) for i in range(first, first + count)]
    per = len(renders[0])
    frames = np.stack([f for rs in renders for f, _ in rs])
    truth = np.stack([lm for rs in renders for _, lm in rs])
    detected, detected_found = faces.detect_landmarks(frames)
    landmark_error = float(faces.landmark_error(detected[detected_found], truth[detected_found]).mean())
    emb, found = embed(frames)
    emb, found = emb.reshape(count, per, -1), found.reshape(count, per)
    frontal = emb[:, 0][found[:, 0]]
    d = np.linalg.norm(frontal[:, None] - frontal[None], axis=-1)[np.triu_indices(len(frontal), 1)]
    separated = 0
    for i in range(count):
        own = emb[i][found[i]]
        others = np.concatenate([emb[j][found[j]] for j in range(count) if j != i])
        within = np.linalg.norm(own[:, None] - own[None], axis=-1).max() if len(own) > 1 else 0.0
        across = np.linalg.norm(own[:, None] - others[None], axis=-1).min()
        separated += int(within < across)
    flat = emb[found]
    labels = np.repeat(np.arange(count), per)[found.ravel()]
    dist = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = labels[dist.argmin(1)]
    correct, total = int((nearest == labels).sum()), len(labels)
    return {"pairs": len(d), "median": float(np.median(d)), "min": float(d.min()), "max": float(d.max()),
            "above": float((d > THRESHOLD).mean()), "separated": separated, "count": count,
            "nn_accuracy": correct / total, "detected": float(found.mean()), "frontal_found": int(found[:, 0].sum()),
            "landmark_error": landmark_error}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--first", type=int, default=48, help="first identity (default: the default corpus's test split)")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--candidates", type=int, default=puppet.CANDIDATES,
                        help="draws per identity the corpus chooses from (1: the first detectable draw, no choice)")
    args = parser.parse_args(argv)
    embed = DlibFaceEmbedding()
    print(f"dlib descriptor distances, identities {args.first}-{args.first + args.count - 1} chosen from "
          f"{args.candidates} draws each, frontal rest-pose renders; threshold {THRESHOLD}")
    print("seed | frontal found | pairs | median | min | max | pairs > 0.6 | renders detected | "
          "identities separated | NN accuracy | dlib landmark error (px) | s")
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        r = measure(seed, args.first, args.count, embed, args.candidates)
        rows.append(r)
        print(f"{seed} | {r['frontal_found']}/{r['count']} | {r['pairs']} | {r['median']:.3f} | {r['min']:.3f} | "
              f"{r['max']:.3f} | {100 * r['above']:.0f}% | {100 * r['detected']:.0f}% | "
              f"{r['separated']}/{r['count']} | {100 * r['nn_accuracy']:.0f}% | {r['landmark_error']:.2f} | "
              f"{time.perf_counter() - start:.0f}")
    above = np.mean([r["above"] for r in rows])
    print(f"mean over seeds: pairs above {THRESHOLD}: {100 * above:.0f}% (target >= 90%); identities whose own "
          f"renders are all closer to each other than to any other identity: "
          f"{sum(r['separated'] for r in rows)}/{sum(r['count'] for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
