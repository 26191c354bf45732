"""TalkingHeadDataModule: training windows from the clip store (or its LitData shards).

One class serves every method: each method's trainer says what a sample carries (window size,
references, negatives, an augmentation object, ...); nothing here is specific to one method. A
sample is a window of `window` frames of one clip, `frame_step` apart (1: consecutive), plus
whatever the method needs around it (references, negative audio, augmented copies, eye anchors,
in-window frames). Only the frames a sample uses are read and decoded.

Sample dict (one item; the default collate adds a leading batch dimension B)
---------------------------------------------------------------------------
T = window, R = num_references, N = num_negatives + num_shifted, S = image_size,
A = audio_samples. A window spans (T - 1) * frame_step + 1 frames.

=====================  ========================  ===================================================
key                    shape, dtype              content
=====================  ========================  ===================================================
frames                 (T, 3, S, S) float32      target frames, RGB in [-1, 1] (absent with
                                                 decode_frames=False, as every image key below)
reference              (R, 3, S, S) float32      random frames of the same clip, outside the window
                                                 when the clip allows (with reference_span=P: among
                                                 the context frames), [-1, 1]
reference_index        (R,) int64                their frame numbers
reference_landmarks    (R, 68, 2) float32        their landmarks (output pixels)
reference_pose         (R, 6) float32            their poses (as `pose`)
audio                  (T, A) float32            audio_samples=A > 0: the 16 kHz waveform, A samples
                                                 centred on each target frame's 40 ms (zeros beyond
                                                 the clip's audio)
context_index          (P,) int64                reference_span=P > 0: the P frames right before the
                                                 window (the window starts at frame >= P when the
                                                 clip is long enough; else clamped to frame 0); a
                                                 reference video followed by its continuation
context_landmarks      (P, 68, 2) float32        their landmarks (output pixels)
context_pose           (P, 6) float32            their poses
context_audio          (P, A) float32            their audio windows (with audio_samples)
mel                    (T, 1, 80, 20) float32    `audio.mel_windows` of the target frames
negative_mel           (N, T, 1, 80, 20)         [:num_negatives] windows of OTHER clips (random
                                                 position), [num_negatives:] time-shifted windows of
                                                 the same clip (|shift| >= min_shift, either
                                                 direction); only when N > 0
negative_clip_index    (N,) int64                clip of each negative (== clip_index for shifted)
negative_frame_index   (N, T) int64              frames each negative window is centred on
landmarks              (T, 68, 2) float32        dlib-68 (x, y) in output-image pixels
landmarks_found        (T,) bool                 False where the detector missed (tracked or interpolated)
pose                   (T, 6) float32            as stored: rotation vector (rad), tx, ty, log scale
                                                 (aligned 224-px convention, not rescaled)
speaker                () int64                  index into the train split's sorted speakers,
                                                 -1 for a speaker not seen in training
frame_index            (T,) int64                frame numbers of the window in the clip
clip_index             () int64                  position of the clip in the store index
                                                 (`ClipStore.clips()` / shards' clips.json)
augmented              (T, 3, S, S) float32      augment given: `frames` (in [0, 1]) through
                                                 `augment`, then mapped to [-1, 1]
eye_donor              (T, 3, S, S) float32      eye_pairs: a window of another clip (``eye_donor="other_clip"``,
                                                 the paper) or of the same clip at least min_shift frames away
                                                 (``"same_clip"``: same identity), [-1, 1]
eye_donor_landmarks    (T, 68, 2) float32        its landmarks (output pixels)
eye_donor_clip_index   () int64                  its clip
eye_donor_frame_index  (T,) int64                its frames
eye_anchor             (T, 3, S, S) float32      composite_eye_region(base=frames, donor=eye_donor,
                                                 mask=eye_region_mask(donor landmarks)), [-1, 1]
window_frames          (K, 3, S, S) float32      in_window=K > 0: the K frames centred on the middle
                                                 target frame (clamped to the clip), each through
                                                 InWindowAugment, [-1, 1]
window_index           (K,) int64                their frame numbers
truth_*                (T, ...)                  SynthTalk ground truth of the target frames, when
                                                 the store has it (truth_landmarks in output pixels)
=====================  ========================  ===================================================

Window positions avoid the first 2 and the last frame when the clip is long enough, so every
target frame's 0.2 s mel window lies inside the audio (no edge replication), as in the
reference PC-AVS / PD-FGC loaders.

Determinism
-----------
Every random choice of a sample derives from (seed, epoch, k, split), k being the sample's
position in the epoch: window positions, references, other clips and augmentation parameters
(numpy Generator for choices; `torch.random.fork_rng` + `torch.manual_seed` around the
transforms). The sampler yields (epoch, k, clip) triples, so batches are identical for any
num_workers, across runs, and with persistent workers. The epoch is the attached trainer's
`current_epoch`, else the value given to `set_epoch()`. Validation / test samples always use
epoch 0 (the same windows every epoch). Files are opened lazily in each worker.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from talkinghead.data.audio import FRAMES_PER_VIDEO_FRAME, mel_windows
from talkinghead.data.corpora.base import FPS, SAMPLE_RATE
from talkinghead.data.store import ClipStore, ShardSource
from talkinghead.data.transforms import InWindowAugment, composite_eye_region, eye_region_mask

__all__ = ["Augment", "TalkingHeadDataModule", "WindowDataset", "SampleConfig", "EpochSampler"]

#: A sample augmentation: frames (T, 3, S, S) float in [0, 1] -> the same shape, in [0, 1]. It must
#: be picklable (worker processes get a copy) and draw its randomness from torch's global CPU
#: generator (the data module seeds it per sample), e.g. `talkinghead.data.transforms.MotionAppearanceAugment()`
#: or an augmentation a method composes from `talkinghead.data.transforms` itself.
Augment = Callable[[torch.Tensor], torch.Tensor]
#: Frames kept clear of each clip end (before, after) when the clip is long enough: frame f's mel
#: window spans mel frames 4(f-2) .. 4(f-2)+19 of M = 4T+7, i.e. it fits for 2 <= f <= T-2.
AUDIO_MARGIN = (2, 1)
_STREAMS = {"train": 0, "val": 1, "test": 2, "predict": 3}
#: Where an eye donor window comes from: another clip (the paper: another person), or the same clip
#: at least ``min_shift`` frames away (the same person, so only the eye motion tells donor from base).
EYE_DONORS = ("other_clip", "same_clip")


@dataclass(frozen=True)
class SampleConfig:
    """What one sample holds (see the module docstring)."""

    window: int = 5
    frame_step: int = 1
    num_references: int = 1
    num_negatives: int = 0
    num_shifted: int = 0
    min_shift: int = 5
    image_size: int = 224
    augment: Augment | None = None
    eye_pairs: bool = False
    eye_donor: str = "other_clip"
    in_window: int = 0
    reference_span: int = 0
    decode_frames: bool = True
    audio_samples: int = 0

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {self.frame_step}")
        for name in ("num_references", "num_negatives", "num_shifted", "min_shift", "in_window", "reference_span",
                     "audio_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.eye_donor not in EYE_DONORS:
            raise ValueError(f"eye_donor must be one of {EYE_DONORS}, got {self.eye_donor!r}")
        if not self.decode_frames and (self.augment is not None or self.eye_pairs or self.in_window):
            raise ValueError("decode_frames=False reads no images, so augment, eye_pairs and in_window must be off")
        if self.augment is not None and (isinstance(self.augment, str) or not callable(self.augment)):
            raise ValueError(f"augment must be a callable frames -> frames (an augmentation object) or None, got "
                             f"{self.augment!r}; a method maps its config's name to an object itself")


def _to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float32 (n, 3, H, W) in [0, 1], contiguous (NCHW memory layout: a permuted
    view would keep channels-last strides, which makes every later op slower)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def _signed(x: torch.Tensor) -> torch.Tensor:
    return x.mul(2.0).sub_(1.0)


class WindowDataset(Dataset):
    """Map-style dataset of windows; indexed by (epoch, k, local clip) from `EpochSampler`.

    An int index k is also accepted (epoch `self.epoch`, clip k % len(clips)).
    `source`: ClipStore or ShardSource; `positions`: store positions of this split's clips.
    """

    def __init__(
        self,
        source: ClipStore | ShardSource,
        positions: list[int],
        config: SampleConfig,
        seed: int = 0,
        speaker_index: dict[str, int] | None = None,
        stream: str = "train",
        length: int | None = None,
        truth_keys: tuple[str, ...] | None = None,
    ):
        if not positions:
            raise ValueError("WindowDataset needs at least one clip")
        self.source = source
        self.positions = [int(p) for p in positions]
        self.config = config
        self.seed = int(seed)
        self.speaker_index = dict(speaker_index or {})
        self.stream = _STREAMS.get(stream, 0)
        self.length = int(length) if length is not None else len(self.positions)
        self.epoch = 0
        if truth_keys is None:
            first = self.positions[0]
            truth_keys = tuple(sorted(k for k in source.keys(first) if k.startswith("truth_")))
        self.truth_keys = tuple(truth_keys)
        self._augment = config.augment
        self._sizes: dict[int, tuple[int, int]] = {}
        self._in_window = InWindowAugment(window_size=config.in_window) if config.in_window > 0 else None

    def __len__(self) -> int:
        return self.length

    # -- random choices (numpy Generator) -------------------------------------------------
    @property
    def _span(self) -> int:
        """Frames a window covers, first to last."""
        return (self.config.window - 1) * self.config.frame_step + 1

    def _start_range(self, num_frames: int) -> tuple[int, int]:
        """Inclusive range of window starts (audio margins when the clip is long enough; after
        `reference_span` context frames when it is long enough for that too)."""
        w = self._span
        lo, hi = AUDIO_MARGIN[0], num_frames - w - AUDIO_MARGIN[1]
        if hi < lo:
            lo, hi = 0, max(0, num_frames - w)
        span = self.config.reference_span
        if span and hi >= span:
            lo = max(lo, span)
        return lo, hi

    def _indices(self, start: int, num_frames: int) -> np.ndarray:
        steps = np.arange(self.config.window) * self.config.frame_step
        return np.clip(start + steps, 0, num_frames - 1).astype(np.int64)

    def _random_start(self, rng: np.random.Generator, num_frames: int) -> int:
        lo, hi = self._start_range(num_frames)
        return int(rng.integers(lo, hi + 1))

    def _other_clip(self, rng: np.random.Generator, local: int) -> int:
        n = len(self.positions)
        if n == 1:
            return local
        j = int(rng.integers(n - 1))
        return j + 1 if j >= local else j

    def _shifted_start(self, rng: np.random.Generator, start: int, num_frames: int) -> int:
        lo, hi = self._start_range(num_frames)
        if hi - lo < self.config.min_shift:  # too short for the margins: use the whole clip
            lo, hi = 0, max(0, num_frames - self._span)
        starts = np.arange(lo, hi + 1)
        far = starts[np.abs(starts - start) >= self.config.min_shift]
        if far.size == 0:  # clip too short: as far as it allows
            dist = np.abs(starts - start)
            far = starts[dist == dist.max()]
        return int(far[rng.integers(far.size)])

    def _context(self, start: int, num_frames: int) -> np.ndarray:
        """The `reference_span` frames before the window (clamped to the clip)."""
        span = self.config.reference_span
        return np.clip(np.arange(start - span, start), 0, num_frames - 1).astype(np.int64)

    def _references(self, rng: np.random.Generator, num_frames: int, window: np.ndarray,
                    context: np.ndarray) -> np.ndarray:
        r = self.config.num_references
        if r == 0:
            return np.zeros(0, np.int64)
        candidates = np.unique(context) if context.size else np.arange(num_frames)
        outside = np.setdiff1d(candidates, window)
        pool = outside if outside.size else candidates
        return rng.choice(pool, size=r, replace=pool.size < r).astype(np.int64)

    # -- reading --------------------------------------------------------------------------
    def _frames(self, pos: int, indices: np.ndarray) -> tuple[dict[int, np.ndarray], float, float]:
        """Decode the unique `indices` of clip `pos`, resized; returns ({frame: HxWx3}, sx, sy)."""
        unique = np.unique(indices)
        images = self.source.load_frames(pos, unique)
        size = self.config.image_size
        h, w = images.shape[1:3]
        sx, sy = size / w, size / h
        if (h, w) != (size, size):
            interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
            images = np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images])
        return dict(zip(unique.tolist(), images)), sx, sy

    @staticmethod
    def _gather(decoded: dict[int, np.ndarray], indices: np.ndarray) -> torch.Tensor:
        return _to_unit(np.stack([decoded[int(i)] for i in indices]))

    @staticmethod
    def _scale_points(points: np.ndarray, sx: float, sy: float) -> torch.Tensor:
        pts = torch.from_numpy(np.asarray(points, dtype=np.float32).copy())
        if sx != 1.0 or sy != 1.0:  # pixel centres: x' = (x + 0.5) * s - 0.5 (cv2.resize mapping)
            pts[..., 0] = (pts[..., 0] + 0.5) * sx - 0.5
            pts[..., 1] = (pts[..., 1] + 0.5) * sy - 0.5
        return pts

    def _stored_size(self, pos: int) -> tuple[int, int]:
        """(height, width) of clip `pos`'s stored frames (one frame decoded, then cached)."""
        if pos not in self._sizes:
            self._sizes[pos] = tuple(self.source.load_frames(pos, [0]).shape[1:3])
        return self._sizes[pos]

    def _audio_windows(self, pos: int, indices: np.ndarray) -> torch.Tensor:
        """(T, audio_samples) waveform windows centred on the target frames (zero beyond the audio)."""
        n = self.config.audio_samples
        wav = np.asarray(self.source.load(pos, ["audio"])["audio"], dtype=np.float32)
        hop = SAMPLE_RATE // FPS
        starts = indices * hop + hop // 2 - n // 2
        padded = np.pad(wav, (n, n + hop * (int(indices.max()) + 1)))
        return torch.from_numpy(np.stack([padded[s + n: s + 2 * n] for s in starts]))

    def _mel(self, cache: dict, pos: int) -> torch.Tensor:
        if pos not in cache:
            cache[pos] = torch.from_numpy(self.source.load(pos, ["mel"])["mel"])
        return cache[pos]

    @staticmethod
    def _mel_windows(mel: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        """`mel_windows(mel, ...)[indices]`, building only the windows asked for when they are
        consecutive: frame f's window starts at mel column 4(f-2), so the spectrogram cut at
        column 4(lo-2) gives frames lo.. as its frames 2.. (same edge replication at the tail)."""
        lo = int(indices.min())
        cut = FRAMES_PER_VIDEO_FRAME * (lo - 2)
        if lo >= 2 and cut < mel.shape[-1] and np.array_equal(indices, lo + np.arange(len(indices))):
            return mel_windows(mel[:, cut:], len(indices) + 2)[2:].contiguous()
        return mel_windows(mel, int(indices.max()) + 1)[torch.from_numpy(indices)].contiguous()

    # -- the sample -----------------------------------------------------------------------
    def _key(self, index) -> tuple[int, int, int]:
        if isinstance(index, (tuple, list)):
            epoch, k, local = (int(v) for v in index)
        else:
            epoch, k = self.epoch, int(index)
            local = k % len(self.positions)
        return epoch, k, local

    def __getitem__(self, index) -> dict[str, Any]:
        epoch, k, local = self._key(index)
        cfg = self.config
        seq = np.random.SeedSequence([self.seed, epoch, k, self.stream])
        np_seq, torch_seq = seq.spawn(2)
        rng = np.random.default_rng(np_seq)
        torch_seed = int(torch_seq.generate_state(1, np.uint64)[0] >> np.uint64(1))

        pos = self.positions[local]
        entry = self.source.entry(pos)
        num_frames = int(entry["num_frames"])
        start = self._random_start(rng, num_frames)
        frame_idx = self._indices(start, num_frames)
        context_idx = self._context(start, num_frames)
        ref_idx = self._references(rng, num_frames, frame_idx, context_idx)
        centre = int(frame_idx[len(frame_idx) // 2])
        win_idx = (
            self._in_window.window_indices(centre, num_frames).numpy().astype(np.int64)
            if self._in_window is not None else np.zeros(0, np.int64)
        )

        size = cfg.image_size
        sample: dict[str, Any] = {"reference_index": torch.from_numpy(ref_idx)}
        if cfg.decode_frames:
            decoded, sx, sy = self._frames(pos, np.concatenate([frame_idx, ref_idx, win_idx]))
            frames01 = self._gather(decoded, frame_idx)
            sample["frames"] = _signed(frames01)
            sample["reference"] = (_signed(self._gather(decoded, ref_idx)) if ref_idx.size
                                   else torch.zeros(0, 3, size, size))
        else:  # landmarks still in output pixels: the stored frame size from one decoded frame per clip
            h, w = self._stored_size(pos)
            sx, sy = size / w, size / h
        sample["reference_landmarks"] = self._scale_points(
            self.source.take_rows(pos, "landmarks", ref_idx).reshape(len(ref_idx), 68, 2), sx, sy)
        sample["reference_pose"] = torch.from_numpy(
            np.asarray(self.source.take_rows(pos, "pose", ref_idx), dtype=np.float32).reshape(len(ref_idx), 6).copy())
        if cfg.audio_samples:
            sample["audio"] = self._audio_windows(pos, frame_idx)
        if cfg.reference_span:
            sample["context_index"] = torch.from_numpy(context_idx)
            sample["context_landmarks"] = self._scale_points(self.source.take_rows(pos, "landmarks", context_idx), sx, sy)
            sample["context_pose"] = torch.from_numpy(
                np.asarray(self.source.take_rows(pos, "pose", context_idx), dtype=np.float32).copy())
            if cfg.audio_samples:
                sample["context_audio"] = self._audio_windows(pos, context_idx)

        mels: dict[int, torch.Tensor] = {}
        sample["mel"] = self._mel_windows(self._mel(mels, pos), frame_idx)
        negatives, neg_clips, neg_frames = [], [], []
        for _ in range(cfg.num_negatives):
            other = self.positions[self._other_clip(rng, local)]
            other_frames = int(self.source.entry(other)["num_frames"])
            idx = self._indices(self._random_start(rng, other_frames), other_frames)
            negatives.append(self._mel_windows(self._mel(mels, other), idx))
            neg_clips.append(other)
            neg_frames.append(idx)
        for _ in range(cfg.num_shifted):
            idx = self._indices(self._shifted_start(rng, start, num_frames), num_frames)
            negatives.append(self._mel_windows(self._mel(mels, pos), idx))
            neg_clips.append(pos)
            neg_frames.append(idx)
        if negatives:
            sample["negative_mel"] = torch.stack(negatives)
            sample["negative_clip_index"] = torch.tensor(neg_clips, dtype=torch.int64)
            sample["negative_frame_index"] = torch.from_numpy(np.stack(neg_frames))

        sample["landmarks"] = self._scale_points(self.source.take_rows(pos, "landmarks", frame_idx), sx, sy)
        sample["landmarks_found"] = torch.from_numpy(
            np.asarray(self.source.take_rows(pos, "landmarks_found", frame_idx), dtype=bool).copy())
        sample["pose"] = torch.from_numpy(
            np.asarray(self.source.take_rows(pos, "pose", frame_idx), dtype=np.float32).copy())
        sample["speaker"] = torch.tensor(self.speaker_index.get(entry["speaker"], -1), dtype=torch.int64)
        sample["frame_index"] = torch.from_numpy(frame_idx)
        sample["clip_index"] = torch.tensor(pos, dtype=torch.int64)

        donor01 = None
        if cfg.eye_pairs:
            if cfg.eye_donor == "same_clip":
                donor, donor_frames = pos, num_frames
                donor_idx = self._indices(self._shifted_start(rng, start, num_frames), num_frames)
            else:
                donor = self.positions[self._other_clip(rng, local)]
                donor_frames = int(self.source.entry(donor)["num_frames"])
                donor_idx = self._indices(self._random_start(rng, donor_frames), donor_frames)
            donor_decoded, dsx, dsy = self._frames(donor, donor_idx)
            donor01 = self._gather(donor_decoded, donor_idx)
            donor_lm = self._scale_points(self.source.take_rows(donor, "landmarks", donor_idx), dsx, dsy)
            mask = eye_region_mask(donor_lm, size, size)
            sample["eye_donor"] = _signed(donor01)
            sample["eye_donor_landmarks"] = donor_lm
            sample["eye_donor_clip_index"] = torch.tensor(donor, dtype=torch.int64)
            sample["eye_donor_frame_index"] = torch.from_numpy(donor_idx)
            sample["eye_anchor"] = _signed(composite_eye_region(frames01, donor01, mask))

        if self._augment is not None or self._in_window is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch_seed)
                if self._augment is not None:
                    sample["augmented"] = _signed(self._augment(frames01))
                if self._in_window is not None:
                    sample["window_frames"] = _signed(self._in_window(self._gather(decoded, win_idx)))
                    sample["window_index"] = torch.from_numpy(win_idx)

        for key in self.truth_keys:
            rows = self.source.take_rows(pos, key, frame_idx) if self.source.has(pos, key) else None
            if rows is None:
                raise KeyError(f"clip {entry['clip_id']} lacks {key!r} (other clips of the split have it)")
            if key == "truth_landmarks":
                sample[key] = self._scale_points(rows, sx, sy)
            else:
                sample[key] = torch.from_numpy(np.ascontiguousarray(rows).copy())
        return sample


class EpochSampler(Sampler):
    """Yields (epoch, k, local clip) for k = 0 .. length-1.

    shuffle=True: clips in a random order drawn from (seed, epoch), repeated (fresh order each
    pass) when `length` exceeds the clip count. shuffle=False: clips in order, epoch fixed by
    `epoch_fn` (validation passes a constant 0).
    """

    def __init__(self, num_clips: int, length: int, seed: int, shuffle: bool, epoch_fn: Callable[[], int]):
        self.num_clips = int(num_clips)
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch_fn = epoch_fn

    def __len__(self) -> int:
        return self.length

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.length) % self.num_clips
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0x0DE5]))
        passes = -(-self.length // self.num_clips)
        return np.concatenate([rng.permutation(self.num_clips) for _ in range(passes)])[: self.length]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = int(self.epoch_fn())
        for k, local in enumerate(self.order(epoch).tolist()):
            yield (epoch, k, local)


def worker_context(start: str = "forkserver"):
    """The multiprocessing context for DataLoader workers. "forkserver" (default) forks workers from
    a clean single-threaded server that has torch and this module imported (so a worker starts in
    well under a second); forking the training process itself ("fork") can hand a worker a lock
    that another thread held at that moment, and the worker then hangs."""
    import multiprocessing

    context = multiprocessing.get_context(start)
    if start == "forkserver":
        context.set_forkserver_preload(["torch", "talkinghead.data.datamodule"])
    return context


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)


