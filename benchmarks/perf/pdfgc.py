"""PD-FGC speed on this machine: generation frames/s at paper size, training steps/s of the synth config.

    python benchmarks/perf/pdfgc.py [--threads N] [--frames 16] [--steps 20] [--paper-steps] [--json out.json]

* generation (on the CPU, and on the GPU too when CUDA is available): `PDFGCGenerator.synthesize`
  with `PDFGC(PDFGCConfig.paper())` (random weights; 224 px, ResNeXt50 E_app, FAN E_mot with the
  lip / pose / eye / emotion encoders, ResNetSE34 E_aud, modulated G), a 224 px reference, audio of
  `frames` frames and three distinct random clips of `frames` frames as pose, eye and emotion
  sources, so every factor branch runs (E_mot encodes each source): frames per second end to end
  (mel, encoders, smoothing, generator, resize), after a 2-frame warm-up call;
* training: each stage (motion, fine, expression) of experiments/pdfgc/synth.yaml (tiny networks at
  its sizes) on synthetic batches shaped like the data module's for that stage (augmented frames,
  shifted mel windows, eye donor / anchor, in-window frames as its data settings ask; landmarks of
  plausible faces for the mouth-box L1; no store needed), `steps` optimisation steps after 2 warm-up
  steps; steps (= batches) per second, with the batch size used;
* with --paper-steps: each stage of experiments/pdfgc/base.yaml (paper networks at 224 px, its
  batch sizes unless --paper-batch-size), one timed step after one warm-up step, on the GPU when
  CUDA is available, else on the CPU; seconds per step.

The VGG19 perceptual loss of the motion and expression stages runs only when its torchvision file is
in $TALKINGHEAD_HOME (see `StagedModule.perceptual_loss`); the report says whether it ran. The numbers depend on
the CPU and on what else runs on it; the report prints the thread count.
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
STAGES = ("motion", "fine", "expression")
NUM_IDENTITIES = 48  # the identity classifiers' classes (a store would give its train speakers)


def generation_fps(frames: int, batch_size: int, device: str = "cpu") -> dict:
    from talkinghead.methods.pdfgc.generate import PDFGCGenerator
    from talkinghead.methods.pdfgc.networks import PDFGC, PDFGCConfig

    torch.manual_seed(0)
    generator = PDFGCGenerator(PDFGC(PDFGCConfig.paper()), batch_size=batch_size, device=device)
    reference = torch.rand(3, 224, 224)
    pose, eye, emotion = (torch.rand(frames, 3, 224, 224) for _ in range(3))
    audio = torch.randn(frames * 640) * 0.1
    list(generator.synthesize(reference, audio[: 2 * 640], 2, pose[:2], eye[:2], emotion[:2]))  # warm-up
    start = time.perf_counter()
    out = torch.cat(list(generator.synthesize(reference, audio, frames, pose, eye, emotion)))
    seconds = time.perf_counter() - start  # synthesize yields CPU tensors: the GPU work is done
    assert out.shape == (frames, 3, 224, 224)
    return {"device": device, "frames": frames, "batch_size": batch_size, "seconds": round(seconds, 2),
            "frames_per_second": round(frames / seconds, 3)}


def _batch(cfg, stage: str, model_cfg, batch_size: int) -> dict:
    """A collated `TalkingHeadDataModule` batch of `stage` (the keys PD-FGC reads, at the stage's size)."""
    from talkinghead.methods.pdfgc.method import stage_data, stage_data_size

    data = stage_data(cfg, stage)
    b, t, s = batch_size, int(data["window"]), stage_data_size(model_cfg, stage)
    img = lambda *shape: torch.rand(*shape) * 2 - 1  # noqa: E731
    clip = torch.arange(b)
    batch = {
        "frames": img(b, t, 3, s, s), "reference": img(b, int(data["num_references"]), 3, s, s),
        "mel": torch.rand(b, t, 1, 80, 20),
        "pose": torch.randn(b, t, 6) * torch.tensor([0.1, 0.1, 0.1, 5.0, 5.0, 0.1])
        + torch.tensor([0.0, 0.0, 0.0, 112.0, 112.0, 0.0]),
        "landmarks": synthetic_faces(b, t, s)[0],  # plausible faces: the mouth-box L1 (loss.mouth_l1) reads them
        "speaker": torch.randint(0, NUM_IDENTITIES, (b,)), "clip_index": clip,
        "frame_index": torch.arange(t).repeat(b, 1) + 10,
    }
    others, shifted = int(data["num_negatives"]), int(data["num_shifted"])
    if others + shifted:  # [:num_negatives] other clips, then time-shifted windows of the same clip
        batch["negative_mel"] = torch.rand(b, others + shifted, t, 1, 80, 20)
        batch["negative_clip_index"] = torch.cat([((clip + 1) % b)[:, None].expand(b, others),
                                                  clip[:, None].expand(b, shifted)], 1)
    if data["augment"] != "none":
        batch["augmented"] = img(b, t, 3, s, s)
    if data["eye_pairs"]:
        batch["eye_donor"], batch["eye_anchor"] = img(b, t, 3, s, s), img(b, t, 3, s, s)
    if int(data["in_window"]) > 0:
        batch["window_frames"] = img(b, int(data["in_window"]), 3, s, s)
    return batch


def training_speed(config: Path, steps: int, warmup: int, device: str = "cpu",
                   batch_size: int | None = None) -> dict:
    """Each stage of `config`: `steps` timed optimisation steps after `warmup` ones on one synthetic batch."""
    from talkinghead.config import to_dict
    from talkinghead.methods.pdfgc.method import METHOD, model_config
    from talkinghead.methods.pdfgc.module import PDFGCModule

    cfg = METHOD.load_config(config)
    model_cfg = model_config(to_dict(cfg.model), num_identities=NUM_IDENTITIES)
    out = {}
    for stage in STAGES:
        scfg = cfg[stage]
        b = int(batch_size or scfg.batch_size)
        torch.manual_seed(0)
        batch = _batch(cfg, stage, model_cfg, b)
        module = PDFGCModule(stage=stage, model=model_cfg.to_dict(), loss=to_dict(scfg.loss),
                             optim=to_dict(scfg.optim), bank_size=int(cfg.bank_size), sample_every_n_steps=0,
                             name=str(cfg.name), gradient_clip=scfg.gradient_clip)
        out[stage] = speed_row(device, b, steps, timed_fit(module, batch, steps, warmup, device))
        if stage != "fine":
            out[stage]["vgg"] = getattr(module, "_vgg_state", None) == "on"
        del module, batch
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    return speed_main(argv, __doc__, "pdfgc", generation_fps, training_speed, 16, "frames per generator call", ROOT / "experiments")


if __name__ == "__main__":
    raise SystemExit(main())
