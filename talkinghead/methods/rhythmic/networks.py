"""Rhythmic Head as one network: y = Theta(y_1:tau, Psi(y_tM, x), Phi(y_1:tau, x)) (Chen et al., ECCV 2020).

`Rhythmic` holds the three learned parts under fixed attribute names:

* ``expression`` -- Psi, `ExpressionLearner` (audio + identity landmarks -> frontal expression PCA);
  its `LandmarkPCA` (``expression.pca``, buffers ``mean`` / ``components`` / ``variance`` /
  ``fitted``) is fitted on the training store's frontalised landmarks at the start of the
  ``expression`` stage and travels in every checkpoint (`Rhythmic.pca`);
* ``head_motion`` -- Phi, `HeadMotionLearner` (reference motion + audio -> future head motion); its
  `MotionNormaliser` (``head_motion.normaliser``, buffers ``mean`` / ``std``) is fitted on the
  store's poses at the start of the ``head_motion`` stage (`Rhythmic.normaliser`);
* ``generator`` -- Theta, `Composer` (the official ``SpadeCombineModule`` layout, so
  `talkinghead.methods.rhythmic.official` loads ``latest_net_G.pth`` into ``model.generator``).

And the inference pieces a generator calls (all batched over a clip's frames):

* `Rhythmic.predict_frontal`: Psi's frontal landmarks of the target frames from audio mel windows
  and the identity frame's frontal landmarks;
* `Rhythmic.extrapolate_poses`: Phi's poses of the target frames from the reference poses and the
  audio windows of reference and targets;
* `image_landmarks`: frontal landmarks + poses -> landmarks in the pixels of an S x S frame;
* `composer_inputs`: the per-frame inputs of Theta (target edge map, K reference edge maps, the
  mesh of the most frontal reference re-rendered under each target pose with its edge map and
  mask, the motion-matched reference) from landmarks, poses and reference frames;
* `Rhythmic.compose`: Theta on those inputs.

Coordinates. Landmarks are pixels of the S x S frames they belong to (the data module's
convention); poses are the store's (`talkinghead.data.faces.estimate_head_pose`: rotation vector,
tx, ty in the aligned 224 px image, log scale with inter-ocular distance 50 px at 0) whatever S is.
`rescale_pose` maps a store pose to the pixels of an S px frame (x' = k x + (k - 1) / 2, k = S / 224:
tx' = k tx + (k - 1) / 2, log scale + log k), so meshes, renders and edge maps are built in the
frame's own pixels.

`RhythmicConfig` ties the parts' sizes together: ``image_size`` (S; the composer's), ``tau``
(reference frames: the data module's ``reference_span``), ``num_references`` (K: references given
to the composer, the composer's ``n_shot``), ``pca_components`` (Psi's PCA size). These top-level
values are written into the nested configs (they win over the nested values).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from talkinghead.data import faces
from talkinghead.methods.rhythmic.composer import Composer, ComposerConfig, ComposerOutput
from talkinghead.methods.rhythmic.expression import (
    ExpressionConfig,
    ExpressionLearner,
    LandmarkPCA,
    frontalise_landmarks,
    most_frontal_index,
    pose_landmarks,
)
from talkinghead.methods.rhythmic.motion import HeadMotionConfig, HeadMotionLearner, MotionNormaliser
from talkinghead.methods.rhythmic.render import FaceMesh, landmark_edge_map, motion_distances, render_reposed
from talkinghead.nn.config import ConfigDict
from talkinghead.nn.discriminators import MultiscaleDiscriminator, MultiscaleDiscriminatorConfig

__all__ = [
    "POSE_FRAME",
    "ComposerInputs",
    "Rhythmic",
    "RhythmicConfig",
    "build_discriminator",
    "composer_inputs",
    "frontal_landmarks",
    "image_landmarks",
    "normaliser_fitted",
    "rescale_pose",
    "to_pose_frame",
]

#: Side of the frame the store's poses are expressed in (the aligned 224 px image).
POSE_FRAME = faces.ALIGN_SIZE


def _discriminator_paper() -> MultiscaleDiscriminatorConfig:
    """The official few-shot-vid2vid D input: [matched reference label, its image, target label,
    image] (``concat_ref_for_D``: 2 x (1 + 3) channels), 2 scales, spectral + instance norm."""
    return MultiscaleDiscriminatorConfig.pcavs(in_channels=8)


@dataclass(frozen=True)
class RhythmicConfig(ConfigDict):
    """Sizes of Rhythmic Head. `paper()`: 256 px, tau 64, K 8 (the released ``face8`` generator's
    K; the paper also trains K = 1 and 32), 6 PCA components (ATVGnet), the official / paper
    networks; `tiny()`: a CPU-trainable one.

    image_size:      S of frames, labels and references (paper 256); written into ``composer``.
    tau:             reference frames y_1:tau: the head-motion reference and the pool the K
                     references and the identity frame come from (paper 64).
    num_references:  K references the composer sees (official default 8); written into
                     ``composer.n_shot`` unless 1 (K = 1 skips the hybrid K-way layers).
    pca_components:  Psi's PCA size (6); written into ``expression.n_components``.
    edge_thickness:  stroke width (px at S) of the landmark edge maps (official 2 px at 256).
    expression / head_motion / composer: the parts' own configs.
    discriminator:   the image discriminator of the generator stages (input: matched reference
                     label + image, target label + image; 8 channels).
    """

    image_size: int = 256
    tau: int = 64
    num_references: int = 8
    pca_components: int = 6
    edge_thickness: float = 2.0
    expression: ExpressionConfig = field(default_factory=ExpressionConfig.paper)
    head_motion: HeadMotionConfig = field(default_factory=HeadMotionConfig.paper)
    composer: ComposerConfig = field(default_factory=ComposerConfig.paper)
    discriminator: MultiscaleDiscriminatorConfig = field(default_factory=_discriminator_paper)

    def __post_init__(self) -> None:
        converters = {"expression": ExpressionConfig, "head_motion": HeadMotionConfig, "composer": ComposerConfig,
                      "discriminator": MultiscaleDiscriminatorConfig}
        for name, cls in converters.items():
            value = getattr(self, name)
            if isinstance(value, dict) or value is None:
                object.__setattr__(self, name, cls.from_dict(value))
        # the top-level sizes win over the nested ones
        composer = self.composer
        updates: dict[str, Any] = {}
        if composer.image_size != self.image_size:
            updates["image_size"] = int(self.image_size)
        if self.num_references > 1 and composer.n_shot != self.num_references:
            updates["n_shot"] = int(self.num_references)
        if updates:
            object.__setattr__(self, "composer", replace(composer, **updates))
        if self.expression.n_components != self.pca_components:
            object.__setattr__(self, "expression", replace(self.expression, n_components=int(self.pca_components)))
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.tau < self.head_motion.min_reference:
            problems.append(f"tau {self.tau} < the head-motion encoder's min_reference {self.head_motion.min_reference}")
        if self.num_references < 1:
            problems.append(f"num_references must be >= 1, got {self.num_references}")
        if self.num_references > self.tau:
            problems.append(f"num_references {self.num_references} > tau {self.tau} (references come from the "
                            "tau reference frames)")
        if self.head_motion.motion_dim != 6:
            problems.append(f"head_motion.motion_dim must be 6 (the store's poses), got {self.head_motion.motion_dim}")
        need = 2 * (self.composer.label_nc + self.composer.image_nc)
        if self.discriminator.in_channels != need:
            problems.append(f"discriminator.in_channels must be {need} (reference label + image, target label + "
                            f"image), got {self.discriminator.in_channels}")
        if self.edge_thickness <= 0:
            problems.append(f"edge_thickness must be > 0, got {self.edge_thickness}")
        if problems:
            raise ValueError("inconsistent Rhythmic Head config: " + "; ".join(problems))

    @classmethod
    def paper(cls, **overrides: Any) -> "RhythmicConfig":
        return replace(cls(), **overrides) if overrides else cls()

    @classmethod
    def tiny(cls, image_size: int = 64, tau: int = 16, num_references: int = 2, **overrides: Any) -> "RhythmicConfig":
        """CPU sizes: the parts' ``tiny()`` configs (composer at `image_size`, K = `num_references`),
        tau 16 (Phi's tiny reference range starts at 16), a narrow 2-scale discriminator."""
        head = HeadMotionConfig.tiny(reference_range=(min(16, tau), max(min(16, tau), min(24, tau))),
                                     infer_context=min(16, tau))
        cfg = cls(image_size=image_size, tau=tau, num_references=num_references, expression=ExpressionConfig.tiny(),
                  head_motion=head, composer=ComposerConfig.tiny(image_size=image_size, n_shot=max(2, num_references)),
                  discriminator=MultiscaleDiscriminatorConfig.tiny(in_channels=8), edge_thickness=1.0)
        return replace(cfg, **overrides) if overrides else cfg


def build_discriminator(config: RhythmicConfig) -> MultiscaleDiscriminator:
    """The image discriminator of the generator stages (`RhythmicConfig.discriminator`)."""
    return MultiscaleDiscriminator(config.discriminator)


# ---------------------------------------------------------------------------------------------
# coordinates
# ---------------------------------------------------------------------------------------------
def rescale_pose(pose, size: int, pose_frame: int = POSE_FRAME):
    """Store poses (..., 6) (pixels of the `pose_frame` px image) -> the same head in the pixels of a
    `size` px frame (pixel centres at integers): tx, ty -> k t + (k - 1) / 2, log scale + log k,
    k = size / pose_frame. numpy in, numpy out; torch in, torch out."""
    k = float(size) / float(pose_frame)
    out = pose.clone() if isinstance(pose, torch.Tensor) else np.array(pose, dtype=np.float64, copy=True)
    out[..., 3:5] = out[..., 3:5] * k + 0.5 * (k - 1.0)
    out[..., 5] = out[..., 5] + float(np.log(k))
    return out


def to_pose_frame(landmarks, size: int, pose_frame: int = POSE_FRAME):
    """Landmarks in the pixels of a `size` px frame -> the pixels of the pose frame (the store's 224)."""
    k = float(pose_frame) / float(size)
    return (landmarks + 0.5) * k - 0.5


def image_landmarks(frontal, poses, size: int, pose_frame: int = POSE_FRAME) -> torch.Tensor:
    """Frontal landmarks (T, 68, 2) (canonical units, Psi's output) posed with store poses (T, 6)
    (`pose_landmarks`), in the pixels of a `size` px frame: (T, 68, 2) float32 tensor."""
    fr = frontal.detach().cpu().numpy() if isinstance(frontal, torch.Tensor) else np.asarray(frontal)
    ps = poses.detach().cpu().numpy() if isinstance(poses, torch.Tensor) else np.asarray(poses)
    lm = pose_landmarks(fr, ps)
    k = float(size) / float(pose_frame)
    return torch.from_numpy(((lm + 0.5) * k - 0.5).astype(np.float32))


def frontal_landmarks(landmarks, poses, size: int, pose_frame: int = POSE_FRAME) -> torch.Tensor:
    """Landmarks (..., 68, 2) in the pixels of a `size` px frame with their store poses (..., 6) ->
    frontal landmarks (..., 68, 2) float32 (canonical units, `frontalise_landmarks`)."""
    lm = landmarks.detach().cpu().numpy() if isinstance(landmarks, torch.Tensor) else np.asarray(landmarks)
    ps = poses.detach().cpu().numpy() if isinstance(poses, torch.Tensor) else np.asarray(poses)
    lead = lm.shape[:-2]
    flat = frontalise_landmarks(to_pose_frame(lm.reshape(-1, 68, 2).astype(np.float64), size, pose_frame),
                                ps.reshape(-1, 6))
    return torch.from_numpy(flat.reshape(*lead, 68, 2))


def normaliser_fitted(normaliser: MotionNormaliser) -> bool:
    """Whether a `MotionNormaliser` holds statistics (an unfitted one is the identity: mean 0, std 1)."""
    return not (bool((normaliser.mean == 0).all()) and bool((normaliser.std == 1).all()))


# ---------------------------------------------------------------------------------------------
# the composer's per-frame inputs
# ---------------------------------------------------------------------------------------------
class ComposerInputs(NamedTuple):
    """Theta's inputs for T target frames of one clip (S = frame size, K references).

    label (T, 1, S, S) target edge maps; ref_labels (T, K, 1, S, S), ref_images (T, K, 3, S, S) the
    references (repeated per frame); warp_ref_label (T, 1, S, S) / warp_ref_image (T, 3, S, S) the
    matched reference; ani_label (T, 1, S, S) / ani_image (T, 3, S, S) / ani_mask (T, 1, S, S) the
    most frontal reference's mesh rendered under each target pose, its edge map and coverage;
    matched (T,) the matched reference per frame; frontal () the mesh reference.
    """

    label: torch.Tensor
    ref_labels: torch.Tensor
    ref_images: torch.Tensor
    warp_ref_label: torch.Tensor
    warp_ref_image: torch.Tensor
    ani_label: torch.Tensor
    ani_image: torch.Tensor
    ani_mask: torch.Tensor
    matched: torch.Tensor
    frontal: torch.Tensor

    @staticmethod
    def cat(items: Sequence["ComposerInputs"]) -> "ComposerInputs":
        """Several clips' inputs as one batch (frames of all clips along dim 0)."""
        return ComposerInputs(*[torch.cat([getattr(i, f) for i in items]) if getattr(items[0], f).dim() else
                                torch.stack([getattr(i, f) for i in items]) for f in ComposerInputs._fields])


@torch.no_grad()
def composer_inputs(target_landmarks, target_poses, ref_images: torch.Tensor, ref_landmarks, ref_poses,
                    thickness: float = 2.0, worst_match_prob: float = 0.0, ref_label_maps: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> ComposerInputs:
    """Theta's inputs for T target frames of one clip from K reference frames.

    target_landmarks (T, 68, 2) pixels of the S px frames (ground truth, or Psi's landmarks posed by
    Phi's poses, `image_landmarks`); target_poses (T, 6) store poses; ref_images (K, 3, S, S) in
    [-1, 1]; ref_landmarks (K, 68, 2) S px; ref_poses (K, 6) store poses. The mesh reference is the
    most frontal reference (`most_frontal_index`); the matched reference the nearest head motion
    (`motion_distances`), except that with probability `worst_match_prob` per frame the farthest is
    taken (the official trainer's harder pairs; the paper: "during training we sometimes pick a
    worse match"). `ref_label_maps` (K, 1, S, S) reuses the references' edge maps. CPU work; the
    results are on ref_images' device.
    """
    device = ref_images.device
    size = int(ref_images.shape[-1])
    k = int(ref_images.shape[0])
    tgt_lm = torch.as_tensor(target_landmarks).detach().cpu().float()
    tgt_pose = torch.as_tensor(target_poses).detach().cpu().double()
    r_lm = torch.as_tensor(ref_landmarks).detach().cpu().float()
    r_pose = torch.as_tensor(ref_poses).detach().cpu().double()
    t = tgt_lm.shape[0]
    label = landmark_edge_map(tgt_lm, size, thickness)
    ref_labels = ref_label_maps.detach().cpu() if ref_label_maps is not None else landmark_edge_map(r_lm, size, thickness)
    # motion matcher (optionally the worst match, as the official training sampler)
    dist = motion_distances(r_pose, tgt_pose)  # (T, K)
    matched = dist.argmin(1)
    if worst_match_prob > 0 and k > 1:
        worst = torch.rand(t, generator=generator) < worst_match_prob
        matched = torch.where(worst, dist.argmax(1), matched)
    # the 3D-aware module: the most frontal reference's mesh under each target pose
    frontal = most_frontal_index(r_pose)
    images_cpu = ref_images.detach().cpu().float()
    mesh = FaceMesh(r_lm[frontal], rescale_pose(r_pose[frontal].numpy(), size), images_cpu[frontal])
    target_px = rescale_pose(tgt_pose.numpy(), size)
    ani_image, ani_mask = render_reposed(mesh, target_px, size)
    ani_label = landmark_edge_map(mesh.reposed_landmarks(target_px), size, thickness)
    out = ComposerInputs(label=label, ref_labels=ref_labels.unsqueeze(0).expand(t, -1, -1, -1, -1),
                         ref_images=images_cpu.unsqueeze(0).expand(t, -1, -1, -1, -1),
                         warp_ref_label=ref_labels[matched], warp_ref_image=images_cpu[matched],
                         ani_label=ani_label, ani_image=ani_image, ani_mask=ani_mask, matched=matched,
                         frontal=torch.tensor(frontal))
    return ComposerInputs(*[x.to(device) for x in out])


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
class Rhythmic(nn.Module):
    """Psi (``expression``), Phi (``head_motion``), Theta (``generator``); see the module docstring."""

    def __init__(self, config: RhythmicConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = RhythmicConfig.paper()
        elif isinstance(config, dict):
            config = RhythmicConfig.from_dict(config)
        self.config = config
        self.expression = ExpressionLearner(config.expression)
        self.head_motion = HeadMotionLearner(config.head_motion)
        self.generator = Composer(config.composer)

    # -- fitted statistics (buffers of the parts, so they travel in checkpoints) ---------------
    @property
    def pca(self) -> LandmarkPCA:
        return self.expression.pca

    @property
    def normaliser(self) -> MotionNormaliser:
        return self.head_motion.normaliser

    def fit_pca(self, source, split: str | None = "train", max_clips: int | None = None) -> LandmarkPCA:
        """Fit Psi's PCA on `source`'s frontalised landmarks (`fit_landmark_pca`) and keep it."""
        from talkinghead.methods.rhythmic.expression import fit_landmark_pca

        pca = fit_landmark_pca(source, self.config.pca_components, split=split, max_clips=max_clips)
        self.expression.set_pca(pca)
        return self.pca

    def fit_normaliser(self, source, split: str | None = "train", max_clips: int | None = None) -> MotionNormaliser:
        """Fit Phi's motion normaliser on `source`'s poses (`motion_normaliser`) and keep it."""
        from talkinghead.methods.rhythmic.motion import motion_normaliser

        fitted = motion_normaliser(source, split=split, max_clips=max_clips)
        self.normaliser.set(fitted.mean, fitted.std)
        return self.normaliser

    # -- inference pieces ---------------------------------------------------------------------
    def predict_frontal(self, mel: torch.Tensor, identity_frontal: torch.Tensor, clamp_std: float | None = 5.0
                        ) -> torch.Tensor:
        """Psi: mel windows (B, T, 1, 80, 28) and the identity frame's frontal landmarks (B, 68, 2) ->
        frontal landmarks (B, T, 68, 2) with the identity added back (as
        `ExpressionLearner.predict_landmarks`). With `clamp_std` the predicted expression coefficients
        are clamped to +-clamp_std standard deviations of the fitted PCA (a guard for the renderer
        against out-of-distribution predictions, e.g. of an untrained Psi; a trained one stays inside)."""
        if not bool(self.pca.fitted):
            raise RuntimeError("Psi's landmark PCA is not fitted (train the expression stage or call fit_pca)")
        identity = identity_frontal.to(self.pca.mean)
        coef = self.expression(mel, self.pca.transform(identity))
        if clamp_std is not None:
            bound = clamp_std * self.pca.variance.clamp_min(1e-12).sqrt().to(coef)
            coef = torch.maximum(torch.minimum(coef, bound), -bound)
        return identity.unsqueeze(1) + self.pca.delta(coef)

    def extrapolate_poses(self, ref_pose: torch.Tensor, ref_audio: torch.Tensor, drive_audio: torch.Tensor,
                          clamp_std: float | None = 5.0) -> torch.Tensor:
        """Phi: reference poses (B, tau, 6) (store poses, smoothed as in training), audio windows of
        the reference and the targets (B, tau | T, 7, 640) -> target poses (B, T, 6) (store poses). With
        `clamp_std` every dimension is clamped to the normaliser's mean +- clamp_std std (a guard for
        the renderer, as in `predict_frontal`)."""
        if not normaliser_fitted(self.normaliser):
            raise RuntimeError("Phi's motion normaliser is not fitted (train the head_motion stage or call "
                               "fit_normaliser)")
        poses = self.head_motion.extrapolate(ref_pose, ref_audio, drive_audio)
        if clamp_std is None:
            return poses
        norm = self.normaliser
        return norm.denormalise(norm.normalise(poses).clamp(-clamp_std, clamp_std))

    def composer_inputs(self, target_landmarks, target_poses, ref_images, ref_landmarks, ref_poses,
                        worst_match_prob: float = 0.0, generator: torch.Generator | None = None) -> ComposerInputs:
        """`composer_inputs` with this model's edge thickness."""
        return composer_inputs(target_landmarks, target_poses, ref_images, ref_landmarks, ref_poses,
                               self.config.edge_thickness, worst_match_prob, generator=generator)

    def compose(self, inputs: ComposerInputs) -> ComposerOutput:
        """Theta on `composer_inputs` (frames along dim 0)."""
        return self.generator(inputs.label, inputs.ref_labels, inputs.ref_images, inputs.warp_ref_label,
                              inputs.warp_ref_image, inputs.ani_label, inputs.ani_image)
