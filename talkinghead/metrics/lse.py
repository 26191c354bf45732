"""Lip-sync error scores with SyncNet: LSE-C (confidence), LSE-D (distance), NLSE-C.

`sync_scores` computes, batched, exactly what the reference `SyncNetInstance.evaluate`
(joonson/syncnet_python) computes for one face track:

1. frames -> BGR, 0-255 (rounded, as the reference reads 8-bit images), cropped / resized to the
   net's input (`talkinghead.nn.syncnet.lip_frames`; the official net takes the whole 224 px
   face, so aligned 224 px faces pass unchanged); audio -> int16 values -> 13 MFCCs
   (python_speech_features defaults, `talkinghead.nn.syncnet.audio_features`);
2. usable length ``min(T, N // 640)``; ``L = usable - 5`` windows: video window v = frames
   v .. v+4, audio window v = MFCC frames 4v .. 4v+19;
3. one embedding per window and tower;
4. for every video window i and offset j in 0 .. 2*vshift, the distance
   ``|| v_i - a_{i + j - vshift} + 1e-6 ||_2`` (`torch.nn.functional.pairwise_distance`), where
   audio embeddings outside 0 .. L-1 are zero vectors (the reference zero-pads the audio
   *embeddings* by vshift on each side);
5. the mean over windows of each offset's distance: ``distances`` (2*vshift + 1,);
   LSE-D = min, LSE-C = median - min (31 values, so the exact middle one), AV offset =
   vshift - argmin (positive: the audio leads the video by that many frames).

Differences from the reference are only in how it is computed: every window goes through the
net in large batches (the reference: 20 at a time, rebuilt from a float64 copy of the video),
through `FusedSyncNet` (BatchNorms folded, the lip tower as 2-D convolutions; equal outputs to
float32 rounding), and all offsets are one tensor op instead of a Python loop. The reference's
face detection / tracking / cropping (S3FD, run_pipeline.py) is not part of this: the inputs are
already aligned face crops. `benchmarks/perf/metrics_lse.py` compares both on the same arrays.

The `lse` metric (`LSE`) averages LSE-C and LSE-D over clips and, given the LSE-C of the real
videos, reports NLSE-C (PD-FGC) = (LSE-C_generated - LSE-C_real) / LSE-C_real.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from talkinghead.data.audio import FRAMES_PER_VIDEO_FRAME, MFCC_STEP, mfcc_windows
from talkinghead.metrics.base import ClipMetric, register_metric
from talkinghead.metrics.syncnet_expert import OFFICIAL_NAME, load_expert, load_official
from talkinghead.nn.syncnet import LIP_FRAMES, FusedSyncNet, SyncNet, audio_features, lip_frames

__all__ = ["LSE", "SyncScores", "SAMPLES_PER_FRAME", "VSHIFT", "nlse_c", "offset_distances", "real_confidence",
           "sync_scores"]

#: Audio samples per 25 fps video frame at 16 kHz.
SAMPLES_PER_FRAME = FRAMES_PER_VIDEO_FRAME * MFCC_STEP  # 640
#: The reference's offset search range (frames, each direction).
VSHIFT = 15
#: The reference's minimum number of frames: usable length - 5 windows must be >= 1.
_MIN_USABLE = LIP_FRAMES + 1


@dataclass
class SyncScores:
    """SyncNet scores of one clip.

    confidence:   LSE-C ("Sync_conf"): median(distances) - min(distances).
    min_distance: LSE-D ("Min dist"): min(distances).
    offset:       AV offset in frames, vshift - argmin(distances) (positive: audio leads video).
    distances:    (2*vshift + 1,) float32 CPU tensor, mean embedding distance per offset; entry j
                  pairs video window i with audio window i + j - vshift.
    num_windows:  L, the number of 5-frame windows scored.
    """

    confidence: float
    min_distance: float
    offset: int
    distances: Tensor
    num_windows: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"LSE-C": self.confidence, "LSE-D": self.min_distance, "offset": self.offset,
                "distances": self.distances.tolist(), "num_windows": self.num_windows}


def offset_distances(video_emb: Tensor, audio_emb: Tensor, vshift: int = VSHIFT) -> Tensor:
    """(L, D) video and audio embeddings -> (L, 2*vshift+1) distances, the reference's `calc_pdist`.

    Entry [i, j] = pairwise_distance(v_i, a_{i+j-vshift}) with zero vectors for audio indices
    outside 0 .. L-1 (pairwise_distance adds eps = 1e-6 to the difference).
    """
    if video_emb.dim() != 2 or video_emb.shape != audio_emb.shape:
        raise ValueError(f"offset_distances: need two (L, D) tensors of one shape, got {tuple(video_emb.shape)} "
                         f"and {tuple(audio_emb.shape)}")
    n = video_emb.shape[0]
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))
    idx = torch.arange(n, device=video_emb.device)[:, None] + torch.arange(2 * vshift + 1, device=video_emb.device)
    return F.pairwise_distance(video_emb[:, None, :], padded[idx])


def _as_tensor(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except Exception as error:  # noqa: BLE001
        raise TypeError(f"sync_scores: {name} must be a tensor or array, got {type(x).__name__}") from error


def sync_scores(
    syncnet: SyncNet | torch.nn.Module,
    frames: Tensor,
    audio: Tensor,
    batch_size: int = 64,
    vshift: int = VSHIFT,
) -> SyncScores:
    """LSE-C / LSE-D / AV offset of one clip, as the reference SyncNet evaluation (module docstring).

    syncnet: a `SyncNet` (a `FusedSyncNet` snapshot is made for the call; the net is not changed),
        or any module with `forward_lip`, `forward_aud` and `config` (crop / image size) such as a
        `FusedSyncNet`; it runs on the device of its parameters (CPU if it has none).
    frames: (T, 3, H, W) float RGB in [0, 1], aligned face crops at 25 fps (224 px for the
        official net; any size is resized to the net's), or (T, H, W, 3) uint8 RGB.
    audio: (N,) float mono 16 kHz in [-1, 1].
    batch_size: windows per forward pass (memory: about 4.5 MB per window at 224 px).
    Raises ValueError when the clip gives no window (fewer than 6 frames or 6 x 640 samples).
    """
    frames = _as_tensor(frames, "frames")
    audio = _as_tensor(audio, "audio")
    if audio.dim() != 1:
        raise ValueError(f"sync_scores: audio must be mono (N,) at 16 kHz, got shape {tuple(audio.shape)}")
    if frames.dim() != 4:
        raise ValueError(f"sync_scores: frames must be (T, 3, H, W) RGB in [0, 1], got shape {tuple(frames.shape)}")
    if batch_size < 1:
        raise ValueError(f"sync_scores: batch_size must be >= 1, got {batch_size}")
    usable = min(frames.shape[0], audio.shape[0] // SAMPLES_PER_FRAME)
    num = usable - LIP_FRAMES
    if num < 1:
        raise ValueError(
            f"sync_scores: clip too short for SyncNet: {frames.shape[0]} frames and {audio.shape[0]} audio samples "
            f"({audio.shape[0] / 16000:.3f} s) give {usable} usable frames; at least {_MIN_USABLE} are needed")
    net = FusedSyncNet(syncnet) if isinstance(syncnet, SyncNet) else syncnet
    for name in ("forward_lip", "forward_aud", "config"):
        if not hasattr(net, name):
            raise TypeError(f"sync_scores: syncnet must be a SyncNet or have {name} (got {type(net).__name__})")
    first = next(iter(net.parameters()), None) if isinstance(net, torch.nn.Module) else None
    device = first.device if first is not None else torch.device("cpu")
    with torch.inference_mode():
        feat = audio_features(audio.detach().cpu())
        aud_windows = mfcc_windows(feat, num)  # (L, 1, 13, 20)
        lips = lip_frames(frames[: num + LIP_FRAMES - 1].to(device), net.config)  # (L+4, 3, h, w)
        view = lips.unfold(0, LIP_FRAMES, 1)  # (L, 3, h, w, 5)
        video_emb, audio_emb = [], []
        for start in range(0, num, batch_size):
            stop = min(num, start + batch_size)
            video_emb.append(net.forward_lip(view[start:stop].permute(0, 1, 4, 2, 3).contiguous()))
            audio_emb.append(net.forward_aud(aud_windows[start:stop].to(device)))
        dists = offset_distances(torch.cat(video_emb).float(), torch.cat(audio_emb).float(), vshift)
        mdist = dists.mean(0).cpu()
    minval, minidx = torch.min(mdist, 0)
    conf = torch.median(mdist) - minval
    return SyncScores(confidence=float(conf), min_distance=float(minval), offset=int(vshift - int(minidx)),
                      distances=mdist, num_windows=int(num))


def nlse_c(lse_c_generated: Tensor | float, lse_c_real: Tensor | float) -> Tensor:
    """NLSE-C (PD-FGC) = (LSE-C_generated - LSE-C_real) / LSE-C_real; 0 = as in sync as the real videos."""
    real = torch.as_tensor(lse_c_real, dtype=torch.float64)
    if float(real) == 0.0:
        raise ValueError("nlse_c: LSE-C of the real videos is 0")
    return (torch.as_tensor(lse_c_generated, dtype=torch.float64) - real) / real


def real_confidence(syncnet: SyncNet, store, split: str = "train", limit: int | None = None,
                    batch_size: int = 64) -> float:
    """Mean LSE-C of the real clips of a clip store split: the LSE-C_real of NLSE-C.

    store: a clip store folder or `talkinghead.data.store.ClipStore`; limit: at most this many
    clips (in index order). Clips too short to score are skipped; none left is a ValueError.
    """
    from talkinghead.data.store import ClipStore

    source = store if isinstance(store, ClipStore) else ClipStore(store)
    entries = source.clips(split)[: limit or None]
    net = FusedSyncNet(syncnet) if isinstance(syncnet, SyncNet) else syncnet
    values = []
    for entry in entries:
        frames = torch.from_numpy(source.load_frames(entry, range(int(entry["num_frames"]))))
        audio = torch.from_numpy(source.load(entry, ["audio"])["audio"])
        if min(len(frames), len(audio) // SAMPLES_PER_FRAME) < _MIN_USABLE:
            continue
        values.append(sync_scores(net, frames, audio, batch_size=batch_size).confidence)
    if not values:
        raise ValueError(f"{source.root}: no clip of split {split!r} long enough to score with SyncNet")
    return float(sum(values) / len(values))


@register_metric("lse")
class LSE(ClipMetric):
    """LSE-C (higher better) and LSE-D (lower better), means over clips; optionally NLSE-C.

    Convention: the reference SyncNet evaluation (`sync_scores`) on the generated frames (aligned
    224 px face crops; the official net uses them whole, like the reference's face-track crops; an
    expert crops / resizes them as its `SyncNetConfig` says) and the driving audio, offsets
    -15 .. +15 frames.

    syncnet: the scoring net; None loads the official `syncnet_v2.model` (raises
        `talkinghead.weights.MissingWeightsError` naming the file when it is absent).
    syncnet_name: what produced the numbers (shown beside the table), e.g.
        `talkinghead.metrics.syncnet_expert.load_expert`'s description. Required with a custom net.
    real_confidence: LSE-C of the real videos of the training data; adds column "NLSE-C" =
        (LSE-C - real_confidence) / real_confidence. Its best value is 0 (lower |NLSE-C| is
        better): it is registered as lower-is-better (False) and tables show the signed value.
    batch_size: windows per SyncNet forward pass.

    The net runs as a `FusedSyncNet` copy (BatchNorm running statistics, whatever the net's mode),
    refreshed whenever the net's weights change; the net itself is not modified.
    """

    inputs = ("fake", "audio")
    columns = {"LSE-C": True, "LSE-D": False}

    def __init__(
        self,
        syncnet: SyncNet | None = None,
        syncnet_name: str | None = None,
        real_confidence: float | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if syncnet is None:
            syncnet = load_official()
            syncnet_name = syncnet_name or OFFICIAL_NAME
        if not isinstance(syncnet, SyncNet):
            raise TypeError(f"LSE: syncnet must be a talkinghead.nn.syncnet.SyncNet, got {type(syncnet).__name__}")
        if not syncnet_name:
            raise ValueError("LSE: give syncnet_name, saying which SyncNet produced the numbers")
        if real_confidence is not None and float(real_confidence) == 0.0:
            raise ValueError("LSE: real_confidence (LSE-C of the real videos) must be non-zero for NLSE-C")
        self.syncnet = syncnet
        self.syncnet_name = str(syncnet_name)
        self.real_confidence = None if real_confidence is None else float(real_confidence)
        self.batch_size = int(batch_size)
        self.columns = dict(type(self).columns)
        if self.real_confidence is not None:
            self.columns["NLSE-C"] = False
        object.__setattr__(self, "_fused", None)  # a cache, not a submodule (stays out of state_dict)
        object.__setattr__(self, "_fused_key", None)
        self.add_state("confidence_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("distance_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @classmethod
    def from_expert(cls, checkpoint, real_confidence: float | None = None, **kwargs: Any) -> "LSE":
        """LSE scored by a SyncNet expert file (`talkinghead.metrics.syncnet_expert.load_expert`), named by it."""
        net, name = load_expert(checkpoint)
        return cls(net, name, real_confidence=real_confidence, **kwargs)

    def _net(self) -> FusedSyncNet:
        """The fused snapshot of `syncnet`, rebuilt when the net's tensors changed (their in-place
        version counters) or moved, so scoring during training always sees the current weights."""
        tensors = list(self.syncnet.parameters()) + list(self.syncnet.buffers())
        key = (tensors[0].device, sum(t._version for t in tensors), tuple(t.data_ptr() for t in tensors))
        if self._fused is None or key != self._fused_key:
            object.__setattr__(self, "_fused", FusedSyncNet(self.syncnet))
            object.__setattr__(self, "_fused_key", key)
        return self._fused

    def update(self, fake: Tensor, audio: Tensor) -> None:  # type: ignore[override]
        """One clip: fake (T, 3, H, W) RGB in [0, 1] at 25 fps, audio (N,) 16 kHz in [-1, 1]."""
        scores = sync_scores(self._net(), fake, audio, batch_size=self.batch_size)
        self.confidence_sum += scores.confidence
        self.distance_sum += scores.min_distance
        self.clips += 1

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """{"LSE-C", "LSE-D"[, "NLSE-C"]}: means over the clips seen (NaN when none)."""
        n = self.clips.to(torch.float64)
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        conf = self.confidence_sum / n if self.clips > 0 else nan
        out = {"LSE-C": conf.float(), "LSE-D": (self.distance_sum / n if self.clips > 0 else nan).float()}
        if self.real_confidence is not None:
            out["NLSE-C"] = nlse_c(conf, self.real_confidence).float()
        return out
