"""LSE-C / LSE-D speed and agreement: our batched `sync_scores` vs the reference `SyncNetInstance.evaluate`.

    python benchmarks/perf/metrics_lse.py                       # 2 clips of 3 s
    python benchmarks/perf/metrics_lse.py --store data/store/synth-vox2 --clips 4
    python benchmarks/perf/metrics_lse.py --reference-dir /path/to/syncnet_python

The reference is joonson/syncnet_python (`SyncNetInstance.py`, `SyncNetModel.py`), used unmodified
from a folder outside this repository (default ``$TALKINGHEAD_SYNCNET_REFERENCE`` or
``/tmp/syncnet_python``; it needs ``python_speech_features``, in the dev extra). If it cannot be
imported, the benchmark says why and times ours only.

What is compared, per clip:
* the same network weights in both: random weights in the official shapes (BatchNorm statistics
  randomised too; the real `syncnet_v2.model` is not shipped), saved once and loaded into the
  reference `S` with its own `loadParameters` and into our `SyncNet`;
* the same inputs: the clip's aligned 224 px frames and its 16 kHz audio. The reference's
  `evaluate` normally extracts JPEG frames and a 16-bit wav with ffmpeg from a face-track video; here
  its ffmpeg call, `glob`, `cv2.imread` and `wavfile.read` are redirected to the in-memory arrays
  (8-bit BGR frames = round(255 x RGB) reversed; int16 audio = round(32768 x audio)), so the rest of
  `evaluate` runs unchanged: its float64 video tensor, its 20-window batches, its MFCC
  (python_speech_features), its `calc_pdist` loop, offset / confidence / median filter. When CUDA is
  not available, its `.cuda()` calls are made no-ops for the duration of the call.
* ours: `talkinghead.metrics.lse.sync_scores(net, frames, audio)` on the float RGB frames.
* timed: the whole scoring call, from arrays in memory to the scores (decoding the video is not in
  either); best of `--repeats` wall time, with the process CPU time of that run (steadier than wall
  time on a shared machine); both on the same device with the same torch thread count.
* agreement: max |difference| of the confidence (LSE-C), the min distance (LSE-D, the reference's
  from its returned per-window distances) and the 31 mean distances, and whether the AV offsets
  agree.

Prints one line per clip and a summary with the speed ratio (target >= 5x). On a CPU the ratio is
bounded by the network itself (both sides spend most of the time in the same convolutions); the
reference's overheads (float64 video copy, per-batch window copies and host-device transfers, the
per-window Python loop) weigh more on a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkinghead.metrics.lse import sync_scores  # noqa: E402
from talkinghead.nn.syncnet import SyncNet, quantize_int16  # noqa: E402

DEFAULT_REFERENCE = os.environ.get("TALKINGHEAD_SYNCNET_REFERENCE", "/tmp/syncnet_python")
DEFAULT_STORE = ROOT / "data" / "store" / "synth-vox2"


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def random_official_net(seed: int = 0) -> SyncNet:
    """Official-shape SyncNet with random weights and random BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    net = SyncNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    return net.eval()


