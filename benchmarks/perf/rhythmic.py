"""Rhythmic Head speed on this machine: generation frames/s at paper size, training steps/s of the synth config.

    python benchmarks/perf/rhythmic.py [--threads N] [--frames 16] [--steps 20] [--paper-steps] [--json out.json]

* generation (on the CPU, and on the GPU too when CUDA is available): `RhythmicGenerator.synthesize`
  with `Rhythmic(RhythmicConfig.paper())` (random weights; 256 px composer with K = 8 references, Psi,
  Phi; Psi's PCA and Phi's motion normaliser fitted on the synthetic reference video's frontalised
  landmarks and poses), a synthetic reference video of tau = 64 frames (random 224 px images; faces
  of the canonical landmark template projected at small random head poses, with a moving mouth; its
  audio) and driving audio of `frames` frames, poses from Phi: frames per second end to end (Phi's
  poses, Psi's landmarks, the K references, per-frame composer inputs with the mesh render, the
  composer, the resize to 224), after a 2-frame warm-up call;
* training: each stage (expression, head_motion, generator, joint) of experiments/rhythmic/synth.yaml
  (tiny networks at its sizes) on synthetic batches shaped like the data module's for that stage
  (tau context frames with landmarks, poses and -- except the generator stage -- 4480-sample audio
  windows; the window's landmarks / poses / audio; frames and K references drawn among the context
  frames for the generator and joint stages; no store needed), the PCA (expression, joint) and the
  normaliser (head_motion, joint) fitted on the batch's landmarks / poses, `steps` optimisation steps
  after 2 warm-up steps; steps (= batches) per second, with the batch size used;
* with --paper-steps: each stage of experiments/rhythmic/base.yaml (paper networks at 256 px, tau 64,
  K 8, its batch sizes unless --paper-batch-size), one timed step after one warm-up step, on the GPU
  when CUDA is available, else on the CPU; seconds per step.

The landmarks are plausible faces (the canonical template, `talkinghead.data.faces.face_template`,
projected with `faces.project` at poses near the store's mean, in the store's pose convention) so
that the mesh renderer, the edge maps and the face / mouth masks do their usual work. The VGG19
perceptual loss of the generator and joint stages runs only when its torchvision file is in
$TALKINGHEAD_HOME (see `StagedModule.perceptual_loss`); the report says whether it ran. The numbers
depend on the CPU and on what else runs on it; the report prints the thread count.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import speed_main, speed_row, synthetic_faces, timed_fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("expression", "head_motion", "generator", "joint")
SAMPLES_PER_FRAME = 640
def audio_windows(clips: int, frames: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Per-frame audio windows (C, N, samples) of `clips` continuous random waveforms, `samples` (7 x
    640) centred on each frame's 640, as the data module's ``audio`` / ``context_audio``."""
    g = torch.Generator().manual_seed(seed)
    wav = torch.randn(clips, frames * SAMPLES_PER_FRAME + samples - SAMPLES_PER_FRAME, generator=g) * 0.1
    return wav.unfold(1, samples, SAMPLES_PER_FRAME).contiguous()


def fit_statistics(model, landmarks: torch.Tensor, poses: torch.Tensor, size: int) -> None:
    """Psi's PCA on the frontalised `landmarks` (..., 68, 2) (S px) and Phi's motion normaliser on
    `poses` (..., 6), as the stages fit them on a store (`Rhythmic.fit_pca` / `fit_normaliser`)."""
    from talkinghead.methods.rhythmic.networks import frontal_landmarks

    frontal = frontal_landmarks(landmarks, poses, size).reshape(-1, 68, 2).numpy()
    model.fit_pca([frontal], split=None)
    model.fit_normaliser([poses.reshape(-1, 6).numpy()], split=None)


def generation_fps(frames: int, batch_size: int, device: str = "cpu") -> dict:
    from talkinghead.generation import ReferenceVideo
    from talkinghead.methods.rhythmic.generate import RhythmicGenerator
    from talkinghead.methods.rhythmic.networks import Rhythmic, RhythmicConfig

    torch.manual_seed(0)
    model = Rhythmic(RhythmicConfig.paper())
    tau = model.config.tau
    landmarks, poses = synthetic_faces(1, tau, 224)
    fit_statistics(model, landmarks, poses, 224)
    video = ReferenceVideo(torch.rand(tau, 3, 224, 224), landmarks[0], poses[0],
                           torch.randn(tau * SAMPLES_PER_FRAME) * 0.1)
    generator = RhythmicGenerator(model, batch_size=batch_size, device=device)
    reference = video.frames[0]
    audio = torch.randn(frames * SAMPLES_PER_FRAME) * 0.1
    list(generator.synthesize(reference, audio[: 2 * SAMPLES_PER_FRAME], 2, reference_video=video))  # warm-up
    start = time.perf_counter()
    out = torch.cat(list(generator.synthesize(reference, audio, frames, reference_video=video)))
    seconds = time.perf_counter() - start  # synthesize yields CPU tensors: the GPU work is done
    assert out.shape == (frames, 3, 224, 224)
    return {"device": device, "frames": frames, "batch_size": batch_size, "tau": tau,
            "references": model.config.num_references, "seconds": round(seconds, 2),
            "frames_per_second": round(frames / seconds, 3)}


