"""Data-path throughput: the clip store + TalkingHeadDataModule vs. a naive raw-mp4 loader.

    python benchmarks/perf/data.py                      # generate a SynthTalk corpus, preprocess, compare
    python benchmarks/perf/data.py --corpus RAW         # reuse a raw vox2-layout corpus
    python benchmarks/perf/data.py --store STORE        # reuse a store (the naive loader reads the raw
                                                        # files named in its clips' meta)
    python benchmarks/perf/data.py --store STORE --corpus RAW   # reuse both (preprocessing is timed
                                                        # on --preprocess-limit clips into a scratch store)

Prints:
* preprocessing throughput (clips / minute) of `preprocess_corpus(..., workers=--workers)`;
* training-batch throughput (samples/s, batches/s) of the PC-AVS configuration (224 px, window 5,
  1 reference, 2 negatives, PC-AVS augmentation, batch 8, 2 workers) from the clip store, after
  warm-up batches;
* the same sampling and augmentation fed by a naive loader that, for every sample, decodes the raw
  mp4 (`read_video`), loads the audio (`load_audio`) and computes the mel (`mel_spectrogram`), for
  the target clip and for each negative's clip. (It skips face detection and alignment, which a real
  naive loader would also need, so the ratio understates the gap.)
* the ratio (target >= 5x); then the same comparison without augmentation (the data path alone).
The two loaders run alternately `--repeats` times and the best run of each is reported.

Defaults (16 clips of 3 s, 40 + 12 timed batches) finish in about 3-4 minutes on two cores.
Longer clips (`--duration`, VoxCeleb2 averages ~8 s) cost the naive loader more and the store
loader nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkinghead.data.audio import load_audio, mel_spectrogram  # noqa: E402
from talkinghead.data.corpora import read_corpus  # noqa: E402
from talkinghead.data.datamodule import (  # noqa: E402
    EpochSampler,
    TalkingHeadDataModule,
    WindowDataset,
    _worker_init,
)
from talkinghead.data.store import ClipStore  # noqa: E402
from talkinghead.data.video import probe_video, read_video  # noqa: E402
from talkinghead.methods.pcavs.augment import PCAVSAugment  # noqa: E402


class RawSource:
    """The store's reading interface over raw files, decoding them on every call (naive).

    `clips`: (clip_id, speaker, split, video, audio or None) tuples.
    """

    def __init__(self, clips: list[tuple]):
        self.files = [(video, audio) for _, _, _, video, audio in clips]
        self.entries = []
        for i, (clip_id, speaker, split, video, _) in enumerate(clips):
            info = probe_video(video)
            self.entries.append({"clip_id": clip_id, "speaker": speaker, "split": split,
                                 "num_frames": int(info.num_frames), "index": i})

    @classmethod
    def from_corpus(cls, dataset: str, root) -> "RawSource":
        return cls([(c.clip_id, c.speaker, c.split, c.video, c.audio) for c in read_corpus(dataset, root)])

    @classmethod
    def from_store(cls, root) -> "RawSource":
        """The raw files a store was made from (meta source_video / source_audio)."""
        cs = ClipStore(root)
        clips = []
        for e in cs.clips():
            meta = cs.meta(e)
            audio = meta.get("source_audio")
            clips.append((e["clip_id"], e["speaker"], e["split"], meta["source_video"],
                          None if audio in (None, meta["source_video"]) else audio))
        return cls(clips)

    def clips(self, split=None):
        return [e for e in self.entries if split is None or e["split"] == split]

    def speaker_index(self, split="train"):
        return {s: i for i, s in enumerate(sorted({e["speaker"] for e in self.clips(split)}))}

    def entry(self, pos):
        return self.entries[int(pos)] if not isinstance(pos, dict) else pos

    def keys(self, pos):
        return ["frames", "mel", "landmarks", "landmarks_found", "pose"]

    def has(self, pos, key):
        return key in self.keys(pos)

    def load(self, pos, keys):
        video, audio = self.files[int(pos)]
        out = {}
        for k in keys:
            if k != "mel":
                raise KeyError(k)
            out["mel"] = mel_spectrogram(load_audio(audio or video)).numpy()
        return out

    def load_frames(self, pos, indices):
        frames, _ = read_video(self.files[int(pos)][0])
        return frames[np.clip(np.asarray(indices), 0, len(frames) - 1)]

    def take_rows(self, pos, key, indices):
        # no detector in the naive path (generous to it): zeros of the right shape
        n = len(indices)
        return {"landmarks": np.zeros((n, 68, 2), np.float32), "pose": np.zeros((n, 6), np.float32),
                "landmarks_found": np.ones(n, bool)}[key]


def time_loader(loader: DataLoader, warmup: int, batches: int) -> dict:
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    samples = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        samples += len(batch["frames"])
    seconds = time.perf_counter() - start
    del it
    return {"batches": batches, "samples": samples, "seconds": round(seconds, 3),
            "samples_per_s": samples / seconds, "batches_per_s": batches / seconds}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="folder for the generated corpus / store (default: a temporary folder)")
    p.add_argument("--corpus", help="existing raw corpus (vox2 layout) to reuse")
    p.add_argument("--dataset", default="vox2", help="corpus reader of --corpus (default vox2)")
    p.add_argument("--store", help="existing clip store to reuse")
    p.add_argument("--train-identities", type=int, default=6)
    p.add_argument("--test-identities", type=int, default=2)
    p.add_argument("--clips-per-video", type=int, default=2)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per generated clip")
    p.add_argument("--preprocess-limit", type=int, default=8,
                   help="clips preprocessed for timing when --store is reused")
    p.add_argument("--backend", default="dlib", help="landmark backend for preprocessing")
    p.add_argument("--workers", type=int, default=2, help="DataLoader / preprocessing workers")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=5, help="untimed batches first (store loader)")
    p.add_argument("--batches", type=int, default=40, help="timed batches (store loader)")
    p.add_argument("--naive-warmup", type=int, default=2)
    p.add_argument("--naive-batches", type=int, default=12, help="timed batches (naive loader)")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per loader (best is kept)")
    p.add_argument("--skip-plain", action="store_true", help="skip the no-augmentation comparison")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="th-perf-data-"))
    work.mkdir(parents=True, exist_ok=True)
    from talkinghead.data.preprocess import preprocess_corpus

    results: dict = {"work": str(work)}
    corpus = Path(args.corpus) if args.corpus else None
    if corpus is None and args.store is None:
        from talkinghead.data.synthtalk.generate import SynthConfig, generate

        corpus = work / "raw"
        config = SynthConfig(layout="vox2", train_identities=args.train_identities,
                             test_identities=args.test_identities, clips_per_video=args.clips_per_video,
                             duration=args.duration)
        t0 = time.perf_counter()
        gen = generate(corpus, config, workers=args.workers, progress=False)
        results["generate"] = {"clips": gen["clips"], "seconds": round(time.perf_counter() - t0, 2)}
        print(f"SynthTalk corpus: {gen['clips']} clips of {args.duration:g} s in "
              f"{results['generate']['seconds']} s -> {corpus}")

    if args.store:
        store = Path(args.store)
        scratch, limit = work / "preprocess-timing", args.preprocess_limit
    else:
        store = work / "store"
        scratch, limit = store, None
    if corpus is not None:
        t0 = time.perf_counter()
        report = preprocess_corpus(args.dataset, corpus, scratch, workers=args.workers, backend=args.backend,
                                   limit=limit, progress=False)
        seconds = time.perf_counter() - t0
        if report["processed"] == 0:
            print(f"preprocessing: nothing processed ({report['skipped']} already in {scratch}); no timing")
        else:
            rate = report["processed"] / seconds * 60
            results["preprocess"] = {"processed": report["processed"], "failed": len(report["failed"]),
                                     "seconds": round(seconds, 2), "clips_per_min": rate, "workers": args.workers}
            print(f"preprocessing: {report['processed']} clips ({len(report['failed'])} failed) in {seconds:.1f} s "
                  f"with {args.workers} workers = {rate:.1f} clips/min")
    else:
        print("preprocessing: not timed (give --corpus to time it)")

    torch.set_num_threads(1)
    raw = RawSource.from_corpus(args.dataset, corpus) if corpus is not None else RawSource.from_store(store)
    train = raw.clips("train")
    n_store = (args.warmup + args.batches) * args.batch_size
    n_naive = (args.naive_warmup + args.naive_batches) * args.batch_size

    def augmentation(augment: str):
        return PCAVSAugment() if augment == "pcavs" else None

    def store_loader(augment: str) -> DataLoader:
        dm = TalkingHeadDataModule(store=str(store), window=5, num_references=1, num_negatives=2,
                                   augment=augmentation(augment),
                                   image_size=args.image_size, batch_size=args.batch_size,
                                   num_workers=args.workers, seed=0, samples_per_epoch=n_store)
        return dm.train_dataloader()

    def naive_loader(augment: str) -> DataLoader:
        config = TalkingHeadDataModule(store=str(store), window=5, num_references=1, num_negatives=2,
                                       augment=augmentation(augment), image_size=args.image_size).sample_config
        dataset = WindowDataset(raw, [e["index"] for e in train], config, seed=0,
                                speaker_index=raw.speaker_index(), length=n_naive, truth_keys=())
        return DataLoader(dataset, batch_size=args.batch_size,
                          sampler=EpochSampler(len(train), n_naive, 0, True, lambda: 0),
                          num_workers=args.workers, worker_init_fn=_worker_init)

    # Alternate the two loaders `--repeats` times and keep each one's best run: the machine may be
    # shared, and best-of-N (like timeit) is the figure least disturbed by other load.
    print(f"training batches: window 5, 1 reference, 2 negatives, batch {args.batch_size}, "
          f"{args.workers} workers, {args.image_size} px; best of {args.repeats}")
    for augment, label in (("pcavs", "PC-AVS augmentation"), ("none", "no augmentation (data path only)")):
        if augment == "none" and args.skip_plain:
            continue
        fast_runs, slow_runs = [], []
        for _ in range(args.repeats):
            fast_runs.append(time_loader(store_loader(augment), args.warmup, args.batches))
            slow_runs.append(time_loader(naive_loader(augment), args.naive_warmup, args.naive_batches))
        fast = max(fast_runs, key=lambda r: r["samples_per_s"])
        slow = max(slow_runs, key=lambda r: r["samples_per_s"])
        ratio = fast["samples_per_s"] / slow["samples_per_s"]
        results[augment] = {"store_loader": fast, "naive_loader": slow, "ratio": ratio,
                            "store_runs": [r["samples_per_s"] for r in fast_runs],
                            "naive_runs": [r["samples_per_s"] for r in slow_runs]}
        print(f"  {label}:")
        print(f"    clip store loader : {fast['samples_per_s']:7.1f} samples/s  {fast['batches_per_s']:6.2f} batches/s"
              f"  ({fast['batches']} batches)")
        print(f"    naive mp4 loader  : {slow['samples_per_s']:7.1f} samples/s  {slow['batches_per_s']:6.2f} batches/s"
              f"  ({slow['batches']} batches)")
        print(f"    speed-up          : {ratio:.1f}x" + (" (target >= 5x)" if augment == "pcavs" else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