def load_clips(store: Path | None, count: int, seconds: float, seed: int = 0) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, frames (T, 3, 224, 224) float RGB [0, 1], audio (N,) float) from a clip store, else
    synthetic clips (smooth random frames and noise audio) of `seconds`."""
    clips = []
    if store is not None and (Path(store) / "index.json").is_file():
        from talkinghead.data.store import ClipStore

        source = ClipStore(store)
        entries = source.clips("test") or source.clips()
        for entry in entries[:count]:
            frames = source.load_frames(entry, range(int(entry["num_frames"])))
            audio = source.load(entry, ["audio"])["audio"]
            clips.append((entry["clip_id"], torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0,
                          torch.from_numpy(audio)))
        if clips:
            return clips
    gen = torch.Generator().manual_seed(seed)
    frames_n = int(round(seconds * 25))
    for k in range(count):
        low = torch.rand(frames_n, 3, 28, 28, generator=gen)
        frames = torch.nn.functional.interpolate(low, size=(224, 224), mode="bilinear", align_corners=False)
        audio = 0.1 * torch.randn(int(round(seconds * 16000)), generator=gen)
        clips.append((f"synthetic-{k}", frames.clamp(0, 1), audio.clamp(-1, 1)))
    return clips


# ---------------------------------------------------------------------------------------------
# the reference, fed from memory
# ---------------------------------------------------------------------------------------------
def import_reference(folder: str | Path):
    """The reference `SyncNetInstance` module from `folder`, or raise ImportError saying why."""
    folder = Path(folder)
    if not (folder / "SyncNetInstance.py").is_file() or not (folder / "SyncNetModel.py").is_file():
        raise ImportError(f"{folder}: no SyncNetInstance.py / SyncNetModel.py (fetch joonson/syncnet_python there)")
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("SyncNetInstance")
    finally:
        sys.path.remove(str(folder))


@contextlib.contextmanager
def _cuda_noop(active: bool):
    """Make `.cuda()` a no-op on modules and tensors (the reference calls it unconditionally)."""
    if not active:
        yield
        return
    module_cuda, tensor_cuda = torch.nn.Module.cuda, torch.Tensor.cuda
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.nn.Module.cuda, torch.Tensor.cuda = module_cuda, tensor_cuda


class Reference:
    """The reference `SyncNetInstance` with the given weights, evaluating in-memory arrays."""

    def __init__(self, module, state_path: Path, work_dir: Path):
        self.module = module
        self.cpu = not torch.cuda.is_available()
        with _cuda_noop(self.cpu):
            self.instance = module.SyncNetInstance()
            self.instance.loadParameters(str(state_path))
        self.work_dir = work_dir

    def evaluate(self, frames: torch.Tensor, audio: torch.Tensor, batch_size: int = 20, vshift: int = 15):
        """(offset, confidence, min distance, mean distances (31,)) from the reference code."""
        bgr = (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).flip(-1).numpy()
        pcm = quantize_int16(audio).numpy().astype(np.int16)
        names = [f"{i + 1:06d}.jpg" for i in range(len(bgr))]
        lookup = {name: np.ascontiguousarray(img) for name, img in zip(names, bgr)}
        mod = self.module
        saved = (mod.subprocess, mod.glob, mod.cv2, mod.wavfile)
        mod.subprocess = SimpleNamespace(call=lambda *a, **k: 0)
        mod.glob = SimpleNamespace(glob=lambda pattern: list(lookup))
        mod.cv2 = SimpleNamespace(imread=lambda name: lookup[os.path.basename(name)])
        mod.wavfile = SimpleNamespace(read=lambda path: (16000, pcm))
        opt = SimpleNamespace(tmp_dir=str(self.work_dir), reference="bench", batch_size=batch_size, vshift=vshift)
        try:
            with _cuda_noop(self.cpu), contextlib.redirect_stdout(io.StringIO()):
                offset, conf, dists = self.instance.evaluate(opt, videofile="in-memory.avi")
        finally:
            mod.subprocess, mod.glob, mod.cv2, mod.wavfile = saved
        mdist = np.asarray(dists, dtype=np.float64).mean(axis=0)
        return int(offset), float(conf), float(mdist.min()), mdist


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------
def _best(fn, repeats: int):
    """(best wall seconds, process CPU seconds of that run, result)."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(max(1, repeats)):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    return best, cpu, out


