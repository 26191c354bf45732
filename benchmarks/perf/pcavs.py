"""PC-AVS speed on this machine: generation frames/s at paper size, training steps/s of the tiny config.

    python benchmarks/perf/pcavs.py [--threads N] [--frames 16] [--steps 20] [--json out.json]

* generation (on the CPU, and on the GPU too when CUDA is available): `PCAVSGenerator.synthesize` with the paper-size networks (random weights; 224 px,
  ResNeXt50 E_i, FAN E_n, ResNetSE34 E_c^a, modulated G), a 224 px reference, audio of `frames`
  frames and a pose-source clip: frames per second end to end (mel, encoders, generator, resize);
* training: each stage of experiments/pcavs/synth.yaml (tiny networks at its sizes) on synthetic
  batches shaped like the data module's (no store needed), `steps` optimisation steps after 2
  warm-up steps; steps (= batches) per second, with the batch size used.

The numbers depend on the CPU and on what else runs on it; the report prints the thread count.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import timed_fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def generation_fps(frames: int, batch_size: int, device: str = "cpu") -> dict:
    from talkinghead.methods.pcavs.generate import PCAVSGenerator
    from talkinghead.methods.pcavs.networks import PCAVS, PCAVSConfig

    torch.manual_seed(0)
    generator = PCAVSGenerator(PCAVS(PCAVSConfig.paper()), batch_size=batch_size, device=device)
    reference = torch.rand(3, 224, 224)
    pose = torch.rand(frames, 3, 224, 224)
    audio = torch.randn(frames * 640) * 0.1
    list(generator.synthesize(reference, audio[: 2 * 640], 2, pose[:2]))  # warm-up
    start = time.perf_counter()
    out = torch.cat(list(generator.synthesize(reference, audio, frames, pose)))
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert out.shape == (frames, 3, 224, 224)
    return {"device": device, "frames": frames, "batch_size": batch_size, "seconds": round(seconds, 2),
            "frames_per_second": round(frames / seconds, 3)}


def _batch(stage: str, cfg, model_cfg, data_size: int) -> dict:
    from talkinghead.methods.pcavs.method import stage_data

    data = stage_data(cfg, stage)
    b, t = int(cfg[stage]["batch_size"]), int(data["window"])
    n = int(data["num_negatives"]) + int(data["num_shifted"])
    s = data_size
    batch = {
        "frames": torch.rand(b, t, 3, s, s) * 2 - 1,
        "reference": torch.rand(b, int(data["num_references"]), 3, s, s) * 2 - 1,
        "augmented": torch.rand(b, t, 3, s, s) * 2 - 1,
        "mel": torch.rand(b, t, 1, 80, 20),
        "speaker": torch.randint(0, model_cfg.num_identities, (b,)),
        "clip_index": torch.arange(b),
        "frame_index": torch.arange(t).repeat(b, 1) + 10,
        "landmarks": torch.rand(b, t, 68, 2) * s * 0.5 + s * 0.25,
    }
    if n:
        batch["negative_mel"] = torch.rand(b, n, t, 1, 80, 20)
    return batch


def training_steps_per_second(steps: int, config: Path) -> dict:
    from talkinghead.methods.pcavs.module import PCAVSModule
    from talkinghead.config import to_dict
    from talkinghead.methods.pcavs.method import METHOD, model_config, stage_data_size

    cfg = METHOD.load_config(config)
    model_cfg = model_config(to_dict(cfg.model), num_identities=48)
    out = {}
    for stage in ("identity", "sync", "full"):
        size = stage_data_size(model_cfg, stage)
        batch = _batch(stage, cfg, model_cfg, size)
        module = PCAVSModule(stage=stage, model=model_cfg.to_dict(), loss=to_dict(cfg[stage].loss), optim=to_dict(cfg[stage].optim),
                             sample_every_n_steps=0)
        seconds = timed_fit(module, batch, steps, warmup=2)
        out[stage] = {"batch_size": int(cfg[stage]["batch_size"]), "steps": steps,
                      "steps_per_second": round(steps / seconds, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--frames", type=int, default=16, help="frames generated at paper size")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per generator call")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per stage")
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "pcavs" / "synth.yaml")
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
    report["training_tiny"] = training_steps_per_second(args.steps, args.config)
    for stage, r in report["training_tiny"].items():
        print(f"training {stage:8s} (tiny, batch {r['batch_size']}): {r['steps_per_second']} steps/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
