"""PD-FGC training (Wang et al., CVPR 2023, Sec. 3 and appendix A.2) as a `StagedModule`: one class,
the paper's three progressive stages (``stage`` argument). The official release has inference
code only; the schedule and losses follow the paper, with the official config's optimiser and
loss weights (reference-facts "PD-FGC official inference, details").

``motion``      appearance / motion disentanglement (paper 3.1, following [6]). E_app
                (``net_appearance``) encodes one frame of the clip (the reference); E_mot's trunk
                reads *another* frame of the same clip after colour jitter + perspective
                (``batch["augmented"]``, `talkinghead.data.transforms.MotionAppearanceAugment`, so
                appearance cannot leak through the motion branch) and gives the unified motion code
                ``net_motion.unified(F_n)`` (``to_feature`` -> ``to_embed``). The stage-1 generator
                G_0 (``net_generator0``: the modulated generator with style [appearance, unified
                motion], not released) reconstructs the clean driving frame from the appearance map.
                Trains E_app (backbone, ``conv1x1``, ``fc``), E_mot (trunk, ``to_feature``,
                ``to_embed``), G_0 and D. Losses: hinge GAN, feature matching, VGG19 perceptual, L1,
                identity cross-entropy of E_app's ``fc`` on the appearance code; with
                ``loss.motion_landmarks`` the motion-reconstruction loss L_mot of eq. 1, a landmark
                network (``net_landmarks``, `talkinghead.nn.landmarks.LandmarkNet`: the FAN trunk's
                68 heatmaps and a soft-argmax) standing in for EMOCA: the squared distance of its
                landmarks on G_0's output from its landmarks on the real frame (the network in eval
                mode, its weights fixed for this term); the network itself learns, in its own
                optimiser (``landmarks``, after G_0 and D), the store's landmarks of the real frames
                (L1, ``loss.landmark_fit``). It is not handed on to the later stages.
``fine``        fine-grained motion (paper 3.2). E_mot's trunk (the unified motion feature F_n) is
                frozen; three branches read F_n, each with its own optimiser (the paper trains them
                separately; their losses touch disjoint parameters). ``trunk`` (a CPU-config aid,
                paper: empty) names branches whose losses also train the trunk: then one optimiser
                steps on the sum of the three losses (Adam is per parameter, so each branch still
                moves by its own loss alone) and the trunk by the named ones:
                * lip: E_lip (``to_mouth`` -> ``mouth_embed``) of the frames and E_aud
                  (``net_audio``, -> ``mouth_embed``) of their mel windows, InfoNCE (paper eq. 2-3,
                  cosine / temperature) in both directions over the lip codes; candidates of frame
                  (b, t) are the batch's frames of the same clip >= ``min_shift`` apart
                  (unsynchronised, as the paper's A.2), plus with ``lip_other_clips`` the frames of
                  the other clips ([77]), plus the data module's explicit audio windows
                  (``negative_mel``; other-clip ones only with ``lip_other_clips``) for v2a;
                * eye: E_eye (``to_eye`` -> ``eye_embed``) of the eye donor I_1, the base frame I_2
                  and the anchor I_a = I_1's eye region composited into I_2 (data module
                  ``eye_donor`` / ``frames`` / ``eye_anchor``, `composite_eye_region`), InfoNCE of
                  eq. 4: positive (f_1, f_a), negative (f_2, f_a); with ``loss.eye_prior`` (0 in
                  the paper configs) also an L1 of dims 0-3 of f_2, f_1 and f_a to the measured eye
                  state of the base frame, the donor and the donor (`eye_prior_target`), both
                  centred on their window's mean (`window_centred_l1`);
                * pose: E_pose (``to_headpose`` -> ``headpose_embed``) regressed (L1, eq. 5) to the
                  pose prior, the store's rigid landmark pose fit (rotation vector, tx, ty, log scale;
                  normalised by ``pose_offset`` / ``pose_scale``).
``expression``  expression disentanglement and the final generator (paper 3.3). Everything but
                E_exp (``to_emo`` -> ``emo_embed``), G (``net_generator``) and a new D is fixed. The
                emotion code of the driving frame is the mean of E_exp over the ``in_window`` (paper
                13) frames centred on it, each augmented (rotation, scale, colour jitter;
                `InWindowAugment`, data module ``window_frames``): the in-window decorrelation. The
                lip-motion decorrelation (eq. 6, `decorrelation_loss`) decorrelates the window-mean
                emotion codes from the audio lip codes over the M latest pairs (two
                `FeatureMemoryBank` s of size ``bank_size``, paper 512): the current batch (with
                gradient) plus the M - B latest banked rows (no gradient); then the batch is banked.
                G reconstructs the driving frame from [appearance, audio lip code, emotion, eye,
                pose] (the official style order): hinge GAN, feature matching, VGG19, L1 and the
                motion consistency of eq. 8 (below). E_exp stops training after
                ``optim.expression_steps`` batches (paper 40k).

Differences from the paper (all documented substitutes for networks we do not have):
* pose prior: the store's rigid 3D fit of the landmarks (`talkinghead.data.faces.estimate_head_pose`:
  rotation vector, 2D translation in pixels, log scale) instead of EMOCA's [15] 3D reconstruction
  (Euler angles + 3D translation);
* the motion-reconstruction loss L_mot of the motion stage (eq. 1: EMOCA's 3D reconstruction and
  emotion features of G_0's output against the real frame's) compares landmarks instead, read by a
  landmark network trained alongside on the store's (dlib) landmarks, and has no emotion term
  (``loss.motion_landmarks``: x1 in the paper configs, 0 in the CPU ``synth.yaml``, where it did not
  make G_0 follow its motion code: README);
* motion consistency (eq. 8) in the expression stage with our own frozen encoders in place of the
  missing ones: exp(-cos(E_lip(fake), E_aud(audio))) (V_lip: our stage-2 visual lip branch), L1 of
  the eye codes E_eye(fake) vs E_eye(real) (in place of the L2CS gaze estimator [1]), and the squared
  distance of the unified motion codes E_mot(fake) vs E_mot(real) (in place of L_mot); no emotion
  network anywhere;
* the optional eye prior of the fine stage (``loss.eye_prior``, 0 in the paper configs): the gaze
  estimator's knowledge brought in where the paper has none, as the pose prior: E_eye's blink dims
  0, 1 regressed to the closure of the left / right eye (eye aspect ratio of dlib's landmarks) and its
  gaze dims 2, 3 to the iris offset measured in the frame's pixels (`metrics.factors.eye_state`), as
  changes within each window (8 frames of one clip over 1.6 s in the CPU config): on SynthTalk's
  training frames the measured closure follows the true blink at r 0.43, its change within such a
  window at 0.67 (the rest is the identity's eye shape and the pose; the absolute target left the
  eye code reading the true blink at r 0.11); ``loss.eye_prior_closure: lid`` takes the closure from
  the pixels instead (`metrics.factors.lid_brightness`; its change within a window follows the true
  blink at r 0.78 on the 224 px frames of training clips);
* VGG19 perceptual loss only (the official x5 VGGFace term needs VGGFace weights, absent); the VGG19
  is off, and the run says so, when its torchvision file is missing; the optional mouth-box L1
  (``loss.mouth_l1``, 0 in the paper configs; the official code hints at a mouth-masked L1 in a
  joint stage) is the CPU config's aid in the motion and expression stages, and the eye-box L1
  (``loss.eye_l1``, 0 in the paper configs) its twin for the eyes, with blink frames optionally
  weighted up (``loss.eye_l1_closure``, 0 in every config: no effect at the CPU budget, README);
* the fine stage learns the three branches in one stage with one batch (paper: three runs with
  batch 32 / 128 / 128); lip InfoNCE on the 500-d lip codes (after ``mouth_embed``), so the whole lip
  branch, audio included, is fixed in the expression stage as the paper says;
* the memory banks are per process under DDP (not gathered); eq. 6's 1/D uses the emotion dimension.

Batches are `TalkingHeadDataModule` samples (``frames``, ``reference``, ``mel``, ``negative_mel``,
``negative_clip_index``, ``augmented``, ``eye_donor``, ``eye_anchor``, ``window_frames``, ``pose``,
``speaker``, ``clip_index``, ``frame_index``). Frozen submodules are kept in eval mode (their
BatchNorm statistics and dropout do not move). Every optimiser has a StepLR stepped once per batch.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.data.faces import rescale_points
from talkinghead.methods.pdfgc.config import PDFGCLoss, PDFGCOptim
from talkinghead.methods.pdfgc.networks import (
    PDFGC,
    PDFGCConfig,
    build_discriminator,
    build_landmark_net,
    build_stage1_generator,
)
from talkinghead.metrics.factors import EYE_CLOSURES, eye_state
from talkinghead.metrics.image import frames_to_uint8
from talkinghead.nn.losses import (
    FeatureMemoryBank,
    decorrelation_loss,
    discriminator_hinge_loss,
    eye_l1_loss,
    feature_matching_loss,
    generator_hinge_loss,
    info_nce,
    mouth_l1_loss,
)
from talkinghead.nn.stylegan2 import ModulatedGenerator
from talkinghead.training.module import StagedModule, config_section, resize_images, unique_parameters

__all__ = ["PDFGCModule", "STAGES", "STAGE_OUTPUTS", "lip_info_nce", "resize_images"]

STAGES = ("motion", "fine", "expression")
#: the fine stage's branches (each a loss on E_mot's unified motion feature F_n)
FINE_BRANCHES = ("lip", "eye", "pose")
#: What each stage trains and hands on (G_0 and the discriminators are not handed on).
STAGE_OUTPUTS = {"motion": ("net_appearance", "net_motion"), "fine": ("net_motion", "net_audio"),
                 "expression": ("net_motion", "net_generator")}


def lip_info_nce(visual: torch.Tensor, audio: torch.Tensor, clip_index: torch.Tensor, frame_index: torch.Tensor,
                 min_shift: int, other_clips: bool, temperature: float = 1.0,
                 negatives: torch.Tensor | None = None, negative_clip_index: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """PD-FGC's lip InfoNCE (paper eq. 2-3) over B windows of T frames.

    visual, audio: (B, T, D) lip codes of the frames and of their mel windows; clip_index (B,),
    frame_index (B, T). For anchor (b, t) the positive is its own pair; the negatives are the pairs of
    the same clip at least `min_shift` frames apart and, when `other_clips`, every pair of another
    clip; same-clip pairs closer than `min_shift` are left out. v2a: visual anchor against audio
    candidates, plus `negatives` (B, N, T, D) audio windows (anchor (b, t) gets window n's frame t;
    other-clip windows only when `other_clips`, by `negative_clip_index` (B, N)); a2v: audio anchor
    against visual candidates. Score: cosine / `temperature`. Returns {"v2a", "a2v", "loss", "acc"}.
    """
    b, t, d = visual.shape
    n = b * t
    clips = clip_index.reshape(b, 1).expand(b, t).reshape(n)
    frames = frame_index.reshape(n)
    same = clips[:, None] == clips[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=visual.device)
    valid = (same & ((frames[:, None] - frames[None, :]).abs() >= min_shift)) | eye
    if other_clips:
        valid = valid | ~same
    v = F.normalize(visual.reshape(n, d), dim=-1)
    a = F.normalize(audio.reshape(n, d), dim=-1)
    sim = v @ a.t()
    logits_v2a = sim.masked_fill(~valid, float("-inf"))
    logits_a2v = sim.t().masked_fill(~valid, float("-inf"))
    extra = 0
    if negatives is not None and negatives.numel():
        neg = F.normalize(negatives.permute(0, 2, 1, 3).reshape(n, -1, d), dim=-1)  # (n, N, D)
        scores = torch.einsum("nd,nkd->nk", v, neg)
        if not other_clips and negative_clip_index is not None:
            keep = (negative_clip_index == clip_index.reshape(b, 1))  # (B, N)
            keep = keep.reshape(b, 1, -1).expand(b, t, -1).reshape(n, -1)
            scores = scores.masked_fill(~keep, float("-inf"))
            extra = int(keep.sum())
        else:
            extra = scores.numel()
        logits_v2a = torch.cat([logits_v2a, scores], dim=1)
    if int(valid.sum()) == n and extra == 0:
        raise ValueError("the lip InfoNCE has no negatives: use windows longer than min_shift, explicit shifted "
                         "audio windows (num_shifted) or lip_other_clips with a batch > 1")
    target = torch.arange(n, device=visual.device)
    v2a = F.cross_entropy(logits_v2a / temperature, target)
    a2v = F.cross_entropy(logits_a2v / temperature, target) if int(valid.sum()) > n else v2a.new_zeros(())
    with torch.no_grad():
        acc = (logits_v2a.argmax(1) == target).float().mean()
    return {"v2a": v2a, "a2v": a2v, "loss": v2a + a2v, "acc": acc}


def window_centred_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between (W, T, D) `pred` and `target` after each window's mean over its frames is taken
    from both: only the changes within a window count (the offsets a face's own shape puts on a
    measurement cancel). Frames whose target row is not finite are left out, means included;
    windows with fewer than two such frames add nothing (zero, with the graph kept, when none has)."""
    valid = torch.isfinite(target).all(-1)  # (W, T)
    keep = valid.sum(1) >= 2
    if not bool(keep.any()):
        return pred.sum() * 0.0
    pred, target, valid = pred[keep], target[keep].nan_to_num(), valid[keep]
    w = valid.unsqueeze(-1).to(pred.dtype)
    count = w.sum(1, keepdim=True)
    pred_c = pred - (pred * w).sum(1, keepdim=True) / count
    target_c = target - (target * w).sum(1, keepdim=True) / count
    return ((pred_c - target_c).abs() * w).sum() / (w.sum() * pred.shape[-1])


