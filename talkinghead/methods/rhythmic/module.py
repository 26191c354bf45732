"""Rhythmic Head training (Chen et al., ECCV 2020) as a `StagedModule`: one class, four stages.

Every stage reads the data module's reference context (``reference_span`` = tau: the tau frames right
before the window, with their landmarks, poses and 4480-sample audio windows) followed by the
window of target frames -- the paper's reference video y_1:tau and its continuation.

``expression``   Psi (`ExpressionLearner`). No images (``decode_frames=False``). The context and
                 window landmarks are frontalised with their poses (`frontalise_landmarks`); the
                 identity p_tM is the PCA of the most frontal context frame; the target the window
                 frames' PCA coefficients minus it (`expression_targets`). Audio: the continuous
                 waveform of context + window (rebuilt from the per-frame windows,
                 `continuous_audio`), noise mixed in at an SNR drawn from the model's levels (paper
                 6-30 dB, 3 dB steps; white Gaussian noise: no noise files ship), RMS-normalised log-mel,
                 0.28 s windows per target frame. Loss: MSE on the coefficients (+ optional
                 landmark-space term). The PCA basis is fitted on the training split's frontalised
                 landmarks when the stage starts (`setup`, unless the model already holds a fitted
                 one) and lives in ``model.expression.pca`` (buffers), so every later checkpoint
                 carries it.
``head_motion``  Phi (`HeadMotionLearner`). No images. The context's poses and audio are the reference
                 h_1:tau / x_1:tau, the window the future h_tau+1:T to predict; poses smoothed
                 (Hanning 11) and normalised (`MotionNormaliser`, fitted on the training split's poses
                 at the start of the stage, kept in ``model.head_motion.normaliser``); audio windows
                 on the int16 scale, smoothed over time (Hanning 21), as the official RotateAudio
                 trainer. Loss: MSE (official); the statistics discriminator (`MotionDiscriminator`)
                 trains alongside when ``loss.motion_discriminator`` (official: trained, its term
                 reaches Phi only with ``model.head_motion.adversarial_weight`` > 0, official 0).
``generator``    Theta (`Composer`) on ground-truth landmarks and poses. Per target frame
                 (`composer_inputs`): the target edge map; K references drawn from the context frames
                 with their edge maps; the most frontal reference's landmark mesh re-rendered under the
                 target pose (the "ani" image, its render mask, and the edge map of the mesh's
                 re-posed landmarks); the motion-matched reference (nearest head motion; with
                 probability ``worst_match_prob`` the farthest, as the official sampler). Losses
                 (official loss collector; weights in `RhythmicLoss`): multi-scale hinge GAN on a
                 discriminator conditioned as the official one ([matched reference label + image,
                 target label, frame]), feature matching x10, VGG19 x10 (off without the VGG19 file),
                 on the frame and on the "raw" output; flow-warp L1 x10 on both warped images (the
                 rendered one against the target masked by the render mask); face-region L1 x10 and
                 mouth-region L1 x3 on the frame. Adam with TTUR (G 2e-4, D 8e-4, betas (0, 0.999)).
``joint``        Theta trained on PREDICTED landmarks and poses, Psi and Phi frozen (eval mode): Psi's
                 frontal landmarks (clean audio, identity = the most frontal context frame) posed with
                 Phi's poses extrapolated from the context (`HeadMotionLearner.extrapolate`), the
                 paper's end-to-end setting. The losses compare with the real frame (whose true pose
                 and expression differ from the predicted ones: the reconstruction terms then also
                 teach Theta to follow its labels only as far as the frame allows); the real pair the
                 discriminator sees is conditioned on the ground-truth label.

Differences from the paper / official code (beyond the substitutes of render.py, composer.py,
expression.py and motion.py): references come from the tau context frames only (images of the K
drawn ones; the mesh reference is the most frontal of those K, not of all tau); Phi's reference /
future lengths are tau and the window (official: 32-96 / 16-96 drawn per batch) and its learning
rate constant (official: halved every 5 epochs after 5); no temporal discriminator (official x2, only
with ``n_frames_G > 1``, which the release does not use), no FlowNet2 flow supervision, no
attention-map loss (off in the paper's runs), no mouth VGG / mouth discriminator (GM terms are zero in
the released loss collector), no GAN / VGG on the warped rendered image.

Frozen submodules are kept in eval mode (their BatchNorm statistics and dropout do not move).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.data.audio import mel_spectrogram
from talkinghead.methods.rhythmic.config import RhythmicLoss, RhythmicOptim
from talkinghead.methods.rhythmic.expression import (
    expression_losses,
    expression_mel_windows,
    expression_targets,
    most_frontal_index,
)
from talkinghead.methods.rhythmic.motion import (
    MotionDiscriminator,
    motion_discriminator_losses,
    motion_losses,
    smooth_sequence,
)
from talkinghead.methods.rhythmic.networks import (
    ComposerInputs,
    Rhythmic,
    RhythmicConfig,
    build_discriminator,
    composer_inputs,
    frontal_landmarks,
    image_landmarks,
    normaliser_fitted,
)
from talkinghead.methods.rhythmic.render import landmark_edge_map, upper_face_points
from talkinghead.nn.losses import (discriminator_hinge_loss, feature_matching_loss, generator_hinge_loss, masked_l1,
                                   mouth_l1_loss)
from talkinghead.training.module import StagedModule, config_section

__all__ = ["RhythmicModule", "STAGES", "STAGE_OUTPUTS", "continuous_audio", "face_mask"]

STAGES = ("expression", "head_motion", "generator", "joint")
#: What each stage trains and hands on (the generator stage hands its discriminator to the joint stage).
STAGE_OUTPUTS = {"expression": ("model.expression",), "head_motion": ("model.head_motion",),
                 "generator": ("model.generator", "netD"),
                 "joint": ("model.expression", "model.head_motion", "model.generator", "netD")}
PCA_STAGES = ("expression", "joint")
NORMALISER_STAGES = ("head_motion", "joint")
IMAGE_STAGES = ("generator", "joint")


def continuous_audio(windows: torch.Tensor, context: int = 7) -> torch.Tensor:
    """Per-frame audio windows of consecutive frames (B, N, A), A = `context` chunks centred on each
    frame (the data module's ``audio`` / ``context_audio`` with A = 7 x 640) -> the continuous
    waveform (B, (N + context - 1) * A / context): the first frame's leading chunks, every frame's
    centre chunk, the last frame's trailing chunks. Frame j's centre chunk is chunk j + context // 2
    of the result. (Frames repeated by a clip too short for the context give repeated chunks.)"""
    b, n, a = windows.shape
    if a % context:
        raise ValueError(f"audio windows of {a} samples do not split into {context} chunks")
    w = windows.reshape(b, n, context, a // context)
    half = context // 2
    return torch.cat([w[:, 0, :half], w[:, :, half], w[:, -1, half + 1:]], dim=1).reshape(b, -1)


def face_mask(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 68, 2) landmarks in `size`-px coordinates -> (N, 1, size, size) 0/1 mask of the face region:
    the convex hull of the 68 points and the synthetic upper face (`upper_face_points`: the official
    label's forehead)."""
    pts = landmarks.detach().cpu().double().numpy()
    pts = np.concatenate([pts, upper_face_points(pts)], axis=1)
    masks = np.zeros((len(pts), size, size), np.uint8)
    for mask, p in zip(masks, pts):
        hull = cv2.convexHull(np.round(p * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return torch.from_numpy(masks).unsqueeze(1).to(device=landmarks.device, dtype=landmarks.dtype)


class RhythmicModule(StagedModule):
    """Rhythmic Head training (see the module docstring).

    Args:
        stage: "expression" | "head_motion" | "generator" | "joint".
        model: `RhythmicConfig` as a dict; None = the paper model.
        loss: overrides of `config.RhythmicLoss`.
        optim: overrides of `config.RhythmicOptim` (``freeze`` / ``lr_mult`` go to `StagedModule`).
        worst_match_prob: generator stages: chance that a frame's matched reference is the worst match.
        store: clip store (or shard folder) the PCA / normaliser are fitted on when the stage starts
            without them; train_split: its split.
        sample_every_n_steps, name, gradient_clip, max_nonfinite_in_a_row: see `StagedModule`.
    """

    STAGES = STAGES
    STAGE_OUTPUTS = STAGE_OUTPUTS
    GAN_STAGES = IMAGE_STAGES

    def __init__(self, stage: str = "generator", model: dict | None = None, loss: dict | None = None,
                 optim: dict | None = None, worst_match_prob: float = 0.0, store: str | None = None,
                 train_split: str = "train", sample_every_n_steps: int = 200, name: str = "rhythmic",
                 gradient_clip: float | None = None, max_nonfinite_in_a_row: int = 20):
        optim_cfg = config_section(RhythmicOptim, optim, "optim")
        super().__init__(stage, freeze=optim_cfg["freeze"], lr_mult=optim_cfg["lr_mult"], ema=0.0,
                         gradient_clip=gradient_clip, sample_every_n_steps=sample_every_n_steps,
                         max_nonfinite_in_a_row=max_nonfinite_in_a_row)
        self.config = RhythmicConfig.from_dict(model) if model is not None else RhythmicConfig.paper()
        if not 0.0 <= float(worst_match_prob) <= 1.0:
            raise ValueError(f"worst_match_prob must be in [0, 1], got {worst_match_prob}")
        self.save_hyperparameters({"stage": stage, "model": self.config.to_dict(), "loss": dict(loss or {}),
                                   "optim": dict(optim or {}), "worst_match_prob": float(worst_match_prob),
                                   "store": None if store is None else str(store), "train_split": train_split,
                                   "sample_every_n_steps": int(sample_every_n_steps), "name": name})
        self.loss_cfg = config_section(RhythmicLoss, loss, "loss")
        self.optim_cfg = optim_cfg
        self.worst_match_prob = float(worst_match_prob)
        self.store, self.train_split = store, train_split
        self.model = Rhythmic(self.config)
        self.noise_mixer = self.config.expression.noise_mixer()  # global RNG: restored on resume
        if stage == "head_motion" and self.loss_cfg["motion_discriminator"]:
            self.motion_disc = MotionDiscriminator(self.config.head_motion)
        if stage in IMAGE_STAGES:
            self.netD = build_discriminator(self.config)
        self.freeze_for_stage()
        self.train()

    # ------------------------------------------------------------------------------- statistics
    def _source(self):
        from pathlib import Path

        from talkinghead.data.store import ClipStore, ShardSource

        if self.store is None:
            raise ValueError(f"the {self.stage} stage needs fitted statistics and no store was given to fit them on")
        path = Path(self.store)
        return ClipStore(path) if (path / "index.json").is_file() else ShardSource(path)

    def fit_statistics(self, source=None) -> list[str]:
        """Fit what this stage needs and the model lacks: Psi's PCA (expression, joint) and Phi's
        normaliser (head_motion, joint), on `source` (default: the ``store`` given) split
        ``train_split``. Returns the names fitted."""
        fitted = []
        if self.stage in PCA_STAGES and not bool(self.model.pca.fitted):
            source = source if source is not None else self._source()
            self.model.fit_pca(source, split=self.train_split)
            fitted.append("pca")
        if self.stage in NORMALISER_STAGES and not normaliser_fitted(self.model.normaliser):
            source = source if source is not None else self._source()
            self.model.fit_normaliser(source, split=self.train_split)
            fitted.append("normaliser")
        return fitted

    def setup(self, stage: str) -> None:
        """At the start of a fit (before a checkpoint is restored, which then brings the same values):
        fit the statistics this stage needs and the model lacks (`fit_statistics`)."""
        if stage == "fit":
            fitted = self.fit_statistics()
            if fitted:
                self._warn(f"{type(self).__name__} {self.stage}: fitted {' and '.join(fitted)} on {self.store} "
                           f"({self.train_split})")

    # ------------------------------------------------------------------------------- params
    def stage_parameters(self, stage: str) -> dict[str, dict[str, list[torch.nn.Parameter]]]:
        """expression: {expression}; head_motion: {head_motion}, motion_discriminator {motion_disc};
        generator / joint: generator {generator: the composer's trained parameters},
        discriminator {netD}."""
        m = self.model
        if stage == "expression":
            return {"expression": {"expression": list(m.expression.parameters())}}
        if stage == "head_motion":
            out = {"head_motion": {"head_motion": list(m.head_motion.parameters())}}
            if stage == self.stage and hasattr(self, "motion_disc"):
                out["motion_discriminator"] = {"motion_disc": list(self.motion_disc.parameters())}
            return out
        out = {"generator": {"generator": m.generator.trained_parameters()}}
        if stage == self.stage and hasattr(self, "netD"):
            out["discriminator"] = {"netD": list(self.netD.parameters())}
        return out

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        cfg = self.optim_cfg
        lr = cfg["d_lr"] if name.endswith("discriminator") and cfg["d_lr"] is not None else cfg["lr"]
        return {"lr": float(lr), "betas": cfg["betas"], "amsgrad": False, "weight_decay": cfg["weight_decay"]}

    def train(self, mode: bool = True):
        """Train mode for what this stage trains; submodules without a trained parameter stay in eval
        mode (frozen BatchNorm statistics and dropout do not move)."""
        super().train(mode)
        if mode:
            for module in self.modules():
                params = list(module.parameters())
                if params and not any(p.requires_grad for p in params):
                    module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        self.train()

    # ------------------------------------------------------------------------------- inputs
    @property
    def image_size(self) -> int:
        return self.config.image_size

    def _sequence(self, batch: dict) -> dict[str, torch.Tensor]:
        """Context + window of a batch: landmarks (B, P+T, 68, 2) (S px), poses (B, P+T, 6), audio windows
        (B, P+T, A); P (context frames) and T (window frames)."""
        p, t = batch["context_pose"].shape[1], batch["pose"].shape[1]
        out = {"pose": torch.cat([batch["context_pose"], batch["pose"]], 1),
               "landmarks": torch.cat([batch["context_landmarks"], batch["landmarks"]], 1), "P": p, "T": t}
        if "audio" in batch:
            out["audio"] = torch.cat([batch["context_audio"], batch["audio"]], 1)
        return out

    def mel_windows(self, audio: torch.Tensor, p: int, t: int, noise: bool) -> torch.Tensor:
        """Psi's mel windows (B, T, 1, 80, W) of the T window frames from the context + window audio
        windows (B, P+T, A) (`continuous_audio`), with noise mixed in (global torch RNG) when `noise`."""
        ecfg, hcfg = self.config.expression, self.config.head_motion
        wav = continuous_audio(audio.float(), hcfg.context_frames)
        if noise:
            wav, _ = self.noise_mixer(wav)
        mel = mel_spectrogram(wav)
        first = hcfg.context_frames // 2 + p  # the first window frame's centre chunk
        return expression_mel_windows(mel, first + t, ecfg.context)[:, first:first + t]

    def motion_inputs(self, poses: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Phi's training data from store poses (B, N, 6) and audio windows (B, N, A): (smoothed poses,
        audio windows (B, N, 7, 640) on the int16 scale, smoothed over time), as `motion_clip_inputs`."""
        cfg = self.config.head_motion
        b, n = poses.shape[:2]
        pose = smooth_sequence(poses.float(), cfg.pose_smoothing, dim=1) if cfg.pose_smoothing >= 3 else poses.float()
        wav = audio.float().reshape(b, n, cfg.context_frames, cfg.chunk_samples) * cfg.audio_scale
        if cfg.audio_smoothing >= 3:
            wav = smooth_sequence(wav, cfg.audio_smoothing, dim=1)
        return pose, wav

    @staticmethod
    def identity_index(context_pose: torch.Tensor) -> list[int]:
        """Per batch row, the most frontal context frame (the paper's t_M)."""
        return [most_frontal_index(p) for p in context_pose]

    # ------------------------------------------------------------------------------- steps
    def training_step(self, batch: dict, batch_idx: int) -> None:
        if self.stage == "expression":
            self._expression_step(batch)
        elif self.stage == "head_motion":
            self._head_motion_step(batch)
        else:
            self._image_step(batch)

    def expression_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Psi's losses on a batch: {"pca", "landmark", "loss" (weighted total)}."""
        seq, lc = self._sequence(batch), self.loss_cfg
        p, t = seq["P"], seq["T"]
        frontal = frontal_landmarks(seq["landmarks"], seq["pose"], self.image_size).to(seq["pose"].device)
        identity, target = expression_targets(frontal, self.identity_index(batch["context_pose"]), self.model.pca)
        mel = self.mel_windows(seq["audio"], p, t, bool(lc["noise"]) and self.training)
        pred = self.model.expression(mel, identity)
        out = expression_losses(pred, target[:, p:], self.model.pca)
        out["loss"] = out["pca"] * lc["pca"] + out["landmark"] * lc["landmark"]
        return out

    def _expression_step(self, batch: dict) -> None:
        out = self.expression_losses(batch)
        self.guarded_step(self.optimizer_list()[0], out["loss"], "expression")
        b = batch["pose"].shape[0]
        self.log_dict({"train/loss_pca": out["pca"].detach(), "train/landmark_error": out["landmark"].detach()},
                      on_step=True, batch_size=b)
        self.log("train/loss", out["loss"].detach(), on_step=True, prog_bar=True, batch_size=b)

    def head_motion_losses(self, batch: dict) -> dict[str, Any]:
        """Phi's losses on a batch: motion_losses' {"mse", ["adversarial"], "total"} plus the normalised
        prediction and target ("pred", "target")."""
        seq = self._sequence(batch)
        p = seq["P"]
        pose, wav = self.motion_inputs(seq["pose"], seq["audio"])
        motion = self.model.normaliser.normalise(pose)
        pred = self.model.head_motion(motion[:, :p], wav[:, :p], wav[:, p:])
        disc = getattr(self, "motion_disc", None)
        out: dict[str, Any] = motion_losses(pred, motion[:, p:], disc, self.config.head_motion.adversarial_weight)
        out["total"] = out["total"] - out["mse"] + out["mse"] * self.loss_cfg["motion"]
        out.update(pred=pred, target=motion[:, p:])
        return out

    def _head_motion_step(self, batch: dict) -> None:
        out = self.head_motion_losses(batch)
        opts = self.optimizer_list()
        b = batch["pose"].shape[0]
        self.toggle_optimizer(opts[0])
        self.guarded_step(opts[0], out["total"], "head_motion")
        self.untoggle_optimizer(opts[0])
        logs = {"train/loss_motion": out["mse"].detach()}
        if "adversarial" in out:
            logs["train/loss_adversarial"] = out["adversarial"].detach()
        if len(opts) > 1:
            self.toggle_optimizer(opts[1])
            d = motion_discriminator_losses(self.motion_disc, out["target"], out["pred"])
            self.guarded_step(opts[1], d["total"], "motion_discriminator")
            self.untoggle_optimizer(opts[1])
            logs.update({"train/loss_D_motion": d["total"].detach()})
        self.log_dict(logs, on_step=True, batch_size=b)
        self.log("train/loss", out["mse"].detach(), on_step=True, prog_bar=True, batch_size=b)

    # -- generator stages ----------------------------------------------------------------------
    @torch.no_grad()
    def predicted_targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint stage's labels: Psi's frontal landmarks (clean audio; identity = the most frontal
        context frame) posed with Phi's poses extrapolated from the context -> (landmarks (B, T, 68, 2)
        in S px, poses (B, T, 6) store poses)."""
        seq = self._sequence(batch)
        p, t, size = seq["P"], seq["T"], self.image_size
        idx = self.identity_index(batch["context_pose"])
        ctx_frontal = frontal_landmarks(batch["context_landmarks"], batch["context_pose"], size)
        identity = torch.stack([ctx_frontal[b, i] for b, i in enumerate(idx)]).to(batch["pose"].device)
        mel = self.mel_windows(seq["audio"], p, t, noise=False)
        frontal = self.model.predict_frontal(mel, identity)
        pose, wav = self.motion_inputs(seq["pose"], seq["audio"])
        poses = self.model.extrapolate_poses(pose[:, :p], wav[:, :p], wav[:, p:])
        landmarks = torch.stack([image_landmarks(f, q, size) for f, q in zip(frontal, poses)]).to(poses.device)
        return landmarks, poses

    def build_inputs(self, landmarks: torch.Tensor, poses: torch.Tensor, batch: dict,
                     worst_match_prob: float | None = None) -> ComposerInputs:
        """`composer_inputs` of every batch row (targets (B, T, ...)), frames of all rows along dim 0."""
        prob = self.worst_match_prob if worst_match_prob is None else worst_match_prob
        thickness = self.config.edge_thickness
        return ComposerInputs.cat([
            composer_inputs(landmarks[b], poses[b], batch["reference"][b], batch["reference_landmarks"][b],
                            batch["reference_pose"][b], thickness, prob)
            for b in range(landmarks.shape[0])])

    def _d_input(self, inputs: ComposerInputs, label: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([inputs.warp_ref_label, inputs.warp_ref_image, label, image], dim=1)

    def image_losses(self, out, inputs: ComposerInputs, target: torch.Tensor, real_label: torch.Tensor,
                     landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Theta's generator-side losses (weighted; see the module docstring); landmarks (N, 68, 2) of
        the real frames (S px) for the face and mouth regions; real_label the label the real pair is
        conditioned on."""
        lc = self.loss_cfg
        losses: dict[str, torch.Tensor] = {}
        fakes = [("image", out.image)]
        if lc["raw"] and out.raw is not None:
            fakes.append(("raw", out.raw))
        with torch.no_grad():
            pred_real = self.netD(self._d_input(inputs, real_label, target))
        vgg = self.perceptual_loss(lc["vgg"] > 0)
        for name, fake in fakes:
            pred_fake = self.netD(self._d_input(inputs, inputs.label, fake))
            losses[f"gan_{name}"] = generator_hinge_loss(pred_fake) * lc["gan"]
            if lc["feat"] > 0:
                losses[f"feat_{name}"] = feature_matching_loss(pred_fake, pred_real, first_weight=lc["image"]) * lc["feat"]
            if vgg is not None:
                losses[f"vgg_{name}"] = vgg(fake, target) * lc["vgg"]
        if lc["warp"] > 0:
            warp = target.new_zeros(())
            if out.warped_ref is not None:
                warp = warp + F.l1_loss(out.warped_ref, target)
            if out.warped_ani is not None:
                warp = warp + F.l1_loss(out.warped_ani, target * inputs.ani_mask)
            losses["warp"] = warp * lc["warp"]
        if lc["face_l1"] > 0:
            losses["face_l1"] = masked_l1(out.image, target, face_mask(landmarks, target.shape[-1])) * lc["face_l1"]
        if lc["mouth_l1"] > 0:
            losses["mouth_l1"] = mouth_l1_loss(out.image, target, landmarks, lc["mouth_margin"]) * lc["mouth_l1"]
        if lc["l1"] > 0:
            losses["l1"] = F.l1_loss(out.image, target) * lc["l1"]
        return losses

    def discriminator_loss(self, out, inputs: ComposerInputs, target: torch.Tensor, real_label: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hinge D loss summed over the fakes (frame, and raw when trained), as the official collector:
        (total, real term, fake term) weighted by ``loss.gan``."""
        fakes = [out.image] + ([out.raw] if self.loss_cfg["raw"] and out.raw is not None else [])
        pred_real = self.netD(self._d_input(inputs, real_label, target))
        real_total = fake_total = target.new_zeros(())
        for fake in fakes:
            d_real, d_fake = discriminator_hinge_loss(pred_real, self.netD(self._d_input(inputs, inputs.label,
                                                                                        fake.detach())))
            real_total, fake_total = real_total + d_real, fake_total + d_fake
        w = self.loss_cfg["gan"]
        return (real_total + fake_total) * w, real_total * w, fake_total * w

    def _image_step(self, batch: dict) -> None:
        frames = batch["frames"]
        b, t = frames.shape[:2]
        size = frames.shape[-1]
        if size != self.image_size:
            raise ValueError(f"frames of {size} px, the model is {self.image_size} px (data image_size)")
        target = frames.reshape(b * t, *frames.shape[2:])
        true_landmarks = batch["landmarks"]
        if self.stage == "joint":
            landmarks, poses = self.predicted_targets(batch)
        else:
            landmarks, poses = true_landmarks, batch["pose"]
        inputs = self.build_inputs(landmarks, poses, batch)
        flat_true = true_landmarks.reshape(b * t, 68, 2)
        real_label = inputs.label if self.stage != "joint" else \
            landmark_edge_map(flat_true, size, self.config.edge_thickness).to(target.device)
        opt_g, opt_d = self.optimizer_list()
        self.toggle_optimizer(opt_g)
        out = self.model.compose(inputs)
        losses = self.image_losses(out, inputs, target, real_label, flat_true)
        loss_g = sum(losses.values())
        self.guarded_step(opt_g, loss_g, "generator")
        self.untoggle_optimizer(opt_g)
        self.toggle_optimizer(opt_d)
        loss_d, d_real, d_fake = self.discriminator_loss(out, inputs, target, real_label)
        self.guarded_step(opt_d, loss_d, "discriminator")
        self.untoggle_optimizer(opt_d)
        logs = {f"train/loss_{k}": v.detach() for k, v in losses.items()}
        logs.update({"train/loss_G": loss_g.detach(), "train/loss_D": loss_d.detach(),
                     "train/D_real": d_real.detach(), "train/D_fake": d_fake.detach()})
        self.log_dict(logs, on_step=True, batch_size=b)
        with torch.no_grad():
            self.log("train/l1_recon", F.l1_loss(out.image, target), on_step=True, prog_bar=True, batch_size=b)
        self.remember_samples({"matched_ref": inputs.warp_ref_image, "rendered": inputs.ani_image,
                               "label": inputs.label.expand(-1, 3, -1, -1) * 2 - 1, "generated": out.image,
                               "target": target})
