"""Shared pieces of the method speed benchmarks (benchmarks/perf/pcavs.py, pdfgc.py, rhythmic.py).

* `timed_fit`: a `StagedModule` trained by a bare Lightning `Trainer` (no logger, checkpoints,
  progress bar or sanity check) on one synthetic batch repeated, `warmup` untimed steps then `steps`
  timed ones; seconds from the first timed batch's start to the last batch's end (CUDA synchronised);
* `speed_row`: the report row of a timed stage (device, batch size, steps, s/step, steps/s);
* `synthetic_faces`: plausible landmark / head-pose sequences for synthetic batches (the canonical
  template projected at small moving poses, a mouth that opens and closes);
* `speed_main`: the command line and report both scripts share (generation frames/s at paper size,
  on the GPU too when there is one; training steps/s of the synth config; --paper-steps).

The scripts import it as ``_common`` after putting their folder on ``sys.path`` (it is there when
they run as scripts, not when they are loaded with importlib).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def timed_fit(module, batch: dict, steps: int, warmup: int, device: str = "cpu") -> float:
    """Train `module` on `batch` for `warmup` + `steps` steps (``max_steps`` counts every optimizer
    of a step: ``module.optimizers_per_step``); the seconds the last `steps` took."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader

    class Timer(Callback):  # from the first timed batch's start to the last batch's end
        start = end = 0.0

        def _now(self, module) -> float:
            if module.device.type == "cuda":
                torch.cuda.synchronize(module.device)
            return time.perf_counter()

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if batch_idx == warmup:
                self.start = self._now(module)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.end = self._now(module)

    timer = Timer()
    trainer = Trainer(max_steps=(steps + warmup) * module.optimizers_per_step, max_epochs=1,
                      accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, train_dataloaders=DataLoader([batch] * (steps + warmup), batch_size=None))
    return timer.end - timer.start


def speed_row(device: str, batch_size: int, steps: int, seconds: float) -> dict:
    """The report row of `steps` timed training steps that took `seconds`."""
    return {"device": device, "batch_size": batch_size, "steps": steps, "seconds_per_step": round(seconds / steps, 3),
            "steps_per_second": round(steps / seconds, 3)}


#: mean store pose (rotation vector, tx, ty in the aligned 224 px image, log scale; SynthTalk's train
#: split is close to it) and the spread of the synthetic heads around it
POSE_MEAN = np.array([0.0, 0.0, 0.0, 112.0, 80.0, 0.15])
POSE_SPREAD = np.array([0.08, 0.08, 0.03, 1.5, 1.5, 0.05])
LOWER_FACE = np.r_[5:12, 55:60, 64:68]  # jaw and lower-lip points the synthetic mouth opening moves


def synthetic_faces(clips: int, frames: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`clips` sequences of `frames` plausible faces: landmarks (C, N, 68, 2) float32 in the pixels of a
    `size` px frame and store poses (C, N, 6) float32. Each clip: a head pose drawn around `POSE_MEAN`
    moving slowly (sinusoids), the template's jaw and lower lip opening and closing, a little
    per-frame jitter of every point; projected with `faces.project` in the aligned 224 px frame."""
    from talkinghead.data import faces

    rng = np.random.default_rng(seed)
    template = faces.face_template().astype(np.float64)
    t = np.arange(frames)[:, None]
    landmarks = np.zeros((clips, frames, 68, 2))
    poses = np.zeros((clips, frames, 6))
    for c in range(clips):
        base = POSE_MEAN + rng.normal(0.0, 1.0, 6) * POSE_SPREAD
        phase, speed = rng.uniform(0, 2 * np.pi, 6), rng.uniform(0.05, 0.2, 6)
        poses[c] = base + 0.5 * POSE_SPREAD * np.sin(speed * t + phase)
        opening = 0.15 * (1 + np.sin(rng.uniform(0.3, 0.8) * t[:, 0] + rng.uniform(0, 2 * np.pi)))
        for i in range(frames):
            points = template + rng.normal(0.0, 0.005, template.shape)
            points[LOWER_FACE, 1] += opening[i]
            landmarks[c, i] = faces.project(points, poses[c, i], faces.POSE_REFERENCE_IOD)
    k = float(size) / float(faces.ALIGN_SIZE)
    return (torch.from_numpy(((landmarks + 0.5) * k - 0.5).astype(np.float32)),
            torch.from_numpy(poses.astype(np.float32)))


def speed_main(argv: list[str] | None, doc: str, method: str, generation_fps: Callable, training_speed: Callable,
               batch_size: int, batch_help: str, experiments: Path) -> int:
    """The speed script of `method`: ``generation_fps(frames, batch_size, device)`` and
    ``training_speed(config, steps, warmup=, device=, batch_size=)`` reported as text, then JSON."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--frames", type=int, default=16, help="frames generated at paper size")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per stage")
    parser.add_argument("--config", type=Path, default=experiments / method / "synth.yaml")
    parser.add_argument("--paper-steps", action="store_true",
                        help="also time one training step per stage at paper size (base.yaml)")
    parser.add_argument("--paper-config", type=Path, default=experiments / method / "base.yaml")
    parser.add_argument("--paper-batch-size", type=int, default=None,
                        help="batch size of the paper-size steps (default: each stage's in --paper-config)")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"torch_threads": torch.get_num_threads()}
    if not args.skip_generation:
        report["generation_paper_size"] = generation_fps(args.frames, args.batch_size)
        print(f"generation (paper size, CPU, {report['torch_threads']} threads): "
              f"{report['generation_paper_size']['frames_per_second']} frames/s", flush=True)
        if torch.cuda.is_available():
            report["generation_paper_size_gpu"] = generation_fps(max(args.frames, 64), args.batch_size, "cuda")
            print(f"generation (paper size, {torch.cuda.get_device_name()}): "
                  f"{report['generation_paper_size_gpu']['frames_per_second']} frames/s", flush=True)
    report["training_synth"] = training_speed(args.config, args.steps, warmup=2)
    width = max(len(stage) for stage in report["training_synth"]) + 1
    for stage, r in report["training_synth"].items():
        print(f"training {stage:{width}s}(synth, batch {r['batch_size']}): {r['steps_per_second']} steps/s", flush=True)
    if args.paper_steps:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {report['torch_threads']} threads"
        report["training_paper_size"] = training_speed(args.paper_config, 1, warmup=1, device=device,
                                                       batch_size=args.paper_batch_size)
        for stage, r in report["training_paper_size"].items():
            print(f"training {stage:{width}s}(paper size, {where}, batch {r['batch_size']}): "
                  f"{r['seconds_per_step']} s/step", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0