class PDFGCModule(StagedModule):
    """PD-FGC training (see the module docstring).

    Args:
        stage: "motion" | "fine" | "expression".
        model: `PDFGCConfig` as a dict; None = the paper model.
        loss: overrides of `config.PDFGCLoss`.
        optim: overrides of `config.PDFGCOptim` (``freeze`` / ``lr_mult`` go to `StagedModule`).
        bank_size: memory-bank size M of the expression stage (paper 512).
        sample_every_n_steps, name, gradient_clip, max_nonfinite_in_a_row: see `StagedModule`.
    """

    STAGES = STAGES
    STAGE_OUTPUTS = {stage: tuple(f"model.{name}" for name in names) for stage, names in STAGE_OUTPUTS.items()}
    GAN_STAGES = ("motion", "expression")
    VALIDATION_STAGES = ("expression",)  # G_0 (motion) and the fine branches alone generate no talking head

    def __init__(self, stage: str = "expression", model: dict | None = None, loss: dict | None = None,
                 optim: dict | None = None, bank_size: int = 512, sample_every_n_steps: int = 200,
                 name: str = "pdfgc", gradient_clip: float | None = None, max_nonfinite_in_a_row: int = 20,
                 generator_init: str = "scratch", trunk: list[str] | tuple[str, ...] = ()):
        if generator_init not in ("scratch", "stage1"):
            raise ValueError(f"generator_init must be 'scratch' or 'stage1', got {generator_init!r}")
        unknown = sorted(set(trunk) - set(FINE_BRANCHES))
        if unknown:
            raise ValueError(f"trunk: unknown fine-stage branches {unknown}; valid: {list(FINE_BRANCHES)}")
        self.generator_init = generator_init
        self.trunk = tuple(name for name in FINE_BRANCHES if name in trunk)
        optim_cfg = config_section(PDFGCOptim, optim, "optim")
        super().__init__(stage, freeze=optim_cfg["freeze"], lr_mult=optim_cfg["lr_mult"], ema=0.0,
                         gradient_clip=gradient_clip, sample_every_n_steps=sample_every_n_steps,
                         max_nonfinite_in_a_row=max_nonfinite_in_a_row)
        self.config = PDFGCConfig.from_dict(model) if model is not None else PDFGCConfig.paper()
        if not self.config.motion.training_heads:
            raise ValueError("PD-FGC training needs the motion encoder's training heads (model.motion.training_heads)")
        self.save_hyperparameters({"stage": stage, "model": self.config.to_dict(), "loss": dict(loss or {}),
                                   "optim": dict(optim or {}), "bank_size": int(bank_size),
                                   "sample_every_n_steps": int(sample_every_n_steps), "name": name,
                                   "generator_init": generator_init, "trunk": list(self.trunk)})
        self.loss_cfg = config_section(PDFGCLoss, loss, "loss")
        if len(self.loss_cfg["eye_prior_scale"]) != 4:
            raise ValueError(f"loss.eye_prior_scale needs 4 values (closure left / right, gaze x / y), got "
                             f"{list(self.loss_cfg['eye_prior_scale'])}")
        if self.loss_cfg["eye_prior_closure"] not in EYE_CLOSURES:
            raise ValueError(f"loss.eye_prior_closure must be one of {', '.join(EYE_CLOSURES)}, got "
                             f"{self.loss_cfg['eye_prior_closure']!r}")
        self.optim_cfg = optim_cfg
        self.model = PDFGC(self.config)
        cfg = self.config
        if stage == "motion":
            self.net_generator0 = build_stage1_generator(cfg)
            if self.loss_cfg["motion_landmarks"] > 0:
                self.net_landmarks = build_landmark_net(cfg)
        if stage in self.GAN_STAGES:
            self.netD = build_discriminator(cfg)
        if stage == "expression":
            self.emo_bank = FeatureMemoryBank(bank_size, cfg.emo_dim)
            self.audio_bank = FeatureMemoryBank(bank_size, cfg.lip_dim)
        self.freeze_for_stage()
        self.train()  # frozen parts to eval mode (Lightning keeps the modes it finds)

    def load_stage_weights(self, checkpoint) -> list[str]:
        """The base's loading, plus with ``generator_init: stage1`` in the expression stage: G starts
        from the motion stage's G_0 (a CPU-budget aid; the paper trains G in its own stage), so that
        it need not learn to draw a face again: every tensor of one name and shape (the synthesis
        convolutions, to-RGB layers, noise strengths), and each style affine (``*.modulation``, whose
        input differs: [appearance, unified motion] vs. [appearance, lip, emotion, eye, pose]) with
        G_0's appearance columns (rescaled for the equalised-lr scale of the wider input) and bias,
        the new codes' columns zero: G starts as G_0 with the motion code's share removed, and
        the codes grow in from there."""
        loaded = super().load_stage_weights(checkpoint)
        if self.stage != "expression" or self.generator_init != "stage1":
            return loaded
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if data.get("hyper_parameters", {}).get("stage") != "motion":
            return loaded
        g = self.model.net_generator
        ours = g.state_dict()
        prefix = "net_generator0."
        g0 = {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
        shared = {k: v for k, v in g0.items() if k in ours and tuple(v.shape) == tuple(ours[k].shape)}
        if not shared:
            raise ValueError(f"{checkpoint}: generator_init stage1, but no G_0 tensor fits G")
        g.load_state_dict(shared, strict=False)
        app = self.config.appearance_dim
        affines = 0
        with torch.no_grad():
            for name, module in g.named_modules():
                old = g0.get(f"{name}.weight")
                if not name.endswith("modulation") or old is None or old.shape[0] != module.weight.shape[0]:
                    continue
                module.weight.zero_()
                module.weight[:, :app] = old[:, :app] * (math.sqrt(module.weight.shape[1]) / math.sqrt(old.shape[1]))
                module.bias.copy_(g0[f"{name}.bias"])
                affines += 1
        return [*loaded, f"model.net_generator <- net_generator0 ({len(shared)} of {len(ours)} tensors; "
                         f"{affines} style affines from its appearance columns, the codes' columns zero)"]

    # ------------------------------------------------------------------------------- params
    @staticmethod
    def _generator_parts(g: ModulatedGenerator) -> list[torch.nn.Module]:
        """What a generator driven by an appearance map trains (not the constant input / mapping MLP)."""
        return [g.conv1, g.to_rgb1, g.convs, g.to_rgbs]

    def stage_parameters(self, stage: str) -> dict[str, dict[str, list[torch.nn.Parameter]]]:
        """motion: generator {appearance, motion, generator0}, discriminator {netD}, with L_mot landmarks
        {landmarks};
        fine: lip {lip, audio}, eye {eye}, pose {pose}, or with ``trunk`` one optimiser fine {lip, audio,
        eye, pose, trunk}; expression: generator {expression, generator}, discriminator {netD}."""
        m = self.model
        mot, app = m.net_motion, m.net_appearance
        if stage == "motion":
            groups = {"generator": {"appearance": [app.model, app.conv1x1, app.fc],
                                    "motion": [mot.model, mot.to_feature, mot.to_embed]}}
            if hasattr(self, "net_generator0"):
                groups["generator"]["generator0"] = self._generator_parts(self.net_generator0)
        elif stage == "fine":
            groups = {"lip": {"lip": [mot.to_mouth, mot.mouth_embed], "audio": [m.net_audio.model, m.net_audio.mouth_embed]},
                      "eye": {"eye": [mot.to_eye, mot.eye_embed]},
                      "pose": {"pose": [mot.to_headpose, mot.headpose_embed]}}
            if self.trunk and self.stage == "fine":
                groups = {"fine": {**{k: v for g in groups.values() for k, v in g.items()}, "trunk": [mot.model]}}
        else:
            groups = {"generator": {"expression": [mot.to_emo, mot.emo_embed],
                                    "generator": self._generator_parts(m.net_generator)}}
        out = {opt: unique_parameters(g) for opt, g in groups.items()}
        if stage in self.GAN_STAGES and stage == self.stage:
            out["discriminator"] = {"netD": list(self.netD.parameters())}
        if stage == "motion" and stage == self.stage and hasattr(self, "net_landmarks"):
            out["landmarks"] = {"landmarks": list(self.net_landmarks.parameters())}
        return out

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        cfg = self.optim_cfg
        lr = cfg["d_lr"] if name == "discriminator" and cfg["d_lr"] is not None else cfg["lr"]
        return {"lr": float(lr), "betas": cfg["betas"], "amsgrad": False, "weight_decay": cfg["weight_decay"]}

    def configure_optimizers(self):
        """The base's Adam optimisers with ``group_lr`` applied, and one StepLR per optimiser
        (``schedule`` [step_size, gamma] by optimiser name, else ``step_size`` / ``gamma``)."""
        opts = super().configure_optimizers()
        opts = list(opts) if isinstance(opts, (list, tuple)) else [opts]
        cfg = self.optim_cfg
        names = list(self.trained_groups())
        schedulers = []
        for opt_name, opt in zip(names, opts):
            base_lr = float(self.optimizer_settings(opt_name)["lr"])
            for group in opt.param_groups:
                name = group["name"].removesuffix(".new")
                if name in cfg["group_lr"]:
                    group["lr"] = group["lr"] / base_lr * float(cfg["group_lr"][name])
            step, gamma = cfg["schedule"].get(opt_name, [cfg["step_size"], cfg["gamma"]])
            schedulers.append(torch.optim.lr_scheduler.StepLR(opt, step_size=int(step), gamma=float(gamma)))
        return opts, schedulers

    def train(self, mode: bool = True):
        """Train mode for what this stage trains; every submodule without a trained parameter stays in
        eval mode (frozen BatchNorm statistics and dropout do not move)."""
        super().train(mode)
        if mode:
            for module in self.modules():
                params = list(module.parameters())
                if params and not any(p.requires_grad for p in params):
                    module.eval()
            if self.stage == "expression" and not self.expression_trains:
                self._fix_expression()
        return self

    def _fix_expression(self) -> None:
        """E_exp's schedule is over (``expression_steps``): eval mode, so its statistics stay fixed too."""
        self.model.net_motion.to_emo.eval()
        self.model.net_motion.emo_embed.eval()

    def on_train_epoch_start(self) -> None:
        self.train()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def validation_generator(self):
        """The expression stage's generator (the final G with every fine-grained encoder)."""
        from talkinghead.methods.pdfgc.generate import PDFGCGenerator

        return PDFGCGenerator(self.model, device=self.device, description="PD-FGC (training validation)")

    # ------------------------------------------------------------------------------- helpers
    def _motion_in(self, x: torch.Tensor) -> torch.Tensor:
        return resize_images(x, self.config.motion_input_size)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """F_n of (N, 3, S, S) images, no gradient (E_mot's trunk is fixed after the motion stage)."""
        with torch.no_grad():
            return self.model.net_motion.forward_feature(self._motion_in(images))

    def _check_labels(self, labels: torch.Tensor, classes: int) -> None:
        if bool((labels < 0).any()) or bool((labels >= classes).any()):
            raise ValueError(f"speaker labels {int(labels.min())}..{int(labels.max())} do not fit the identity "
                             f"classifier's {classes} classes (model.appearance.num_identities)")

    def _synthesis_losses(self, fake: torch.Tensor, real: torch.Tensor, landmarks: torch.Tensor | None,
                          source_size: int) -> dict[str, torch.Tensor]:
        """Generator-side hinge GAN, feature matching, VGG19, L1, mouth-box and eye-box L1 (weighted);
        landmarks (N, 68, 2) of `real` in the pixels of the `source_size`-px data frames (needed only
        with ``loss.mouth_l1`` / ``loss.eye_l1``)."""
        cfg = self.loss_cfg
        losses: dict[str, torch.Tensor] = {}
        pred_fake = self.netD(fake)
        with torch.no_grad():
            pred_real = self.netD(real)
        losses["gan"] = generator_hinge_loss(pred_fake) * cfg["gan"]
        if cfg["feat"] > 0:
            losses["feat"] = feature_matching_loss(pred_fake, pred_real, first_weight=cfg["image"]) * cfg["feat"]
        vgg = self.perceptual_loss(self.loss_cfg["vgg"] > 0)
        if vgg is not None:
            losses["vgg"] = vgg(fake, real) * cfg["vgg"]
        if cfg["l1"] > 0:
            losses["l1"] = F.l1_loss(fake, real) * cfg["l1"]
        if cfg["mouth_l1"] > 0 or cfg["eye_l1"] > 0:
            if landmarks is None:
                raise ValueError("loss.mouth_l1 / loss.eye_l1 need the batch's landmarks (the data module's "
                                 "'landmarks')")
            lm = rescale_points(landmarks.reshape(-1, 68, 2).to(fake.dtype), fake.shape[-1], source_size)
            if cfg["mouth_l1"] > 0:
                losses["mouth_l1"] = mouth_l1_loss(fake, real, lm, cfg["mouth_margin"]) * cfg["mouth_l1"]
            if cfg["eye_l1"] > 0:
                losses["eye_l1"] = eye_l1_loss(fake, real, lm, cfg["eye_margin"], cfg["eye_l1_closure"]) * cfg["eye_l1"]
        return losses

    def _gan_step(self, losses: dict[str, torch.Tensor], fake: torch.Tensor, real: torch.Tensor, b: int) -> None:
        """Step G on the sum of `losses`, then D (hinge) on (real, fake.detach()); log everything."""
        opt_g, opt_d = self.optimizer_list()[:2]
        loss_g = sum(losses.values())
        self.guarded_step(opt_g, loss_g, "generator")
        self.untoggle_optimizer(opt_g)
        self.toggle_optimizer(opt_d)
        d_real, d_fake = discriminator_hinge_loss(self.netD(real), self.netD(fake.detach()))
        loss_d = (d_real + d_fake) * self.loss_cfg["gan"]
        self.guarded_step(opt_d, loss_d, "discriminator")
        self.untoggle_optimizer(opt_d)
        logs = {f"train/loss_{k}": v.detach() for k, v in losses.items()}
        logs.update({"train/loss_G": loss_g.detach(), "train/loss_D": loss_d.detach(),
                     "train/D_real": d_real.detach(), "train/D_fake": d_fake.detach()})
        self.log_dict(logs, on_step=True, batch_size=b)

    # ------------------------------------------------------------------------------- steps
    def training_step(self, batch: dict, batch_idx: int) -> None:
        if self.stage == "motion":
            self._motion_step(batch)
        elif self.stage == "fine":
            self._fine_step(batch)
        else:
            self._expression_step(batch)

    def _motion_step(self, batch: dict) -> None:
        m, cfg = self.model, self.config
        source_size = batch["frames"].shape[-1]
        frames = resize_images(batch["frames"], cfg.image_size)
        b, t = frames.shape[:2]
        target = frames.reshape(b * t, *frames.shape[2:])
        opt_g = self.optimizer_list()[0]
        self.toggle_optimizer(opt_g)
        app = m.appearance(resize_images(batch["reference"][:, 0], cfg.reference_size))
        driving = self._motion_in(batch["augmented"]).reshape(b * t, 3, cfg.motion_input_size, cfg.motion_input_size)
        unified = m.net_motion.unified(m.net_motion.forward_feature(driving))
        style = torch.cat([app.feature.repeat_interleave(t, 0), unified], dim=1)
        fake = self.net_generator0(style, identity_map=app.feature_map.repeat_interleave(t, 0))
        losses = self._synthesis_losses(fake, target, batch.get("landmarks"), source_size)
        if self.loss_cfg["identity"] > 0:
            labels = batch["speaker"].reshape(b)
            self._check_labels(labels, app.logits.shape[1])
            losses["identity"] = F.cross_entropy(app.logits, labels) * self.loss_cfg["identity"]
        landmark_net = getattr(self, "net_landmarks", None)
        if landmark_net is not None:
            landmark_net.eval()  # a fixed critic here: running statistics, weights not in this optimiser
            with torch.no_grad():
                real_points = landmark_net(target)
            losses["motion_landmarks"] = ((landmark_net(fake) - real_points) ** 2).sum(-1).mean() \
                * self.loss_cfg["motion_landmarks"]
        self._gan_step(losses, fake, target, b)
        if landmark_net is not None:
            self._landmark_fit_step(landmark_net, target, batch, source_size, b)
        with torch.no_grad():
            self.log("train/l1_recon", F.l1_loss(fake, target), on_step=True, prog_bar=True, batch_size=b)
        self.remember_samples({"reference": resize_images(batch["reference"][:, 0], cfg.image_size),
                               "driving": resize_images(batch["augmented"][:, 0], cfg.image_size),
                               "generated": fake.view(b, t, *fake.shape[1:])[:, 0], "target": frames[:, 0]})

    def _landmark_fit_step(self, landmark_net: torch.nn.Module, target: torch.Tensor, batch: dict,
                           source_size: int, b: int) -> None:
        """The L_mot landmark network learns the store's landmarks of the real frames `target`
        (N, 3, S, S): L1 in output pixels x ``loss.landmark_fit``, its own optimiser."""
        if batch.get("landmarks") is None:
            raise ValueError("loss.motion_landmarks needs the batch's landmarks (the data module's 'landmarks')")
        opt = self.optimizer_list()[2]
        self.toggle_optimizer(opt)
        landmark_net.train()
        truth = rescale_points(batch["landmarks"].reshape(-1, 68, 2).to(target.dtype), target.shape[-1], source_size)
        error = F.l1_loss(landmark_net(target), truth)
        self.guarded_step(opt, error * self.loss_cfg["landmark_fit"], "landmark network")
        self.untoggle_optimizer(opt)
        self.log("train/landmark_l1_px", error.detach(), on_step=True, batch_size=b)

    def fine_losses(self, batch: dict) -> dict[str, dict[str, torch.Tensor]]:
        """{"lip": lip_info_nce(...) (weighted "loss"), "eye": {"loss", "acc"}, "pose": {"loss", "mae"}}."""
        m, cfg, lc = self.model, self.config, self.loss_cfg
        mot = m.net_motion
        frames = batch["frames"]
        b, t = frames.shape[:2]
        flat = frames.reshape(b * t, *frames.shape[2:])
        # F_n with the trunk's gradient for the branches in ``trunk``, detached for the others
        trained = mot.forward_feature(self._motion_in(flat)) if self.trunk else self._features(flat)
        feat = {name: trained if name in self.trunk else trained.detach() for name in FINE_BRANCHES}
        out: dict[str, dict[str, torch.Tensor]] = {}
        # lip: visual lip code vs audio lip code
        visual = mot.mouth_embed(mot.to_mouth(feat["lip"])).view(b, t, -1)
        audio = m.net_audio(batch["mel"]).mouth_embed.view(b, t, -1)
        negatives = None
        neg = batch.get("negative_mel")
        if neg is not None and neg.numel():
            k = neg.shape[1]
            negatives = m.net_audio(neg.reshape(b * k * t, *neg.shape[3:])).mouth_embed.view(b, k, t, -1)
        lip = lip_info_nce(visual, audio, batch["clip_index"].reshape(b), batch["frame_index"], lc["min_shift"],
                           bool(lc["lip_other_clips"]), lc["temperature"], negatives, batch.get("negative_clip_index"))
        lip["loss"] = lip["loss"] * lc["lip"]
        out["lip"] = lip
        # eye: anchor = donor's eye region on the base frame; positive donor, negative base
        pairs = "eye_anchor" in batch
        if (lc["eye"] > 0 and pairs) or lc["eye_prior"] > 0:
            def eye(x: torch.Tensor) -> torch.Tensor:
                x = x.reshape(b * t, 3, *x.shape[-2:])
                return mot.embed("eye", mot.forward_feature(self._motion_in(x)) if "eye" in self.trunk
                                 else self._features(x))

            f2 = mot.embed("eye", feat["eye"])
            f1, fa = (eye(batch["eye_donor"]), eye(batch["eye_anchor"])) if pairs else (None, None)
            eye_out: dict[str, torch.Tensor] = {"loss": f2.sum() * 0.0}
            if lc["eye"] > 0 and pairs:
                eye_out["loss"] = eye_out["loss"] + info_nce(fa, f1, f2.unsqueeze(1), lc["temperature"]) * lc["eye"]
                with torch.no_grad():
                    eye_out["acc"] = (F.cosine_similarity(fa, f1) > F.cosine_similarity(fa, f2)).float().mean()
            if lc["eye_prior"] > 0:
                codes, targets = [f2], [self.eye_prior_target(frames, batch["landmarks"])]
                if pairs:
                    donor = self.eye_prior_target(batch["eye_donor"], batch["eye_donor_landmarks"])
                    codes, targets = codes + [f1, fa], targets + [donor, donor]
                prior = window_centred_l1(torch.cat(codes)[:, :4].view(-1, t, 4),
                                          torch.cat(targets).to(f2).view(-1, t, 4))
                eye_out["loss"] = eye_out["loss"] + prior * lc["eye_prior"]
                eye_out["prior"] = prior.detach()
            out["eye"] = eye_out
        # pose: L1 to the normalised pose prior
        if lc["pose"] > 0:
            pred = mot.pose(feat["pose"])
            target = self.pose_target(batch["pose"].reshape(b * t, -1))
            err = (pred - target).abs().mean()
            out["pose"] = {"loss": err * lc["pose"], "mae": err.detach()}
        return out

    def eye_prior_target(self, frames: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, 3, S, S) in [-1, 1] and their landmarks (B, T, 68, 2, output pixels) -> the
        eye-prior target (B*T, 4): `eye_state` (closure left / right, by ``eye_prior_closure``, gaze x / y)
        x ``eye_prior_scale``; NaN rows where the eyes are not measurable."""
        images = frames_to_uint8((frames.reshape(-1, *frames.shape[-3:]) + 1) / 2)
        state = eye_state(images, landmarks.reshape(-1, 68, 2).detach().cpu().numpy(),
                          closure=self.loss_cfg["eye_prior_closure"])
        return torch.from_numpy(state * np.asarray(self.loss_cfg["eye_prior_scale"], np.float64)).float()

    def pose_target(self, pose: torch.Tensor) -> torch.Tensor:
        """Stored poses (N, 6) -> the regression target (pose - ``pose_offset``) * ``pose_scale``."""
        offset = pose.new_tensor(self.loss_cfg["pose_offset"])
        scale = pose.new_tensor(self.loss_cfg["pose_scale"])
        return (pose - offset) * scale

    def _fine_step(self, batch: dict) -> None:
        losses = self.fine_losses(batch)
        opts = dict(zip(self.trained_groups(), self.optimizer_list()))
        b = batch["frames"].shape[0]
        logs = {}
        for name, opt in opts.items():  # disjoint parameters: no toggling needed
            branches = [n for n in FINE_BRANCHES if n in losses and (name == "fine" or n == name)]
            if branches:
                self.guarded_step(opt, sum(losses[n]["loss"] for n in branches), name)
        for name, values in losses.items():
            logs.update({f"train/{name}_{k}": v.detach() for k, v in values.items()})
        self.log_dict(logs, on_step=True, batch_size=b)
        self.log("train/loss_lip", losses["lip"]["loss"].detach(), on_step=True, prog_bar=True, batch_size=b)
        samples = {"frames": batch["frames"][:, 0]}
        if "eye_anchor" in batch:
            samples.update({"eye_donor": batch["eye_donor"][:, 0], "eye_anchor": batch["eye_anchor"][:, 0]})
        self.remember_samples(samples)

    @property
    def expression_trains(self) -> bool:
        """Whether E_exp still trains at this batch (``optim.expression_steps``)."""
        steps = self.optim_cfg["expression_steps"]
        return steps is None or self.batches < int(steps)

    def window_emotion(self, window_frames: torch.Tensor) -> torch.Tensor:
        """(B, K, 3, S, S) augmented in-window frames -> the window-mean emotion code (B, emo_dim)."""
        b, k = window_frames.shape[:2]
        if not self.expression_trains and self.model.net_motion.to_emo.training:
            self._fix_expression()
        feat = self._features(window_frames.reshape(b * k, *window_frames.shape[2:]))
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.expression_trains):
            return self.model.net_motion.embed("emo", feat).view(b, k, -1).mean(1)

    def lip_decorrelation(self, emo: torch.Tensor, audio: torch.Tensor, update: bool = True) -> torch.Tensor:
        """Eq. 6 over the M latest (emotion, audio lip code) pairs: this batch's B rows (emo with its
        gradient) and the M - B latest banked rows; then (with `update`) the batch is banked."""
        b = emo.shape[0]
        size = self.emo_bank.size
        emo_all = torch.cat([emo, self.emo_bank.latest(size - b).to(emo.dtype)], 0)
        audio_all = torch.cat([audio.detach(), self.audio_bank.latest(size - b).to(audio.dtype)], 0)
        loss = decorrelation_loss(emo_all, audio_all) if emo_all.shape[0] >= 2 else emo.sum() * 0.0
        if update:
            self.emo_bank.push(emo)
            self.audio_bank.push(audio)
        return loss

    def _expression_step(self, batch: dict) -> None:
        m, cfg, lc = self.model, self.config, self.loss_cfg
        mot = m.net_motion
        frames = batch["frames"]
        b, t = frames.shape[:2]
        c = t // 2  # the in-window frames are centred on the middle target frame
        driving = frames[:, c]
        target = resize_images(driving, cfg.image_size)
        opt_g = self.optimizer_list()[0]
        self.toggle_optimizer(opt_g)
        with torch.no_grad():  # fixed in this stage: appearance, audio, lip / eye / pose branches
            app = m.appearance(resize_images(batch["reference"][:, 0], cfg.reference_size))
            audio = m.net_audio(batch["mel"][:, c]).mouth_embed
            feat = self._features(driving)
            eye, pose = mot.embed("eye", feat), mot.pose(feat)
            unified_real = mot.unified(feat)
        emo = self.window_emotion(batch["window_frames"])
        fake = m.generate(app.feature, app.feature_map, audio, emo, eye, pose)
        landmarks = batch["landmarks"][:, c] if "landmarks" in batch else None
        losses = self._synthesis_losses(fake, target, landmarks, driving.shape[-1])
        if lc["decorrelation"] > 0 and self.expression_trains:
            losses["decorrelation"] = self.lip_decorrelation(emo, audio) * lc["decorrelation"]
        if lc["motion"] > 0:
            feat_fake = mot.forward_feature(self._motion_in(fake))
            lip_fake = mot.mouth_embed(mot.to_mouth(feat_fake))
            losses["motion"] = (torch.exp(-F.cosine_similarity(lip_fake, audio, dim=-1)).mean()
                                + (mot.embed("eye", feat_fake) - eye).abs().mean()
                                + (mot.unified(feat_fake) - unified_real).pow(2).mean()) * lc["motion"]
        self._gan_step(losses, fake, target, b)
        with torch.no_grad():
            self.log("train/l1_recon", F.l1_loss(fake, target), on_step=True, prog_bar=True, batch_size=b)
        self.remember_samples({"reference": resize_images(batch["reference"][:, 0], cfg.image_size),
                               "generated": fake, "target": target})
