"""Training samples for a SyncNet expert, drawn from any clip store.

One item = `windows_per_clip` 5-frame lip windows of ONE clip, each with its in-sync MFCC window,
at start frames that lie within `max_shift` frames of each other and at least `min_shift` apart.
In a batch every lip window is then paired with its own audio (positive), with the audio of the
other windows of its clip (time-shifted false pairs, shifts of min_shift .. max_shift frames, as
the original SyncNet made its false pairs by shifting the audio of the same clip) and with the
audio of the other clips (false pairs too); see `SyncNetModule`. Every audio window is embedded
once per step, so the negatives cost nothing extra.

Windows follow the scoring convention of `talkinghead.metrics.lse.sync_scores`: a clip with T
frames and N samples has L = min(T, N // 640) - 5 windows; lip window v = frames v .. v+4, audio
window v = MFCC frames 4v .. 4v+19 of `talkinghead.nn.syncnet.audio_features(audio)`; frames go
through `talkinghead.nn.syncnet.lip_frames` (crop, resize, BGR 0-255), exactly as when scoring.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from talkinghead.data.audio import mfcc_windows
from talkinghead.data.store import ClipStore
from talkinghead.nn.syncnet import LIP_FRAMES, SyncNetConfig, audio_features, lip_frames

__all__ = ["SyncNetDataModule", "SyncWindowDataset", "clip_windows"]

SAMPLES_PER_FRAME = 640


def clip_windows(num_frames: int, num_samples: int) -> int:
    """Number of SyncNet windows of a clip: min(T, N // 640) - 5 (<= 0: unusable)."""
    return min(int(num_frames), int(num_samples) // SAMPLES_PER_FRAME) - LIP_FRAMES


class SyncWindowDataset(Dataset):
    """Random groups of in-sync (lip window, audio window) pairs, one clip per group.

    Args:
        store: clip store folder or `ClipStore`.
        config: the SyncNet's config (input crop / size).
        split: store split to sample (clips too short for a group are skipped, and listed in
            `skipped`).
        windows_per_clip: W, windows per item (>= 1; 1 = no same-clip negatives).
        min_shift / max_shift: the W start frames are pairwise >= min_shift apart and span at most
            max_shift frames.
        length: items per epoch (default: one per usable window / W, at least 250).
        seed: base of every random choice, with the epoch (`set_epoch`) and the item index.
        cache: decode and prepare every frame of the split once and keep it in memory as uint8
            (fast; T x 3 x h x w bytes per clip). False reads the 5 x W JPEG frames per item.

    Item: lip (W, 3, 5, h, w) float32 BGR 0-255; audio (W, 1, 13, 20) float32; start (W,) int64
    window starts (frames); clip () int64, the clip's position in the store.
    """

    def __init__(
        self,
        store: str | ClipStore,
        config: SyncNetConfig,
        split: str = "train",
        windows_per_clip: int = 4,
        min_shift: int = 2,
        max_shift: int = 15,
        length: int | None = None,
        seed: int = 0,
        cache: bool = True,
    ):
        self.store = store if isinstance(store, ClipStore) else ClipStore(store)
        self.config = config
        if windows_per_clip < 1 or min_shift < 1 or max_shift < min_shift * (windows_per_clip - 1):
            raise ValueError(f"need windows_per_clip >= 1, min_shift >= 1 and max_shift >= min_shift x "
                             f"(windows_per_clip - 1), got {windows_per_clip}, {min_shift}, {max_shift}")
        self.windows_per_clip = int(windows_per_clip)
        self.min_shift, self.max_shift = int(min_shift), int(max_shift)
        need = self.min_shift * (self.windows_per_clip - 1) + 1
        self.clips: list[dict] = []
        self.windows: list[int] = []
        self._mfcc: list[torch.Tensor] = []
        self.skipped: list[str] = []
        for entry in self.store.clips(split):
            audio = self.store.load(entry, ["audio"])["audio"]
            count = clip_windows(entry["num_frames"], audio.shape[0])
            if count < need:
                self.skipped.append(entry["clip_id"])
                continue
            self.clips.append(entry)
            self.windows.append(count)
            self._mfcc.append(audio_features(torch.from_numpy(audio)))
        if not self.clips:
            raise ValueError(f"{self.store.root}: no clip of split {split!r} has >= {need} SyncNet windows "
                             f"({len(self.skipped)} too short)")
        self.length = int(length) if length is not None else max(250, sum(self.windows) // self.windows_per_clip)
        self.seed = int(seed)
        self.epoch = 0
        self._frames: list[torch.Tensor] | None = None
        if cache:
            self._frames = [self._prepare(e, range(int(e["num_frames"]))) for e in self.clips]

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _prepare(self, entry: dict, indices) -> torch.Tensor:
        """uint8 (n, 3, h, w) BGR net frames of `indices`."""
        rgb = torch.from_numpy(self.store.load_frames(entry, list(indices)))
        return lip_frames(rgb, self.config).to(torch.uint8)

    def _lips(self, k: int, start: int) -> torch.Tensor:
        if self._frames is not None:
            window = self._frames[k][start:start + LIP_FRAMES]
        else:
            window = self._prepare(self.clips[k], range(start, start + LIP_FRAMES))
        return window.permute(1, 0, 2, 3).float()  # (3, 5, h, w)

    def _audio(self, k: int, start: int) -> torch.Tensor:
        """(1, 13, 20) MFCC window `start` of clip k."""
        feat = self._mfcc[k]
        return mfcc_windows(feat[4 * start: 4 * start + 20], 1)[0]

    def starts(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """W sorted window starts in 0 .. count-1, pairwise >= min_shift apart, spanning <= max_shift."""
        w, gap = self.windows_per_clip, self.min_shift
        span = min(self.max_shift, count - 1)
        # W points in [0, span] with gaps >= `gap`: W sorted draws from [0, span - gap (W-1)] plus gap x rank
        free = span - gap * (w - 1)
        offsets = np.sort(rng.integers(0, free + 1, size=w)) + gap * np.arange(w)
        base = int(rng.integers(0, count - int(offsets[-1])))
        return base + offsets

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, int(index)]))
        k = int(rng.integers(len(self.clips)))
        starts = self.starts(rng, self.windows[k])
        return {
            "lip": torch.stack([self._lips(k, int(s)) for s in starts]),
            "audio": torch.stack([self._audio(k, int(s)) for s in starts]),
            "start": torch.from_numpy(starts.astype(np.int64)),
            "clip": torch.tensor(int(self.clips[k]["index"]), dtype=torch.int64),
        }


class SyncNetDataModule(LightningDataModule):
    """The expert stage's training data: `SyncWindowDataset` batches of `batch_size` items,
    `samples_per_epoch` items per epoch (Lightning shards them across DDP ranks). The dataset
    arguments are `SyncWindowDataset`'s."""

    def __init__(self, store, config: SyncNetConfig, *, batch_size: int, samples_per_epoch: int, seed: int,
                 split: str = "train", windows_per_clip: int = 4, min_shift: int = 2, max_shift: int = 15,
                 cache: bool = True, num_workers: int = 0):
        super().__init__()
        self.store, self.config, self.batch_size, self.num_workers = store, config, int(batch_size), int(num_workers)
        self.dataset_args = {"split": split, "windows_per_clip": windows_per_clip, "min_shift": min_shift,
                             "max_shift": max_shift, "length": samples_per_epoch, "seed": seed, "cache": cache}
        self.dataset: SyncWindowDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = SyncWindowDataset(self.store, self.config, **self.dataset_args)

    def train_dataloader(self) -> DataLoader:
        from talkinghead.data.datamodule import worker_context

        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, drop_last=True,
                            num_workers=self.num_workers, persistent_workers=False,  # set_epoch reaches new workers
                            multiprocessing_context=worker_context() if self.num_workers > 0 else None)
        if len(loader) == 0:
            raise ValueError(f"{self.store}: {len(self.dataset)} samples per epoch is less than one batch of "
                             f"{self.batch_size}")
        return loader
