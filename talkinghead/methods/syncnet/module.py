"""LightningModule that trains a SyncNet expert with the original pairwise contrastive objective.

Objective (Chung & Zisserman 2016, "Out of time", eq. 1; Hadsell et al. 2006): for each pair of a
5-frame lip window and a 0.2 s MFCC window with Euclidean embedding distance d,

    E = y d^2 + (1 - y) max(margin - d, 0)^2,

y = 1 for the in-sync pair, 0 for a false pair. We deviate from the paper only in how pairs are
drawn and weighted. A batch holds G clips x W windows (`SyncWindowDataset`); every lip window is
paired with every audio window of the batch: its own (positive), those of the same clip at starts
>= min_shift frames away (time-shifted false pairs, as the paper's) and those of other clips
(false pairs). Same-clip pairs closer than min_shift frames are not used. The loss is

    0.5 * (mean_pos d^2 + (1 - w) mean_shifted max(m - d, 0)^2 + w mean_other max(m - d, 0)^2),

w = `other_clip_weight`: positives and negatives count equally whatever their numbers. Adam
instead of the paper's SGD.

One stage, ``expert``, on `talkinghead.training.module.StagedModule` (its non-finite guard,
gradient clipping, resumable runner); the trained net is exported by the method's ``after_stage``
as the expert file LSE scoring reads (`talkinghead.metrics.syncnet_expert`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from talkinghead.nn.syncnet import SyncNet, SyncNetConfig
from talkinghead.training.module import StagedModule

__all__ = ["SyncNetModule", "contrastive_terms"]


def contrastive_terms(distance: torch.Tensor, positive: bool, margin: float) -> torch.Tensor:
    """Per-pair contrastive energy: d^2 for in-sync pairs, max(margin - d, 0)^2 for false pairs."""
    return distance.square() if positive else (margin - distance).clamp_min(0.0).square()


class SyncNetModule(StagedModule):
    """Trains `SyncNet(SyncNetConfig(**model))` on `SyncWindowDataset` batches.

    Args:
        model: `SyncNetConfig` fields (sizes, image size, crop).
        margin: contrastive margin on the embedding distance.
        lr, weight_decay, betas: Adam.
        other_clip_weight: share of the negative term given to other-clip pairs (the rest to
            same-clip shifted pairs); 0.5 = equal.
        min_shift: same-clip pairs at least this many frames apart are negatives.
        name: short name of the configuration (e.g. "tiny"), used in the expert's description.
        gradient_clip, max_nonfinite_in_a_row: see `StagedModule`.
    """

    STAGES = ("expert",)
    STAGE_OUTPUTS = {"expert": ("net",)}

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        margin: float = 10.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        other_clip_weight: float = 0.5,
        min_shift: int = 2,
        name: str = "custom",
        gradient_clip: float | None = None,
        max_nonfinite_in_a_row: int = 20,
    ):
        super().__init__("expert", gradient_clip=gradient_clip, max_nonfinite_in_a_row=max_nonfinite_in_a_row)
        self.save_hyperparameters()
        self.net = SyncNet(SyncNetConfig.from_dict(model))
        self.margin = float(margin)
        if not 0.0 <= other_clip_weight <= 1.0:
            raise ValueError(f"other_clip_weight must be in [0, 1], got {other_clip_weight}")
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.freeze_for_stage()

    def stage_parameters(self, stage: str) -> dict[str, dict[str, list[torch.nn.Parameter]]]:
        return {"net": {"net": list(self.net.parameters())}}

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        h = self.hparams
        return {"lr": float(h.lr), "betas": tuple(h.betas), "amsgrad": False, "weight_decay": float(h.weight_decay)}

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss and statistics of a batch: lip (G, W, 3, 5, h, w), audio (G, W, 1, 13, 20),
        start (G, W), clip (G,)."""
        lip, audio, start, clip = batch["lip"], batch["audio"], batch["start"], batch["clip"]
        if lip.dim() != 6 or audio.dim() != 5:
            raise ValueError(f"SyncNet batch: lip must be (G, W, 3, 5, h, w) and audio (G, W, 1, 13, 20), got "
                             f"{tuple(lip.shape)} and {tuple(audio.shape)}")
        g, w = lip.shape[:2]
        video = self.net.forward_lip(lip.flatten(0, 1))
        sound = self.net.forward_aud(audio.flatten(0, 1))
        starts = start.reshape(-1)
        clips = clip[:, None].expand(g, w).reshape(-1)
        d_pos = F.pairwise_distance(video, sound)
        d_all = torch.cdist(video[None], sound[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
        same = clips[:, None] == clips[None, :]
        gap = (starts[:, None] - starts[None, :]).abs()
        shifted = same & (gap >= int(self.hparams.min_shift))
        other = ~same
        out: dict[str, torch.Tensor] = {"d_pos": d_pos.mean().detach()}
        terms = []
        weight_other = float(self.hparams.other_clip_weight)
        if bool(shifted.any()):
            d_shift = d_all[shifted]
            terms.append((1.0 - weight_other, contrastive_terms(d_shift, False, self.margin).mean()))
            out["d_shift"] = d_shift.mean().detach()
            nearest = d_all.detach().masked_fill(~shifted, float("inf")).min(dim=1).values
            rows = shifted.any(dim=1)
            out["acc_shift"] = (d_pos.detach()[rows] < nearest[rows]).float().mean()
        if bool(other.any()):
            d_other = d_all[other]
            terms.append((weight_other, contrastive_terms(d_other, False, self.margin).mean()))
            out["d_other"] = d_other.mean().detach()
        if not terms:
            raise ValueError("SyncNet batch has no false pair: use windows_per_clip > 1 or several clips per batch")
        total = sum(t_w for t_w, _ in terms)
        negative = sum(t_w * t for t_w, t in terms) / total if total > 0 else sum(t for _, t in terms) / len(terms)
        out["loss"] = 0.5 * (contrastive_terms(d_pos, True, self.margin).mean() + negative)
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self.guarded_step(self.optimizers(), out["loss"], "contrastive")
        size = batch["lip"].shape[0] * batch["lip"].shape[1]
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, on_step=True, on_epoch=False,
                      batch_size=size)
        self.log("loss", out["loss"].detach(), prog_bar=True, on_step=True, on_epoch=False, logger=False,
                 batch_size=size)
        return out["loss"].detach()

    def on_train_epoch_start(self) -> None:
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)
