"""What a trained PD-FGC reads and what its generator obeys, measured against SynthTalk's truth.

    python benchmarks/pdfgc_probes.py runs/pdfgc/expression/checkpoints/last.ckpt
    python benchmarks/pdfgc_probes.py RUN/fine/checkpoints/last.ckpt --train-clips 48 --test-clips 12

1. Probes. For every representation E_mot gives (the unified motion feature F_n and the visual lip,
   eye, pose and emotion codes), a ridge regression (lambda 1e-2, on standardised features) is
   fitted on frames of the store's train split and scored on frames of its test split (other
   identities): Pearson r of the prediction with each true factor (blink, gaze x / y, mouth
   opening, pitch / yaw / roll of the renderer's head pose). A factor a representation cannot read
   scores about 0. The pose code is also scored against the store's pose prior (the rigid landmark
   fit the fine stage regresses to: `prior-*`).
2. Generator sensitivity (expression-stage checkpoints): for each test reference, the mean absolute
   change of G's output (in [-1, 1]) when one code (audio lip, emotion, eye, pose) is replaced by
   that of a frame of another test clip, the others kept at the reference's own codes. A code G
   ignores changes nothing.
3. Blinks drawn: the eye-box grey level (`eye_box_brightness`) on true blink frames (SynthTalk's
   blink > 0.5) minus that on open-eyed frames (< 0.05), over the test clips reconstructed frame by
   frame from their first frame: real frames (the ceiling: closed lids are lighter than iris and
   sclera), G with each frame's own codes, and G with the eye code fixed at the reference's. For a
   motion-stage checkpoint, G_0 from each frame's unified motion code and from the reference's. A
   generator that draws no blinks shows the same small contrast both ways (the box follows the
   head, not the lids).
4. Motion followed by G_0 (motion-stage checkpoints): the test clips reconstructed from their first
   frame with each frame's unified motion code and with the first frame's, the L1 of both to the real
   frame (and of the first frame itself, copied), and the Pearson r over pixels between what the code
   changes in the output (own minus first frame's code) and what changed in the real clip (frame minus
   first frame). A G_0 that ignores its motion code scores r = 0 and equal L1s; one that reproduces
   the clip's motion, r near 1.

5. Within-clip share (the probes' last column): for every representation and for the true factors,
   the share of its variance (summed over dims) that lies within clips, over the test frames: mean
   within-clip variance / total variance. A factor SynthTalk animates within a clip (mouth, blink) has
   a large share; a code that mostly tells clips (identities) apart, not frames, a share near 0. The
   unified motion code (``to_feature`` -> ``to_embed``, what G_0 reads) is listed when the
   checkpoint holds those training heads; it is scored by the share only (no probe).

Frames are read from the clip store at every `--step`-th frame (the blink probe: every frame). About 1.5 min
on two cores.
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

from talkinghead.data.store import ClipStore  # noqa: E402
from talkinghead.methods.pdfgc.generate import PDFGCGenerator, load_model  # noqa: E402

FACTORS = ("blink", "gaze-x", "gaze-y", "mouth-open", "pitch", "yaw", "roll")
PRIOR = ("prior-pitch", "prior-yaw", "prior-roll")


def model_input(generator: PDFGCGenerator, frames: np.ndarray, size: int) -> torch.Tensor:
    """Store frames (N, H, W, 3) uint8 -> the model's input (N, 3, size, size) in [-1, 1], as
    generation prepares them (`PDFGCGenerator.prepare`)."""
    return generator.prepare(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0, size)


@torch.no_grad()
def representations(generator: PDFGCGenerator, store: ClipStore, clips: list[dict], step: int
                    ) -> tuple[dict, np.ndarray, np.ndarray]:
    """{name: (N, D) features} of every `step`-th frame of `clips`, the (N, 10) targets (FACTORS then
    PRIOR) and the (N,) index into `clips` of each frame. With E_mot's training heads, also the
    "unified code" (scored by `within_clip_share` only)."""
    model = generator.model
    feats: dict[str, list[np.ndarray]] = {"F_n": [], "lip code": [], "eye code": [], "pose code": [], "emotion code": []}
    unified = hasattr(model.net_motion, "to_embed")
    if unified:
        feats["unified code"] = []
    targets, clip_index = [], []
    for c, clip in enumerate(clips):
        idx = list(range(0, clip["num_frames"], step))
        out = model.motion(model_input(generator, store.load_frames(clip, idx), model.config.motion_input_size))
        feats["F_n"].append(out.feature.flatten(1).numpy())
        if unified:
            feats["unified code"].append(model.net_motion.unified(out.feature).numpy())
        clip_index.append(np.full(len(idx), c))
        feats["lip code"].append(model.net_motion.mouth_embed(out.mouth).numpy())
        feats["eye code"].append(out.eye.numpy())
        feats["pose code"].append(out.pose.numpy())
        feats["emotion code"].append(out.emo.numpy())
        truth = store.load(clip, ["truth_blink", "truth_gaze", "truth_mouth", "truth_pose", "pose"])
        targets.append(np.c_[truth["truth_blink"][idx], truth["truth_gaze"][idx], truth["truth_mouth"][idx, 0],
                             truth["truth_pose"][idx, :3], truth["pose"][idx, :3]])
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(targets), np.concatenate(clip_index)


def within_clip_share(x: np.ndarray, clip_index: np.ndarray) -> float:
    """Share of the variance of features x (N, D), summed over dims, that lies within clips: the mean
    over frames of the squared deviation from their clip's mean / that from the overall mean, in
    [0, 1] (0 when x is constant)."""
    x = x.reshape(len(x), -1).astype(np.float64)
    total = ((x - x.mean(0)) ** 2).sum()
    if total == 0:
        return 0.0
    within = sum(((x[clip_index == c] - x[clip_index == c].mean(0)) ** 2).sum() for c in np.unique(clip_index))
    return float(within / total)


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
          lam: float = 1e-2) -> np.ndarray:
    """Ridge regression on standardised features; Pearson r per target column on the test set (0 where
    the prediction or the target is constant)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    x = np.c_[(train_x - mu) / sd, np.ones(len(train_x))]
    w = np.linalg.solve(x.T @ x + lam * len(x) * np.eye(x.shape[1]), x.T @ train_y)
    pred = np.c_[(test_x - mu) / sd, np.ones(len(test_x))] @ w
    return np.array([np.corrcoef(pred[:, i], test_y[:, i])[0, 1] if pred[:, i].std() > 0 and test_y[:, i].std() > 0
                     else 0.0 for i in range(test_y.shape[1])])


