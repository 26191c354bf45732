"""Where Rhythmic Head's generator Theta loses the mouth: Theta driven by the store's landmarks and
poses (what the ``generator`` stage trains on, no Psi / Phi), scored against the real frames.

    python benchmarks/rhythmic_probes.py runs/rhythmic/generator/checkpoints/last.ckpt
    python benchmarks/rhythmic_probes.py RUN/joint/checkpoints/last.ckpt --clips 24

For each of the store's first ``--clips`` test clips the first tau frames are the reference video
(K references picked as generation picks them), every later frame is generated from its landmarks
and pose, and per clip:

* ``LSE-C gen``: SyncNet confidence (the bench's SyncNet expert) of the generated frames, resized
  to 224 px, with the clip's audio; ``LSE-C real``: the real frames brought down to the model's size
  and back (what the frame size alone allows);
* ``mouth r``: Pearson r over frames between the mean luminance inside the inner-lip polygon
  (landmarks 60-67) of the generated and of the real frame (does the generated mouth open and close
  with the real one?); ``mouth std``: its std over frames, generated / real;
* ``L1 gen`` / ``L1 copy`` / ``L1 warp``: mean |frame - real| (images in [-1, 1]) of the generated
  frame, of the motion-matched reference copied unchanged, and of Theta's warped matched reference.
  A generator whose output is farther from the truth than ``L1 copy`` has not learnt to use its
  references yet.

About 1 min for 12 clips on two cores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkinghead.data.store import ClipStore  # noqa: E402
from talkinghead.generation import SAMPLES_PER_FRAME  # noqa: E402
from talkinghead.methods.rhythmic.generate import load_model, pick_references  # noqa: E402
from talkinghead.methods.rhythmic.networks import composer_inputs  # noqa: E402
from talkinghead.metrics.lse import sync_scores  # noqa: E402
from talkinghead.metrics.syncnet_expert import load_expert  # noqa: E402

COLUMNS = ("LSE-C gen", "LSE-C real", "mouth r", "mouth std gen", "mouth std real", "L1 gen", "L1 copy", "L1 warp")


def inner_mouth_luminance(frames: torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
    """Mean luminance inside the inner-lip polygon: frames (T, 3, S, S) in [0, 1], landmarks (T, 68, 2)
    in their pixels -> (T,); a frame whose polygon covers no pixel gives its mean luminance."""
    size = frames.shape[-1]
    gray = frames.mean(1).numpy()
    out = np.empty(len(frames))
    for t, (image, points) in enumerate(zip(gray, landmarks)):
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(points[60:68]).astype(np.int32)], 1)
        out[t] = image[mask > 0].mean() if mask.any() else image.mean()
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@torch.no_grad()
def probe_clip(model, store: ClipStore, entry: dict, syncnet, batch: int = 16) -> dict[str, float]:
    """The COLUMNS of one clip (module docstring)."""
    cfg = model.config
    size, tau = cfg.image_size, cfg.tau
    arrays = store.load(entry, ["landmarks", "pose", "audio"])
    count = int(entry["num_frames"])
    if count <= tau + 5:
        raise ValueError(f"{entry['clip_id']}: {count} frames, the probe needs more than tau + 5 = {tau + 5}")
    frames = torch.from_numpy(store.load_frames(entry, range(count))).permute(0, 3, 1, 2).float() / 255.0
    scale = size / frames.shape[-1]
    real = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True) * 2 - 1
    landmarks = torch.from_numpy((arrays["landmarks"] + 0.5) * scale - 0.5).float()
    poses = torch.from_numpy(arrays["pose"]).float()
    picks = pick_references(poses[:tau], cfg.num_references)
    generated, copied, warped = [], [], []
    for start in range(tau, count, batch):
        span = slice(start, min(count, start + batch))
        inputs = composer_inputs(landmarks[span], poses[span], real[picks], landmarks[picks], poses[picks],
                                 cfg.edge_thickness)
        out = model.compose(inputs)
        generated.append(out.image)
        copied.append(inputs.warp_ref_image)
        warped.append(out.warped_ref if out.warped_ref is not None else inputs.warp_ref_image)
    gen, copy, warp = torch.cat(generated), torch.cat(copied), torch.cat(warped)
    target = real[tau:]

    def to_224(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(((x + 1) / 2).clamp(0, 1), size=(224, 224), mode="bicubic",
                             align_corners=False).clamp(0, 1)

    audio = torch.from_numpy(arrays["audio"][tau * SAMPLES_PER_FRAME:]).float()
    mouth_gen = inner_mouth_luminance((gen + 1) / 2, landmarks[tau:].numpy())
    mouth_real = inner_mouth_luminance((target + 1) / 2, landmarks[tau:].numpy())
    return {"LSE-C gen": sync_scores(syncnet, to_224(gen), audio).confidence,
            "LSE-C real": sync_scores(syncnet, to_224(target), audio).confidence,
            "mouth r": _corr(mouth_gen, mouth_real), "mouth std gen": float(mouth_gen.std()),
            "mouth std real": float(mouth_real.std()), "L1 gen": float((gen - target).abs().mean()),
            "L1 copy": float((copy - target).abs().mean()), "L1 warp": float((warp - target).abs().mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a Rhythmic Head Lightning checkpoint (generator or joint stage)")
    parser.add_argument("--store", default="data/store/synth-vox2", help="clip store (its test split is read)")
    parser.add_argument("--clips", type=int, default=12, help="test clips (the store's first ones)")
    parser.add_argument("--expert", default=None,
                        help="SyncNet expert file (default: the store's experts/syncnet/syncnet_expert.pt)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model, _ = load_model(args.checkpoint)
    model.eval()
    store = ClipStore(args.store)
    expert = Path(args.expert) if args.expert else Path(args.store) / "experts" / "syncnet" / "syncnet_expert.pt"
    if not expert.is_file():
        raise FileNotFoundError(f"no SyncNet expert at {expert}: train it (`talkinghead train --method syncnet "
                                f"store={args.store}`, 3 min; a bench with LSE trains it when missing) or pass --expert")
    syncnet, name = load_expert(expert)
    clips = store.clips("test")[: args.clips]
    if not clips:
        raise ValueError(f"{args.store}: no test clips")
    print(f"Rhythmic Head Theta on the store's landmarks and poses: {args.checkpoint}; {len(clips)} test clips of "
          f"{args.store}; LSE-C by {name}\n")
    print("| clip | " + " | ".join(COLUMNS) + " |")
    print("|:---|" + "---:|" * len(COLUMNS))
    rows = []
    for entry in clips:
        row = probe_clip(model, store, entry, syncnet)
        rows.append([row[c] for c in COLUMNS])
        print(f"| {entry['clip_id']} | " + " | ".join(f"{v:.3f}" for v in rows[-1]) + " |", flush=True)
    print("| **mean** | " + " | ".join(f"**{v:.3f}**" for v in np.mean(rows, 0)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
