"""Validation during training: a few held-out clips generated and scored with the harness's metrics.

`ValidationClips` reads the first ``num_clips`` clips of a store split (self-driven, as the
benchmark's protocol: the reference is the clip's first frame, the pose / eye / emotion sources
are the clip's own frames, the audio is the clip's). `Validator` holds the metrics
(`talkinghead.metrics.build_metric`, e.g. ``ssim``, ``lmd``, ``lse``) and scores what a stage's
`StagedModule.validation_generator()` makes of each clip; the runner runs it at the end of every
stage and every ``validation.every_n_steps`` batches, logs ``val/<column>`` (e.g. ``val/SSIM``,
``val/LMD``) and keeps a "best" checkpoint by ``validation.monitor``. The first clip is also
written as an mp4 with its audio (``<log dir>/samples/<stage>-step<N>.mp4``) and sent to W&B.

``lse`` needs a SyncNet: the store's expert (``<store>/experts/syncnet/syncnet_expert.pt``, made
by ``make train METHOD=syncnet``) or it is left out with a note.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from talkinghead.generation import GenerationRequest, write_talking_head

__all__ = ["ValidationClips", "Validator"]

log = logging.getLogger(__name__)


class ValidationClips(torch.utils.data.Dataset):
    """The first `num_clips` clips of `split` as dicts {clip_id, reference (3, 224, 224), audio (N,),
    frames (T, 3, 224, 224)} (float32, frames in [0, 1]; T <= `num_frames`)."""

    def __init__(self, store: str | Path, split: str = "test", num_clips: int = 2, num_frames: int = 50):
        from talkinghead.data.store import ClipStore

        self.store = ClipStore(store)
        self.entries = self.store.clips(split)[: int(num_clips)]
        self.num_frames = int(num_frames)
        if not self.entries:
            log.warning("%s: no clips in split %r: no validation", store, split)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        reader = self.store.reader(entry)
        count = min(int(entry["num_frames"]), self.num_frames)
        frames = torch.from_numpy(reader.frames(range(count))).permute(0, 3, 1, 2).float() / 255.0
        audio = torch.from_numpy(reader.read("audio")[: count * 640].astype(np.float32))
        return {"clip_id": entry["clip_id"], "reference": frames[0].clone(), "audio": audio, "frames": frames}


class Validator:
    """Scores generated clips with named metrics; metrics whose weights are missing are left out
    (with a warning naming them). Not a torch module: nothing of it enters a checkpoint."""

    def __init__(self, metrics: list[str], store: str | Path | None = None, device: str | torch.device = "cpu"):
        from talkinghead.metrics import build_metric
        from talkinghead.weights import MissingWeightsError

        self.metrics = {}
        self.notes: list[str] = []
        for name in metrics:
            try:
                if name == "lse":
                    from talkinghead.metrics.lse import LSE
                    from talkinghead.metrics.syncnet_expert import default_expert_path

                    expert = default_expert_path(store) if store is not None else None
                    if expert is None or not Path(expert).is_file():
                        raise MissingWeightsError(f"no SyncNet expert for this store ({expert}); "
                                                  f"run `make train METHOD=syncnet`")
                    metric = LSE.from_expert(expert)
                else:
                    metric = build_metric(name)
            except MissingWeightsError as error:
                self.notes.append(f"{name}: {str(error).splitlines()[0]}")
                continue
            self.metrics[name] = metric.to(device)
        for note in self.notes:
            log.warning("validation metric left out: %s", note)

    def update(self, fake: torch.Tensor, clip: dict) -> None:
        """Add one clip: `fake` (T, 3, H, W) in [0, 1] against `clip` (a `ValidationClips` item)."""
        available = {"fake": fake, "real": clip["frames"], "audio": clip["audio"], "reference": clip["reference"]}
        for metric in self.metrics.values():
            device = metric.device
            metric.update(**{k: available[k].to(device) for k in metric.inputs})

    def compute(self) -> dict[str, float]:
        """{column: value} over the clips added since the last `reset` (NaN columns left out)."""
        out = {}
        for metric in self.metrics.values():
            for column, value in metric.compute().items():
                value = float(value)
                if np.isfinite(value):
                    out[column] = value
        return out

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()


def request_for(clip: dict) -> GenerationRequest:
    """The self-driven `GenerationRequest` of a `ValidationClips` item."""
    frames = clip["frames"]
    return GenerationRequest(clip_id=clip["clip_id"], reference=clip["reference"], audio=clip["audio"],
                             num_frames=len(frames), pose_source=frames, eye_source=frames, emotion_source=frames)


def write_sample_video(path: Path, fake: torch.Tensor, clip: dict) -> Path:
    """The generated clip beside the real one (side by side), with the clip's audio, as an mp4."""
    both = torch.cat([fake.cpu(), clip["frames"]], dim=-1)
    return write_talking_head(path, [both], clip["audio"].numpy(), len(both))