@torch.no_grad()
def sensitivity(generator: PDFGCGenerator, store: ClipStore, clips: list[dict]) -> dict[str, float]:
    """Mean |G(codes with one swapped) - G(own codes)| per code, over the test references."""
    from talkinghead.data.audio import mel_spectrogram, mel_windows

    model, cfg = generator.model, generator.model.config
    changes: dict[str, list[float]] = {"lip": [], "emotion": [], "eye": [], "pose": []}
    for i, clip in enumerate(clips):
        other = clips[(i + 1) % len(clips)]
        ref = store.load_frames(clip, [0])
        app = model.appearance(model_input(generator, ref, cfg.reference_size))
        own = model.motion_codes(model_input(generator, ref, cfg.motion_input_size))
        donor = model.motion_codes(model_input(generator, store.load_frames(other, [other["num_frames"] // 2]),
                                               cfg.motion_input_size))

        def lip_of(c: dict) -> torch.Tensor:
            audio = torch.from_numpy(store.load(c, ["audio"])["audio"]).float()
            mel = mel_windows(mel_spectrogram(audio), c["num_frames"])
            return model.lip_code(mel[c["num_frames"] // 2][None], cfg.lip_scale)

        base = dict(lip=lip_of(clip), emo=own.emo, eye=own.eye, pose=own.pose)
        swaps = {"lip": dict(lip=lip_of(other)), "emotion": dict(emo=donor.emo), "eye": dict(eye=donor.eye),
                 "pose": dict(pose=donor.pose)}

        def draw(codes: dict) -> torch.Tensor:
            return model.generate(app.feature, app.feature_map, codes["lip"], codes["emo"], codes["eye"],
                                  codes["pose"], noise_mode="const")

        reference_out = draw(base)
        for name, swap in swaps.items():
            changes[name].append(float((draw({**base, **swap}) - reference_out).abs().mean()))
    return {k: float(np.mean(v)) for k, v in changes.items()}


def eye_box_brightness(images: torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
    """(N,) mean grey level ([-1, 1]) of the two eye boxes of images (N, 3, S, S), landmarks (N, 68, 2)
    in the 224-px store frames. Each box spans its eye's corners (36 / 39, 42 / 45) and +-0.35 x their
    distance around the corners' mean height, so it follows the head but not the lids."""
    grey = images.float().mean(1).numpy()
    lm = (landmarks + 0.5) * images.shape[-1] / 224.0 - 0.5
    out = np.zeros(len(grey))
    for k in range(len(grey)):
        for left, right in ((36, 39), (42, 45)):
            x0, x1 = sorted((lm[k, left, 0], lm[k, right, 0]))
            yc, h = (lm[k, left, 1] + lm[k, right, 1]) / 2, 0.35 * (x1 - x0)
            rows = slice(max(0, int(np.floor(yc - h))), max(1, int(np.ceil(yc + h)) + 1))
            cols = slice(max(0, int(np.floor(x0))), max(1, int(np.ceil(x1)) + 1))
            out[k] += grey[k, rows, cols].mean() / 2
    return out


def stage1_generator(checkpoint: str, model) -> torch.nn.Module | None:
    """G_0 of a motion-stage Lightning checkpoint (style [appearance, unified motion]), None otherwise."""
    from talkinghead.methods.pdfgc.networks import build_stage1_generator

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "net_generator0."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        return None
    g0 = build_stage1_generator(model.config)
    g0.load_state_dict(weights)
    return g0.eval()


def g0_from_first_frame(generator: PDFGCGenerator, frames: np.ndarray, g0: torch.nn.Module
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """G_0's reconstruction of store frames (N, H, W, 3) from the first one's appearance, driven by each
    frame's unified motion code and by the first frame's: two (N, 3, S, S) batches in [-1, 1]."""
    model, cfg = generator.model, generator.model.config
    n = len(frames)
    app = model.appearance(model_input(generator, frames[:1], cfg.reference_size))
    feature, feature_map = app.feature.expand(n, -1), app.feature_map.expand(n, -1, -1, -1)
    unified = model.net_motion.unified(model.net_motion.forward_feature(
        model_input(generator, frames, cfg.motion_input_size)))
    own = g0(torch.cat([feature, unified], 1), identity_map=feature_map)
    fixed = g0(torch.cat([feature, unified[:1].expand(n, -1)], 1), identity_map=feature_map)
    return own, fixed


@torch.no_grad()
def blink_contrast(generator: PDFGCGenerator, store: ClipStore, clips: list[dict], g0: torch.nn.Module | None
                   ) -> dict[str, float] | None:
    """Eye-box grey level on blink frames minus open frames (module docstring, 3): real frames, the
    generator with each frame's own motion codes and with the reference's eye code (G_0: its own /
    the reference's unified motion code). None when the clips hold no blink or no open-eyed frame."""
    from talkinghead.data.audio import mel_spectrogram, mel_windows

    model, cfg = generator.model, generator.model.config
    levels: dict[str, list[np.ndarray]] = {"real frames": [], "own codes": [], "reference's eye code": []}
    blinks = []
    for clip in clips:
        n = clip["num_frames"]
        frames = store.load_frames(clip, list(range(n)))
        data = store.load(clip, ["truth_blink", "landmarks", "audio"])
        if g0 is not None:
            own, fixed = g0_from_first_frame(generator, frames, g0)
        else:
            app = model.appearance(model_input(generator, frames[:1], cfg.reference_size))
            feature, feature_map = app.feature.expand(n, -1), app.feature_map.expand(n, -1, -1, -1)
            codes = model.motion_codes(model_input(generator, frames, cfg.motion_input_size))
            mel = mel_windows(mel_spectrogram(torch.from_numpy(data["audio"]).float()), n)
            lip = model.lip_code(mel, cfg.lip_scale)
            own = model.generate(feature, feature_map, lip, codes.emo, codes.eye, codes.pose, noise_mode="const")
            fixed = model.generate(feature, feature_map, lip, codes.emo, codes.eye[:1].expand(n, -1), codes.pose,
                                   noise_mode="const")
        levels["real frames"].append(eye_box_brightness(model_input(generator, frames, cfg.image_size),
                                                        data["landmarks"]))
        levels["own codes"].append(eye_box_brightness(own, data["landmarks"]))
        levels["reference's eye code"].append(eye_box_brightness(fixed, data["landmarks"]))
        blinks.append(data["truth_blink"])
    blink = np.concatenate(blinks)
    closed, opened = blink > 0.5, blink < 0.05
    if not closed.any() or not opened.any():
        return None
    return {k: float(np.concatenate(v)[closed].mean() - np.concatenate(v)[opened].mean()) for k, v in levels.items()}


def change_correlation(own: torch.Tensor, fixed: torch.Tensor, real: torch.Tensor) -> float:
    """Pearson r over all pixels of frames (N, 3, S, S) between own - fixed (what the motion code changes
    in the output) and real - real[0] (what changed in the clip since its first frame); 0 when the
    code changes nothing or nothing changed."""
    made, moved = (own - fixed).flatten().double(), (real - real[:1]).flatten().double()
    if made.std() == 0 or moved.std() == 0:
        return 0.0
    return float(torch.corrcoef(torch.stack([made, moved]))[0, 1])


@torch.no_grad()
def motion_following(generator: PDFGCGenerator, store: ClipStore, clips: list[dict], g0: torch.nn.Module,
                     step: int = 2) -> dict[str, float]:
    """Module docstring, 4: mean L1 ([-1, 1] pixels) to the real frames of G_0 with each frame's own
    unified motion code ("own code"), with the first frame's ("first frame's code"), of the first frame
    copied ("copy"), and the mean over clips of `change_correlation` ("r")."""
    l1: dict[str, list[float]] = {"own code": [], "first frame's code": [], "copy": []}
    r = []
    for clip in clips:
        frames = store.load_frames(clip, list(range(0, clip["num_frames"], step)))
        own, fixed = g0_from_first_frame(generator, frames, g0)
        real = model_input(generator, frames, generator.model.config.image_size)
        for name, image in (("own code", own), ("first frame's code", fixed), ("copy", real[:1].expand_as(real))):
            l1[name].append(float((image - real).abs().mean()))
        r.append(change_correlation(own, fixed, real))
    return {**{k: float(np.mean(v)) for k, v in l1.items()}, "r": float(np.mean(r))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a PDFGCModule checkpoint (fine or expression stage) or an official folder")
    parser.add_argument("--store", default="data/store/synth-vox2", help="a SynthTalk clip store (truth_* keys)")
    parser.add_argument("--train-clips", type=int, default=48)
    parser.add_argument("--test-clips", type=int, default=12)
    parser.add_argument("--step", type=int, default=3, help="every step-th frame of a clip")
    parser.add_argument("--blink-clips", type=int, default=10, help="test clips of the blink and motion-following probes (every frame; 0: skip them)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, info = load_model(args.checkpoint)
    generator = PDFGCGenerator(model, crop=info["crop"])
    store = ClipStore(args.store)
    train, test = store.clips("train")[: args.train_clips], store.clips("test")[: args.test_clips]
    if not train or not test:
        raise SystemExit(f"{args.store}: needs clips in both the train and the test split")
    train_x, train_y, _ = representations(generator, store, train, args.step)
    test_x, test_y, test_clip = representations(generator, store, test, args.step)
    print(f"{args.checkpoint}: probes, Pearson r on {len(test_y)} test frames (fitted on {len(train_y)} train frames); "
          f"within-clip share of the variance on the test frames")
    columns = FACTORS + PRIOR
    print(f"| representation | dims | {' | '.join(columns)} | within-clip share |")
    print("|:---|---:|" + "---:|" * (len(columns) + 1))
    for name in train_x:
        share = within_clip_share(test_x[name], test_clip)
        r = [] if name == "unified code" else probe(train_x[name], train_y, test_x[name], test_y)
        cells = [f"{v:.2f}" for v in r] if len(r) else ["-"] * len(columns)
        print(f"| {name} | {train_x[name].shape[1]} | " + " | ".join(cells) + f" | {share:.3f} |")
    truth = " ".join(f"{name} {within_clip_share(test_y[:, i], test_clip):.2f}" for i, name in enumerate(columns))
    print(f"within-clip share of the true factors: {truth}")
    if info.get("stage") in (None, "expression"):
        change = sensitivity(generator, store, test)
        print("generator: mean |change| of the output when one code comes from another clip: "
              + ", ".join(f"{k} {v:.4f}" for k, v in change.items()))
    g0 = stage1_generator(args.checkpoint, model) if info.get("stage") == "motion" else None
    if (info.get("stage") in (None, "expression") or g0 is not None) and args.blink_clips > 0:
        contrast = blink_contrast(generator, store, test[: args.blink_clips], g0)
        print(f"blinks drawn by {'G_0' if g0 is not None else 'G'} (eye-box grey level, blink minus open frames, "
              f"{min(args.blink_clips, len(test))} test clips): "
              + ("n/a (no blink or no open-eyed frame in these clips)" if contrast is None
                 else ", ".join(f"{k} {v:+.4f}" for k, v in contrast.items())))
    if g0 is not None and args.blink_clips > 0:
        follow = motion_following(generator, store, test[: args.blink_clips], g0)
        first = follow["first frame's code"]
        print(f"motion followed by G_0 ({min(args.blink_clips, len(test))} test clips from their first frame): L1 to the "
              f"real frames with each frame's code {follow['own code']:.4f}, with the first frame's "
              f"{first:.4f}, the first frame copied {follow['copy']:.4f}; r(change made by the "
              f"code, change in the clip) {follow['r']:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