def _batch(cfg, stage: str, model_cfg, batch_size: int) -> dict:
    """A collated `TalkingHeadDataModule` batch of `stage` (the keys `RhythmicModule` reads and the
    data module's usual ones, at the stage's sizes; `method.build_data`'s settings)."""
    from talkinghead.methods.rhythmic.method import SEQUENCE_STAGES
    from talkinghead.training.method import stage_data

    data = stage_data(cfg, stage)
    b, t, p, s = batch_size, int(data["window"]), int(model_cfg.tau), int(model_cfg.image_size)
    images = stage not in SEQUENCE_STAGES
    k = int(model_cfg.num_references) if images else 0
    a = 0 if stage == "generator" else int(model_cfg.head_motion.window_samples)
    landmarks, poses = synthetic_faces(b, p + t, s)
    refs = torch.stack([torch.randperm(p)[:k].sort().values for _ in range(b)])  # among the context frames
    rows = torch.arange(b)[:, None]
    batch = {
        "context_index": torch.arange(p).repeat(b, 1), "context_landmarks": landmarks[:, :p],
        "context_pose": poses[:, :p], "landmarks": landmarks[:, p:], "pose": poses[:, p:],
        "landmarks_found": torch.ones(b, t, dtype=torch.bool), "mel": torch.rand(b, t, 1, 80, 20),
        "reference_index": refs, "reference_landmarks": landmarks[rows, refs], "reference_pose": poses[rows, refs],
        "speaker": torch.zeros(b, dtype=torch.int64), "frame_index": torch.arange(p, p + t).repeat(b, 1),
        "clip_index": torch.arange(b),
    }
    if images:
        batch["frames"] = torch.rand(b, t, 3, s, s) * 2 - 1
        batch["reference"] = torch.rand(b, k, 3, s, s) * 2 - 1
    if a:
        audio = audio_windows(b, p + t, a)
        batch["context_audio"], batch["audio"] = audio[:, :p], audio[:, p:]
    return batch


def training_speed(config: Path, steps: int, warmup: int, device: str = "cpu",
                   batch_size: int | None = None) -> dict:
    """Each stage of `config`: `steps` timed optimisation steps after `warmup` ones on one synthetic batch."""
    from talkinghead.config import to_dict
    from talkinghead.methods.rhythmic.method import METHOD, model_config
    from talkinghead.methods.rhythmic.module import IMAGE_STAGES, RhythmicModule

    cfg = METHOD.load_config(config)
    model_cfg = model_config(to_dict(cfg.model))
    out = {}
    for stage in STAGES:
        scfg = cfg[stage]
        b = int(batch_size or scfg.batch_size)
        torch.manual_seed(0)
        batch = _batch(cfg, stage, model_cfg, b)
        module = RhythmicModule(stage=stage, model=model_cfg.to_dict(), loss=to_dict(scfg.loss),
                                optim=to_dict(scfg.optim), worst_match_prob=float(scfg.worst_match_prob),
                                sample_every_n_steps=0, name=str(cfg.name), gradient_clip=scfg.gradient_clip,
                                max_nonfinite_in_a_row=int(cfg.trainer.max_nonfinite_in_a_row))
        # what the stage fits on its store when it starts (setup), here on the batch's landmarks / poses
        fit_statistics(module.model, torch.cat([batch["context_landmarks"], batch["landmarks"]], 1),
                       torch.cat([batch["context_pose"], batch["pose"]], 1), model_cfg.image_size)
        out[stage] = speed_row(device, b, steps, timed_fit(module, batch, steps, warmup, device))
        out[stage]["window"] = int(batch["pose"].shape[1])
        if stage in IMAGE_STAGES:
            out[stage]["vgg"] = getattr(module, "_vgg_state", None) == "on"
        del module, batch
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    return speed_main(argv, __doc__, "rhythmic", generation_fps, training_speed, 8, "frames per composer call (the generator's default)", ROOT / "experiments")


if __name__ == "__main__":
    raise SystemExit(main())
