"""PC-AVS checks beyond the benchmark table: does the pose code transfer head pose, and do the
mouths follow the audio when the pose is not taken from the clip itself?

    python -m talkinghead.methods.pcavs.evaluate --checkpoint runs/pcavs/full/checkpoints/last.ckpt \\
        --store data/store/synth-vox2 [--clips 12]

``pose_transfer``: for each held-out clip A (reference = its first frame, audio = its audio) and
a pose-source clip B of another speaker, generate with B's frames as pose source and with
``--fixed-pose``; score the jaw-contour landmarks (LMD-contour, dlib points 0-16, 224 px) of
both against B's ground-truth landmarks (the clip store's), and the head rotation (rigid fit of
`faces.estimate_head_pose`) against B's. Pose transfer works when driving with B's pose is
closer to B than the fixed pose is. (A's and B's faces differ in shape, which adds the same
offset to both numbers.)

``self_driven``: LMD / LMD-mouth on the clips themselves with the pose from the clip (the
benchmark's setting), with the fixed reference pose (mouth from the audio alone) and for the
``static`` baseline (the reference frame repeated).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from talkinghead.methods.pcavs.generate import PCAVSGenerator

__all__ = ["pose_transfer", "self_driven"]


def _clip(store, entry: dict) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    from talkinghead.bench.protocol import frames_tensor

    arrays = store.load(entry, ["audio", "landmarks", "pose", "frame_offsets"])
    count = len(arrays["frame_offsets"]) - 1
    frames = frames_tensor(store.load_frames(entry, range(count)))
    audio = torch.from_numpy(np.asarray(arrays["audio"], np.float32).copy())
    return frames, audio, np.asarray(arrays["landmarks"], np.float32), np.asarray(arrays["pose"], np.float32)


def _generate(generator: PCAVSGenerator, reference, audio, frames: int, pose_source, mode: str) -> torch.Tensor:
    audio = audio[: frames * 640]
    return torch.cat(list(generator.synthesize(reference, audio, frames, pose_source, pose=mode)))


def _select(store, split: str, num_clips: int | None) -> list[dict]:
    entries = sorted(store.clips(split), key=lambda e: e["clip_id"])
    return entries[:num_clips] if num_clips else entries


def pose_transfer(checkpoint: str | Path, store: str | Path, split: str = "test", num_clips: int | None = None,
                  device: str = "cpu") -> dict:
    """Contour LMD and rotation error against the pose source, driven vs fixed pose (see module doc)."""
    from talkinghead.data.faces import estimate_head_pose
    from talkinghead.data.store import ClipStore
    from talkinghead.metrics.lmd import LMD

    clip_store = ClipStore(store)
    generator = PCAVSGenerator.from_checkpoint(checkpoint, device)
    entries = _select(clip_store, split, num_clips)
    metrics = {"driven": LMD(), "fixed": LMD()}
    rotation = {"driven": [], "fixed": []}
    pairs = []
    for i, entry in enumerate(entries):
        others = [e for e in entries[i + 1:] + entries[:i] if e["speaker"] != entry["speaker"]]
        if not others:
            continue
        source_entry = others[0]
        frames_a, audio_a, _, _ = _clip(clip_store, entry)
        frames_b, _, landmarks_b, pose_b = _clip(clip_store, source_entry)
        t = min(len(frames_a), len(frames_b))
        pairs.append((entry["clip_id"], source_entry["clip_id"]))
        for mode, source in (("driven", frames_b[:t]), ("fixed", None)):
            fake = _generate(generator, frames_a[0], audio_a, t, source, "source" if source is not None else "fixed")
            metric = metrics[mode]
            metric.update(fake=fake, real_landmarks=torch.from_numpy(landmarks_b[:t]))
            lm, found = metric.landmarks((fake.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
            if found.any():
                est = estimate_head_pose(lm[found])
                diff = np.degrees(np.abs(est[:, :3] - pose_b[:t][found][:, :3])).mean()
                rotation[mode].append(float(diff))
    out = {"pairs": pairs, "checkpoint": str(checkpoint)}
    for mode, metric in metrics.items():
        values = metric.compute()
        out[mode] = {k: float(v) for k, v in values.items()}
        out[mode]["rotation_error_deg"] = float(np.mean(rotation[mode])) if rotation[mode] else float("nan")
        out[mode]["skipped_frames"] = int(metric.skipped_frames)
    return out


def self_driven(checkpoint: str | Path, store: str | Path, split: str = "test", num_clips: int | None = None,
                device: str = "cpu") -> dict:
    """LMD columns of PC-AVS with the clip's own pose, with the fixed reference pose, and of static."""
    from talkinghead.data.store import ClipStore
    from talkinghead.metrics.lmd import LMD

    clip_store = ClipStore(store)
    generator = PCAVSGenerator.from_checkpoint(checkpoint, device)
    metrics = {"pcavs": LMD(), "pcavs_fixed_pose": LMD(), "static": LMD()}
    entries = _select(clip_store, split, num_clips)
    for entry in entries:
        frames, audio, landmarks, _ = _clip(clip_store, entry)
        t = len(frames)
        real = torch.from_numpy(landmarks)
        metrics["pcavs"].update(fake=_generate(generator, frames[0], audio, t, frames, "source"), real_landmarks=real)
        metrics["pcavs_fixed_pose"].update(fake=_generate(generator, frames[0], audio, t, None, "fixed"),
                                           real_landmarks=real)
        metrics["static"].update(fake=frames[:1].expand(t, -1, -1, -1), real_landmarks=real)
    out = {"clips": [e["clip_id"] for e in entries], "checkpoint": str(checkpoint)}
    for name, metric in metrics.items():
        out[name] = {k: float(v) for k, v in metric.compute().items()}
        out[name]["skipped_frames"] = int(metric.skipped_frames)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="PC-AVS pose-transfer and fixed-pose lip checks")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--store", default="data/store/synth-vox2")
    parser.add_argument("--split", default="test")
    parser.add_argument("--clips", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["pose", "self"], default=None)
    args = parser.parse_args(argv)
    result = {}
    if args.only in (None, "self"):
        result["self_driven"] = self_driven(args.checkpoint, args.store, args.split, args.clips, args.device)
    if args.only in (None, "pose"):
        result["pose_transfer"] = pose_transfer(args.checkpoint, args.store, args.split, args.clips, args.device)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