class TalkingHeadDataModule(LightningDataModule):
    """Windows of processed clips for every method (see the module docstring for the sample).

    Args:
        store: clip store folder (`talkinghead preprocess`); or
        shards: LitData shard folder (`write_shards`); exactly one of the two.
        train_split / val_split / test_split: split names (test_split None -> val_split).
        window: target frames per sample.
        frame_step: frames from one target frame to the next (1: consecutive; larger spreads the
            window over the clip, e.g. so that every pair of its frames is >= min_shift apart).
        num_references: random frames of the same clip (outside the window when possible).
        num_negatives: mel windows from other clips; num_shifted: time-shifted mel windows of the
            same clip, |shift| >= min_shift frames, either direction.
        image_size: output frame size (frames are resized, landmarks rescaled, if it differs).
        augment: None, or a picklable callable frames (T, 3, S, S) in [0, 1] -> the same (`Augment`)
            -> key `augmented` (e.g. `transforms.MotionAppearanceAugment()`, or a method's own
            augmentation). Seeded per sample; the method maps its config's choice to the object.
        eye_pairs: eye-contrastive anchors (`eye_donor`, `eye_anchor`; PD-FGC uses them).
        eye_donor: where the eye donor comes from, `EYE_DONORS` ("other_clip": the paper).
        in_window: in-window decorrelation frames (`window_frames`, `transforms.InWindowAugment`), 0 = off.
        reference_span: > 0: the `reference_span` frames right before the window are its context
            (``context_*`` keys: landmarks, poses, audio; no images) and the references come from
            them (Rhythmic Head's reference video y_1:tau and its continuation); 0: references
            anywhere outside the window.
        decode_frames: False reads no images (sequence models on landmarks, poses and audio).
        audio_samples: > 0: key `audio`, that many waveform samples around each target frame.
        batch_size, num_workers, pin_memory, persistent_workers, drop_last: DataLoader settings.
        worker_start: how worker processes start ("forkserver", "spawn" or "fork"). The default,
            "forkserver", forks workers from a clean single-threaded server: a worker forked from
            the training process itself can inherit a lock held by one of its threads and hang
            (seen at an epoch boundary with "fork").
        seed: base of every random choice (with epoch and sample position).
        samples_per_epoch: training samples per epoch (None: one window per clip).
    """

    def __init__(
        self,
        store: str | None = None,
        shards: str | None = None,
        train_split: str = "train",
        val_split: str = "test",
        test_split: str | None = None,
        window: int = 5,
        frame_step: int = 1,
        num_references: int = 1,
        num_negatives: int = 0,
        num_shifted: int = 0,
        min_shift: int = 5,
        image_size: int = 224,
        augment: Augment | None = None,
        eye_pairs: bool = False,
        eye_donor: str = "other_clip",
        in_window: int = 0,
        reference_span: int = 0,
        decode_frames: bool = True,
        audio_samples: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        drop_last: bool = False,
        worker_start: str = "forkserver",
    ):
        super().__init__()
        if (store is None) == (shards is None):
            raise ValueError("give exactly one of `store` (clip store folder) or `shards` (LitData shards folder)")
        # the augmentation object stays out of the hyper-parameters (checkpoints load with
        # weights_only=True, which refuses arbitrary objects); its repr is recorded instead
        self.save_hyperparameters(ignore=["augment"])
        self.hparams["augment"] = None if augment is None else repr(augment)
        self.store = store
        self.shards = shards
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split if test_split is not None else val_split
        self.sample_config = SampleConfig(
            window=window, frame_step=frame_step, num_references=num_references, num_negatives=num_negatives,
            num_shifted=num_shifted, min_shift=min_shift, image_size=image_size, augment=augment,
            eye_pairs=eye_pairs, eye_donor=eye_donor, in_window=in_window, reference_span=reference_span,
            decode_frames=decode_frames, audio_samples=audio_samples,
        )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1 or None, got {samples_per_epoch}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.samples_per_epoch = samples_per_epoch
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.drop_last = bool(drop_last)
        if worker_start not in ("forkserver", "spawn", "fork"):
            raise ValueError(f"worker_start must be 'forkserver', 'spawn' or 'fork', got {worker_start!r}")
        self.worker_start = worker_start
        self._epoch = 0
        self._source: ClipStore | ShardSource | None = None
        self._datasets: dict[str, WindowDataset | None] = {}

    # -- data -----------------------------------------------------------------------------
    @property
    def source(self) -> ClipStore | ShardSource:
        if self._source is None:
            self._source = ClipStore(self.store) if self.store is not None else ShardSource(self.shards)
        return self._source

    @property
    def speakers(self) -> list[str]:
        """Sorted speaker vocabulary of the train split (what `speaker` indexes)."""
        return self.source.speakers(self.train_split)

    @property
    def num_speakers(self) -> int:
        return len(self.speakers)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used when no trainer is attached (a trainer's current_epoch takes precedence)."""
        self._epoch = int(epoch)

    def current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.current_epoch)
        return self._epoch

    def _dataset(self, split: str, stream: str) -> WindowDataset | None:
        key = f"{stream}:{split}"
        if key not in self._datasets:
            clips = self.source.clips(split)
            if not clips:
                splits = sorted({e["split"] for e in self.source.entries})
                if stream == "train":
                    raise ValueError(f"{self.source}: no clips in split {split!r} (splits: {splits})")
                warnings.warn(f"{self.source}: no clips in split {split!r} (splits: {splits}); no {stream} data",
                              stacklevel=2)
                self._datasets[key] = None
            else:
                length = self.samples_per_epoch if stream == "train" else None
                self._datasets[key] = WindowDataset(
                    self.source, [e["index"] for e in clips], self.sample_config, seed=self.seed,
                    speaker_index=self.source.speaker_index(self.train_split), stream=stream, length=length,
                )
        return self._datasets[key]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._dataset(self.train_split, "train")
            self._dataset(self.val_split, "val")
        if stage in (None, "validate"):
            self._dataset(self.val_split, "val")
        if stage in (None, "test"):
            self._dataset(self.test_split, "test")

    def _loader(self, dataset: WindowDataset, shuffle: bool, epoch_fn: Callable[[], int], drop_last: bool):
        sampler = EpochSampler(len(dataset.positions), len(dataset), self.seed, shuffle, epoch_fn)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=drop_last,
            worker_init_fn=_worker_init,
            multiprocessing_context=worker_context(self.worker_start) if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset(self.train_split, "train")
        return self._loader(dataset, True, self.current_epoch, self.drop_last)

    def val_dataloader(self):
        dataset = self._dataset(self.val_split, "val")
        return [] if dataset is None else self._loader(dataset, False, lambda: 0, False)

    def test_dataloader(self):
        dataset = self._dataset(self.test_split, "test")
        return [] if dataset is None else self._loader(dataset, False, lambda: 0, False)