def run(store: str | Path | None = None, clips: int = 2, seconds: float = 3.0, repeats: int = 1,
        batch_size: int = 64, reference_dir: str | Path | None = None, seed: int = 0,
        threads: int | None = None) -> None:
    """Time and compare (see the module docstring); prints the results. `threads`: torch CPU threads
    for both (default: torch's own choice)."""
    if threads:
        torch.set_num_threads(int(threads))
    store = Path(store) if store is not None else (DEFAULT_STORE if (DEFAULT_STORE / "index.json").is_file() else None)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_clips(store, clips, seconds, seed)
    net = random_official_net(seed).to(device)
    print(f"LSE benchmark: {len(data)} clips ({'store ' + str(store) if store else 'synthetic'}), device {device}, "
          f"{torch.get_num_threads()} torch threads, official-size SyncNet with random weights")

    reference = None
    with tempfile.TemporaryDirectory(prefix="lse-bench-") as tmp:
        state_path = Path(tmp) / "random_syncnet_v2.model"
        torch.save({k: v.cpu() for k, v in net.state_dict().items()}, state_path)
        try:
            reference = Reference(import_reference(reference_dir or DEFAULT_REFERENCE), state_path, Path(tmp))
        except Exception as error:  # noqa: BLE001 - the benchmark reports and goes on with ours only
            print(f"reference not available ({type(error).__name__}: {error}); timing ours only")

        sync_scores(net, data[0][1][:10], data[0][2][: 10 * 640], batch_size=batch_size)  # warm-up
        ours_t, ref_t, ours_c, ref_c, diffs = [], [], [], [], []
        for name, frames, audio in data:
            t_ours, c_ours, ours = _best(lambda: sync_scores(net, frames, audio, batch_size=batch_size), repeats)
            ours_t.append(t_ours)
            ours_c.append(c_ours)
            line = (f"  {name}: {len(frames)} frames, ours {t_ours:.3f} s (cpu {c_ours:.2f} s; LSE-C "
                    f"{ours.confidence:.4f}, LSE-D {ours.min_distance:.4f}, offset {ours.offset})")
            if reference is not None:
                t_ref, c_ref, (r_off, r_conf, r_min, r_dist) = _best(lambda: reference.evaluate(frames, audio), repeats)
                ref_t.append(t_ref)
                ref_c.append(c_ref)
                d = (abs(ours.confidence - r_conf), abs(ours.min_distance - r_min),
                     float(np.abs(ours.distances.double().numpy() - r_dist).max()), ours.offset == r_off)
                diffs.append(d)
                line += (f"; reference {t_ref:.3f} s (cpu {c_ref:.2f} s; LSE-C {r_conf:.4f}, LSE-D {r_min:.4f}, "
                         f"offset {r_off}); x{t_ref / t_ours:.1f}; |dLSE-C| {d[0]:.2e} |dLSE-D| {d[1]:.2e} "
                         f"|d dist| {d[2]:.2e}")
            print(line, flush=True)

    print(f"ours:      {np.mean(ours_t):.3f} s per clip, process CPU {np.mean(ours_c):.2f} s "
          f"({np.mean([len(f) for _, f, _ in data]):.0f} frames)")
    if ref_t:
        ratio = np.sum(ref_t) / np.sum(ours_t)
        print(f"reference: {np.mean(ref_t):.3f} s per clip, process CPU {np.mean(ref_c):.2f} s")
        print(f"speed-up:  {ratio:.2f}x wall, {np.sum(ref_c) / np.sum(ours_c):.2f}x process CPU time "
              f"(target >= 5x: {'met' if ratio >= 5 else 'not met'})")
        worst = np.max(np.array([d[:3] for d in diffs]), axis=0)
        same = all(d[3] for d in diffs)
        print(f"agreement: max |dLSE-C| {worst[0]:.2e}, max |dLSE-D| {worst[1]:.2e}, max |d mean distance| "
              f"{worst[2]:.2e}, AV offsets {'identical' if same else 'DIFFERENT'}"
              f" ({'identical to float32 rounding' if worst.max() < 1e-3 and same else 'NOT identical'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=None, help="clip store (default data/store/synth-vox2 if present)")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of synthetic clips (no store)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reference-dir", default=None, help=f"syncnet_python checkout (default {DEFAULT_REFERENCE})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both (default: torch's)")
    args = parser.parse_args()
    run(store=args.store, clips=args.clips, seconds=args.seconds, repeats=args.repeats,
        batch_size=args.batch_size, reference_dir=args.reference_dir, threads=args.threads)


if __name__ == "__main__":
    main()
