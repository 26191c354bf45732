"""PC-AVS as a LightningModule: one class, three training stages (``stage`` argument).

Stages (paper Sec. 3; the official release has no training code, so the schedule follows the
paper and the official loss definitions in ``models/av_model.py``):

``identity``  E_i (``netV``) on identity classification, L_i = cross-entropy of ``netV.fc`` over
              the train split's speakers, on reference and target frames.
``sync``      the speech-content space: E_n (trunk + ``to_mouth`` = mp_c) on *augmented* target
              frames (colour transfer, perspective, centred crop: `PCAVSAugment`) and E_c^a
              (``netA_sync``) on the matching mel windows, L_c = L_c^{v2a} + L_c^{a2v}
              (InfoNCE, cosine similarity / temperature, `PCAVSModule.sync_losses`). A batch holds
              B windows of T consecutive frames; for each frame the candidates are all frames of
              the batch: its own audio (positive), frames of *other clips* and frames of the *same
              clip* >= ``min_shift`` apart (time-shifted negatives); same-clip frames closer than
              that are left out. The data module's explicit N^- audio windows (``negative_mel``:
              other clips and time-shifted windows of the same clip) are added to the v2a
              negatives when configured.
``full``      joint reconstruction: G renders the target frame from [f_i(reference),
              mouth(audio), pose(augmented target)] (and, as the official ``compute_generator_loss``
              with ``generate_from_audio_only`` off, also from the *visual* mouth feature),
              L = L_GAN (hinge) + lambda_1 L_FM + lambda_v L_vgg + lambda_c L_c + lambda_i L_i
              (+ optional pixel / mouth-box L1, off in the paper configs). D: 2-scale patch
              discriminator, hinge loss. The pose code gets no loss of its own: it learns
              implicitly from reconstruction.

The shared machinery is `talkinghead.training.module.StagedModule`'s: manual optimisation in every
stage (the GAN stage as in Lightning's GAN example: ``toggle_optimizer`` / ``guarded_step`` /
``untoggle_optimizer``), the non-finite guard, freezing of what a stage does not train, ``lr_mult``
on what an earlier stage trained, the moving average (``model_ema``) and sample grids. This class
declares the stages' parameter groups (`stage_parameters`), the official TTUR optimiser settings
and the losses.

Batches are `TalkingHeadDataModule` samples (keys ``frames``, ``reference``, ``mel``,
``negative_mel``, ``augmented``, ``speaker``, ``landmarks``; see `talkinghead.data.datamodule`).

The VGG19 perceptual loss needs torchvision's ImageNet VGG19 (asset ``vgg19``). Without the file
the loss is off and the run says so once; the VGG is never a registered submodule, so it never
enters a checkpoint.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F

from talkinghead.data.faces import rescale_points
from talkinghead.methods.pcavs.config import PCAVSLoss, PCAVSOptim
from talkinghead.methods.pcavs.networks import PCAVS, PCAVSConfig, build_discriminator
from talkinghead.training.module import StagedModule, config_section, resize_images, unique_parameters
from talkinghead.nn.losses import (
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    mouth_l1_loss,
    pcavs_sync_losses,
)

__all__ = ["LOSS_DEFAULTS", "OPTIM_DEFAULTS", "PCAVSModule", "STAGES", "STAGE_OUTPUTS", "resize_images"]

STAGES = ("identity", "sync", "full")
#: The submodules each stage trains (and hands on to the later stages).
STAGE_OUTPUTS = {"identity": ("netV",), "sync": ("netE", "netA_sync"), "full": ("netV", "netE", "netA_sync", "netG")}

#: Default loss weights and optimiser settings (`config.PCAVSLoss` / `config.PCAVSOptim` as dicts).
LOSS_DEFAULTS: dict[str, Any] = asdict(PCAVSLoss())
OPTIM_DEFAULTS: dict[str, Any] = asdict(PCAVSOptim())


class PCAVSModule(StagedModule):
    """PC-AVS training (see the module docstring).

    Args:
        stage: "identity" | "sync" | "full".
        model: `PCAVSConfig` as a dict (``PCAVSConfig.to_dict()``); None = the paper model.
        loss: overrides of `LOSS_DEFAULTS` (`config.PCAVSLoss`).
        optim: overrides of `OPTIM_DEFAULTS` (`config.PCAVSOptim`); ``freeze``, ``lr_mult`` and
            ``ema`` (full stage only) go to `StagedModule`.
        sample_every_n_steps: write a sample grid every so many training batches (0: stage end only).
        name: run name (recorded).
        gradient_clip, max_nonfinite_in_a_row: see `StagedModule`.
    """

    STAGES = STAGES
    STAGE_OUTPUTS = {stage: tuple(f"model.{name}" for name in names) for stage, names in STAGE_OUTPUTS.items()}
    EMA_OF = "model"
    VALIDATION_STAGES = ("full",)  # E_i / E_n / E_c^a alone generate nothing

    def __init__(self, stage: str = "full", model: dict | None = None, loss: dict | None = None,
                 optim: dict | None = None, sample_every_n_steps: int = 200, name: str = "pcavs",
                 gradient_clip: float | None = None, max_nonfinite_in_a_row: int = 20):
        optim_cfg = config_section(PCAVSOptim, optim, "optim")
        super().__init__(stage, freeze=optim_cfg["freeze"] if stage == "full" else (), lr_mult=optim_cfg["lr_mult"],
                         ema=optim_cfg["ema"] if stage == "full" else 0.0, gradient_clip=gradient_clip,
                         sample_every_n_steps=sample_every_n_steps, max_nonfinite_in_a_row=max_nonfinite_in_a_row)
        self.config = PCAVSConfig.from_dict(model) if model is not None else PCAVSConfig.paper()
        self.save_hyperparameters({"stage": stage, "model": self.config.to_dict(), "loss": dict(loss or {}),
                                   "optim": dict(optim or {}), "sample_every_n_steps": int(sample_every_n_steps),
                                   "name": name})
        self.loss_cfg = config_section(PCAVSLoss, loss, "loss")
        self.optim_cfg = optim_cfg
        if self.loss_cfg["contrastive"] not in ("infonce", "official"):
            raise ValueError(f"loss.contrastive must be 'infonce' or 'official', got {self.loss_cfg['contrastive']!r}")
        self.model = PCAVS(self.config)
        if stage == "full":
            self.netD = build_discriminator(self.config)
        self.setup_ema()
        self.freeze_for_stage()

    # ------------------------------------------------------------------------------- params
    def _model_parameters(self, stage: str) -> dict[str, list[torch.nn.Parameter]]:
        """{submodule: the parameters of it that `stage` trains, each once} (the discriminator not included)."""
        m = self.model
        v = m.netV.model
        backbone = [v.conv1, v.bn1, v.layer1, v.layer2, v.layer3, v.layer4]  # not the unused ImageNet `fc`
        if stage == "identity":
            groups = {"netV": backbone + [m.netV.fc]}
        elif stage == "sync":
            groups = {"netE": [m.netE.model, m.netE.to_mouth], "netA_sync": [m.netA_sync.model]}
        else:  # the learned constant `input` and the `style` mapping MLP of netG are unused (as official)
            groups = {"netV": backbone + [m.netV.conv1x1, m.netV.fc],
                      "netE": [m.netE.model, m.netE.to_mouth, m.netE.mouth_embed, m.netE.to_headpose,
                               m.netE.headpose_embed],
                      "netA_sync": [m.netA_sync.model],
                      "netG": [m.netG.conv1, m.netG.to_rgb1, m.netG.convs, m.netG.to_rgbs]}
        return unique_parameters(groups)

    def stage_parameters(self, stage: str) -> dict[str, dict[str, list[torch.nn.Parameter]]]:
        """generator: E_i / E_n / E_c^a / G groups of `stage`; discriminator (full stage): netD."""
        out = {"generator": self._model_parameters(stage)}
        if stage == "full" and hasattr(self, "netD"):
            out["discriminator"] = {"netD": list(self.netD.parameters())}
        return out

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        """Official create_optimizers: TTUR halves the generator-side lr and doubles D's; amsgrad on G's side."""
        cfg = self.optim_cfg
        lr = float(cfg["lr"])
        g_lr, d_lr = (lr / 2, lr * 2) if cfg["ttur"] else (lr, lr)
        if name == "generator":
            return {"lr": g_lr, "betas": cfg["betas"], "amsgrad": bool(cfg["amsgrad"]),
                    "weight_decay": cfg["weight_decay"]}
        return {"lr": d_lr, "betas": cfg["betas"], "amsgrad": False, "weight_decay": cfg["weight_decay"]}

    def validation_generator(self):
        """The full stage's generator (from the moving average when kept)."""
        from talkinghead.methods.pcavs.generate import PCAVSGenerator

        model = self.model_ema if self.ema_decay > 0 else self.model
        return PCAVSGenerator(model, device=self.device, description="PC-AVS (training validation)")

    # ------------------------------------------------------------------------------- losses
    def sync_losses(self, visual: torch.Tensor, audio: torch.Tensor, negatives: torch.Tensor | None = None,
                    clip_index: torch.Tensor | None = None, frame_index: torch.Tensor | None = None
                    ) -> dict[str, torch.Tensor]:
        """L_c for content features visual, audio (B, T, D) of B windows of T frames.

        InfoNCE (paper eq. 2-3, cosine similarity / ``temperature``) in both directions. Candidates
        for frame (b, t): every frame of the batch's windows; the positive is (b, t) itself, the
        negatives are the frames of *other clips* and the frames of the *same clip* at least
        ``min_shift`` frames away (time-shifted); same-clip frames closer than that are left out.
        The explicit audio negatives of the data module, (B, N, T, D) (other clips and time-shifted
        windows), are added to the v2a candidates. ``contrastive: official`` uses the official
        SoftmaxContrastive (x100) + CrossModal losses instead. Returns {"v2a", "a2v", "loss", "acc"}.
        """
        b, t, d = visual.shape
        if self.loss_cfg["contrastive"] == "official":
            out = pcavs_sync_losses(visual, audio)
            out["loss"] = sum(out.values())
            with torch.no_grad():
                sims = F.normalize(visual.reshape(-1, d), dim=-1) @ F.normalize(audio.reshape(-1, d), dim=-1).t()
                out["acc"] = self._accuracy(sims, None)
            return out
        if clip_index is None:
            clip_index = torch.arange(b, device=visual.device)
        if frame_index is None:
            frame_index = torch.arange(t, device=visual.device).expand(b, t)
        n = b * t
        clips = clip_index.reshape(b, 1).expand(b, t).reshape(n)
        frames = frame_index.reshape(n)
        near = (clips[:, None] == clips[None, :]) & ((frames[:, None] - frames[None, :]).abs() < self.min_shift)
        eye = torch.eye(n, dtype=torch.bool, device=visual.device)
        valid = ~near | eye                                      # (n, n): candidates of each anchor
        v, a = visual.reshape(n, d), audio.reshape(n, d)
        if self.loss_cfg["center"]:  # the features' common part carries no sync information
            v, a = v - v.mean(0, keepdim=True), a - a.mean(0, keepdim=True)
        v, a = F.normalize(v, dim=-1), F.normalize(a, dim=-1)
        tau = float(self.loss_cfg["temperature"])
        sim = v @ a.t()                                          # (n, n): visual i vs audio j
        logits_v2a = sim.masked_fill(~valid, float("-inf"))
        logits_a2v = sim.t().masked_fill(~valid, float("-inf"))
        if negatives is not None and negatives.numel():
            neg = negatives.permute(0, 2, 1, 3).reshape(n, -1, d)  # (n, N, D)
            if self.loss_cfg["center"]:
                neg = neg - audio.reshape(n, d).mean(0)
            neg = F.normalize(neg, dim=-1)
            logits_v2a = torch.cat([logits_v2a, torch.einsum("nd,nkd->nk", v, neg)], dim=1)
        target = torch.arange(n, device=visual.device)
        if int(valid.sum()) == n and logits_v2a.shape[1] == n:
            raise ValueError("the contrastive loss has no negatives: use windows of other clips (batch > 1), "
                             "window > min_shift or num_negatives / num_shifted > 0")
        v2a = F.cross_entropy(logits_v2a / tau, target)
        a2v = F.cross_entropy(logits_a2v / tau, target) if int(valid.sum()) > n else v2a.new_zeros(())
        with torch.no_grad():
            acc = self._accuracy(logits_v2a, target)
            # lip-sync proper: the positive against the same clip's time-shifted frames only
            shifted = (clips[:, None] == clips[None, :]) & valid & ~eye
            has = shifted.any(1)
            if bool(has.any()):
                pos = sim.diagonal()
                best_shift = sim.masked_fill(~shifted, float("-inf")).max(1).values
                acc_shift = (pos > best_shift)[has].float().mean()
            else:
                acc_shift = acc.new_tensor(float("nan"))
        return {"v2a": v2a, "a2v": a2v, "loss": v2a + a2v, "acc": acc, "acc_shift": acc_shift}

    @property
    def min_shift(self) -> int:
        return int(self.loss_cfg["min_shift"])

    @staticmethod
    def _accuracy(logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Fraction of anchors whose positive scores highest (v2a top-1)."""
        if target is None:
            target = torch.arange(logits.shape[0], device=logits.device)
        return (logits.argmax(1) == target).float().mean()

    # ------------------------------------------------------------------------------- steps
    def training_step(self, batch: dict, batch_idx: int) -> None:
        if self.stage == "identity":
            self._identity_step(batch)
        elif self.stage == "sync":
            self._sync_step(batch)
        else:
            self._full_step(batch)

    def _identity_step(self, batch: dict) -> None:
        opt = self.optimizers()
        size = self.config.reference_size
        images = torch.cat([resize_images(batch["reference"], size), resize_images(batch["frames"], size)], dim=1)
        b, n = images.shape[:2]
        labels = batch["speaker"].repeat_interleave(n)
        logits = self.model.netV(images.reshape(b * n, *images.shape[2:])).logits
        self._check_labels(labels, logits.shape[1])
        loss = F.cross_entropy(logits, labels)
        self.guarded_step(opt, loss, "identity")
        acc = (logits.argmax(1) == labels).float().mean()
        self.log_dict({"train/loss_identity": loss.detach(), "train/acc_identity": acc}, on_step=True, prog_bar=True,
                      batch_size=b)
        self.remember_samples({"reference": batch["reference"][:, 0], "target": batch["frames"][:, 0]})

    def _check_labels(self, labels: torch.Tensor, classes: int) -> None:
        if bool((labels < 0).any()) or bool((labels >= classes).any()):
            raise ValueError(f"speaker labels {int(labels.min())}..{int(labels.max())} do not fit the identity "
                             f"classifier's {classes} classes (model.identity.num_identities; null sizes it from "
                             f"the store's train speakers)")

    def _content(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Any]:
        """(visual (B, T, D), audio (B, T, D), negative audio (B, N, T, D) or None, E_n output)."""
        aug = resize_images(batch["augmented"], self.config.content_input_size)
        b, t = aug.shape[:2]
        enc = self.model.netE(aug)
        visual = enc.mouth.view(b, t, -1)
        audio = self.model.audio_content(batch["mel"]).view(b, t, -1)
        neg = batch.get("negative_mel")
        negatives = None
        if neg is not None and neg.numel():
            n = neg.shape[1]
            negatives = self.model.audio_content(neg.reshape(b * n * t, *neg.shape[3:])).view(b, n, t, -1)
        return visual, audio, negatives, enc

    def _sync_step(self, batch: dict) -> None:
        opt = self.optimizers()
        visual, audio, negatives, _ = self._content(batch)
        losses = self.sync_losses(visual, audio, negatives, batch["clip_index"], batch["frame_index"])
        self.guarded_step(opt, losses["loss"], "sync")
        b = visual.shape[0]
        self.log_dict({f"train/sync_{k}": v.detach() for k, v in losses.items()}, on_step=True, batch_size=b)
        self.log("train/loss_sync", losses["loss"].detach(), on_step=True, prog_bar=True, batch_size=b)
        self.remember_samples({"target": batch["frames"][:, 0], "augmented": batch["augmented"][:, 0]})

    def _full_step(self, batch: dict) -> None:
        opt_g, opt_d = self.optimizers()
        cfg = self.loss_cfg
        m = self.model
        size = self.config.image_size
        frames = resize_images(batch["frames"], size)
        b, t = frames.shape[:2]
        target = frames.reshape(b * t, *frames.shape[2:])
        reference = resize_images(batch["reference"][:, 0], self.config.reference_size)

        # ---- generator step
        self.toggle_optimizer(opt_g)
        ident = m.netV(reference)
        identity = ident.feature.repeat_interleave(t, 0)
        identity_map = ident.feature_map.repeat_interleave(t, 0)
        visual, audio, negatives, enc = self._content(batch)
        if cfg["pose_from"] == "frames":
            pose = m.pose_code(resize_images(target, self.config.content_input_size))
        elif cfg["pose_from"] == "augmented":
            pose = enc.pose
        else:
            raise ValueError(f"loss.pose_from must be 'augmented' or 'frames', got {cfg['pose_from']!r}")
        fake_a = m.render(identity, identity_map, m.mouth_style(audio.reshape(b * t, -1)), pose)
        fakes = [fake_a]
        if cfg["visual_path"]:
            fakes.append(m.render(identity, identity_map, enc.mouth_embed, pose))
        fake = torch.cat(fakes, 0)
        reals = target.repeat(len(fakes), 1, 1, 1)

        losses: dict[str, torch.Tensor] = {}
        pred_fake = self.netD(fake)
        with torch.no_grad():
            pred_real = self.netD(target)
        pred_real_rep = [[f.repeat(len(fakes), *([1] * (f.dim() - 1))) for f in scale] for scale in pred_real]
        losses["gan"] = generator_hinge_loss(pred_fake) * cfg["gan"]
        if cfg["feat"] > 0:
            losses["feat"] = feature_matching_loss(pred_fake, pred_real_rep, first_weight=cfg["image"]) * cfg["feat"]
        vgg = self.perceptual_loss(self.loss_cfg["vgg"] > 0 and self.stage == "full",
                                   imagenet_normalize=bool(self.loss_cfg["vgg_imagenet_normalize"]))
        if vgg is not None:
            losses["vgg"] = vgg(fake, reals) * cfg["vgg"]
        if cfg["l1"] > 0:
            losses["l1"] = F.l1_loss(fake, reals) * cfg["l1"]
        if cfg["mouth_l1"] > 0:
            lm = rescale_points(batch["landmarks"].reshape(b * t, 68, 2).to(fake.dtype), size, batch["frames"].shape[-1])
            losses["mouth_l1"] = mouth_l1_loss(fake, reals, lm.repeat(len(fakes), 1, 1), cfg["mouth_margin"]) * cfg["mouth_l1"]
        sync = None
        if cfg["sync"] > 0:
            sync = self.sync_losses(visual, audio, negatives, batch["clip_index"], batch["frame_index"])
            losses["sync"] = sync["loss"] * cfg["sync"]
        if cfg["identity"] > 0:
            labels = batch["speaker"]
            self._check_labels(labels, ident.logits.shape[1])
            losses["identity"] = F.cross_entropy(ident.logits, labels) * cfg["identity"]
        loss_g = sum(losses.values())
        self.guarded_step(opt_g, loss_g, "generator")
        self.untoggle_optimizer(opt_g)

        # ---- discriminator step
        self.toggle_optimizer(opt_d)
        d_fake_pred = self.netD(fake.detach())
        d_real_pred = self.netD(target)
        d_real, d_fake = discriminator_hinge_loss(d_real_pred, d_fake_pred)
        loss_d = (d_real + d_fake) * cfg["gan"]
        self.guarded_step(opt_d, loss_d, "discriminator")
        self.untoggle_optimizer(opt_d)

        logs = {f"train/loss_{k}": v.detach() for k, v in losses.items()}
        logs.update({"train/loss_G": loss_g.detach(), "train/loss_D": loss_d.detach(), "train/D_real": d_real.detach(),
                     "train/D_fake": d_fake.detach()})
        with torch.no_grad():
            logs["train/l1_audio"] = F.l1_loss(fake_a, target)
        if sync is not None:
            logs["train/sync_acc"] = sync["acc"]
        self.log_dict(logs, on_step=True, batch_size=b)
        self.log("train/loss_G_total", loss_g.detach(), prog_bar=True, on_step=True, batch_size=b)
        self.remember_samples({"reference": resize_images(reference, size),
                               "generated": fake_a.view(b, t, *fake_a.shape[1:])[:, 0],
                               "target": frames[:, 0],
                               "pose_source": frames[:, 0] if cfg["pose_from"] == "frames"
                               else resize_images(batch["augmented"][:, 0], size)})
