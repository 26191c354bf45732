"""Rhythmic Head generation: a short reference video + driving audio -> a talking head whose lips,
expression and head motion follow the audio, y = Theta(y_1:tau, Psi(y_tM, x), Phi(y_1:tau, x)).

`RhythmicGenerator` is a `talkinghead.generation.Generator` with ``reference_video = True``: its
reference is a VIDEO (the base reads the first tau = ``model.config.tau`` frames of ``--reference``
as a clip is read into the store: aligned frames, landmarks, head poses and the audio under them;
`talkinghead.generation.read_reference_video`). Entry points: `generate` / ``talkinghead generate
--method rhythmic`` (files in, mp4 out) and `RhythmicGenerator.generate(request)` (the benchmark:
the protocol's ``reference_frames`` give the reference video, `bench.py`).

What the reference video gives (P <= tau frames, store pose convention, frames resized to the
model's S px):

* the identity of Psi: the frontal landmarks (`networks.frontal_landmarks`) of its most frontal
  frame t_M (smallest rotation, `expression.most_frontal_index`), as in training;
* the reference motion h_1:P and its audio for Phi: the poses smoothed (Hanning
  ``head_motion.pose_smoothing``) and the 7 x 640-sample audio windows of one continuous waveform
  (reference audio followed by the driving audio, `motion.motion_audio_frames`: int16 scale,
  smoothed over time), as the ``head_motion`` / ``joint`` stages prepare them; Phi extrapolates the
  T driving frames' poses (`Rhythmic.extrapolate_poses`, autoregressive in chunks);
* the K references of Theta (``--references K``, default the model's K; the hybrid embedding runs
  with K = the trained K or K = 1, see `composer.HybridEncoder`): frames i * floor(P / K), i < K
  (the official ``test_demo_finetune`` choice, evenly spaced over the 64 reference frames), then the
  pick nearest in time to t_M replaced by t_M, so that the 3D mesh (built from the most frontal of
  the K, `networks.composer_inputs`) is the paper's "most frontal reference frame"; K = 1 is t_M
  alone (the official 1-shot demo's reference is the frame its mesh comes from). Deviation: in
  training (data module) the K references are drawn at random among the tau context frames.

Driving: Psi's frontal landmarks of each frame from the audio (mel of the reference audio followed by
the driving audio, 0.28 s windows, identity added back; no noise), posed with each frame's pose
(`networks.image_landmarks`) -> the target edge maps; the poses come from Phi, or with
``--pose-source VIDEO`` from that video: landmarks detected on its aligned frames (dlib), frames
without a face interpolated, poses estimated (`data.faces.estimate_head_pose`) and smoothed like
the reference motion (a shorter source holds its last pose). Theta runs per frame on
`networks.composer_inputs` (target edge map, the K references, the motion-matched reference, the
mesh of t_M re-rendered under the target pose); its S px output is resized to the reference's size
(224) bicubically.

An image as the reference (``--reference face.png``, or a request without a reference video) is a
1-frame reference video without audio: K = 1, the identity and mesh from that frame, and Phi's
reference motion that frame's pose held still. Phi's encoder needs ``head_motion.min_reference``
frames (13): a shorter reference (an image, a very short video) is padded at its start with its
first pose held over silence (a still head before the video starts).

Fine-tuning (``--finetune-steps N``, official ``--finetune``: `finetune_composer`): before
generating, a copy of Theta is trained for N steps on the reference frames themselves (official
``Vid2VidModel.finetune``: 70 iterations; each takes one random reference frame as the target, the
K references as references and reference 0 as the warped reference; its mesh render under the
target's pose as in `composer_inputs`), Adam (lr 2e-4, betas (0, 0.999): the official TTUR G rate;
D 8e-4), Theta and D in eval mode (the official demo calls ``model.eval()`` first: BatchNorm
statistics and spectral-norm vectors do not move). Only the parameters the official trains change:
those whose name contains ``fc``, ``conv_img`` or ``up`` (`FINETUNE_NAMES`; the official
``get_train_params`` matches these substrings on the full key, and our keys are the official ones,
so the same tensors: ``weight_gen.fc_*``, ``netG.up_*``, ``netG.conv_img``, ``label_embedding.up_*``,
``comb_encoder.ref_*_up_*`` and the flow networks' ``up_flow``; ones that never affect the output
stay frozen). Losses as the ``generator`` stage's with the `config.RhythmicLoss` weights: hinge GAN
and feature matching with the checkpoint's discriminator, updated in alternation as the official
(only when the checkpoint carries one: the ``generator`` / ``joint`` stages'; an official
``latest_net_G.pth`` has none, then those terms are left out), VGG19 x10 when its weight file is
present, flow-warp L1, face and mouth L1. The model the generator holds is not modified: each clip
fine-tunes its own copy.

Checkpoints (`load_model`):

* a Lightning checkpoint of `module.RhythmicModule` (default: ``runs/rhythmic/joint/checkpoints/
  last.ckpt`` of ``make train METHOD=rhythmic``): Psi, Phi and Theta from it (any stage holds all
  three, trained or not: the ``joint`` stage's are the trained ones; Psi's PCA must be fitted
  (``expression`` stage on) and Phi's normaliser too (``head_motion`` stage on));
* the official ``latest_net_G.pth`` (a ``.pth`` file or a folder holding it): Theta from it
  (`official.load_official`: 256 px, K = 8, the file's layout). The official release has no Psi (the
  audio->expression model was never released) and its Phi (RotateAudio) predicts the official RT,
  in units our poses and renderer do not use, so Psi and Phi always come from one of our trained
  checkpoints: a ``*.ckpt`` in the same folder as the ``.pth`` when there is one, else the default
  trained run (``joint``, ``generator`` or ``head_motion`` stage, the first found; each holds Psi and
  Phi trained); none found is a clear error. The frames are then 256 px (the official size) and the
  edge strokes 2 px. What cannot match the official pipeline: the refiner module (never released:
  its output is Theta's frame), PRNet's dense mesh (our 68-landmark mesh, `render.py`), the official
  preprocessing (their crop and landmarks: ours are the store's aligned 224 px faces) -- the
  official weights run on our inputs, untested against official outputs.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.generation import (SAMPLES_PER_FRAME, Control, Generator, ReferenceVideo, audio_and_length,
                                    default_checkpoint, load_lightning_weights, num_frames_for)
from talkinghead.methods.rhythmic.networks import (ComposerInputs, Rhythmic, RhythmicConfig, build_discriminator,
                                                   composer_inputs, frontal_landmarks, image_landmarks)

__all__ = ["CONTROLS", "FINETUNE_NAMES", "POSE_MODES", "RhythmicGenerator", "finetune_composer",
           "finetune_parameter_names", "generate", "image_reference", "load_model", "pick_references",
           "source_poses"]

POSE_MODES = ("audio", "source")
#: substrings of the composer parameter names the official fine-tuning trains (``train_names``)
FINETUNE_NAMES = ("fc", "conv_img", "up")
#: official ``Vid2VidModel.finetune``'s iteration count (the ``--finetune`` demo)
OFFICIAL_FINETUNE_STEPS = 70
CONTROLS = (
    Control("pose_source", "video", "video whose head poses drive the output (default: head motion predicted from "
                                    "the audio)"),
    Control("references", "int", "K reference frames among the reference video's, evenly spaced, the most frontal "
                                 "included (1 or the model's K; default the model's K)"),
    Control("finetune_steps", "int", f"fine-tune the generator on the reference frames for N steps first (the "
                                     f"official --finetune: {OFFICIAL_FINETUNE_STEPS}; default 0)", default=0),
)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def _official_file(path: Path) -> Path | None:
    """The official ``latest_net_G.pth`` `path` names (the file, or a folder holding it), else None."""
    from talkinghead.methods.rhythmic.official import FILE

    if path.is_dir():
        return path / FILE if (path / FILE).is_file() else None
    return path if path.suffix == ".pth" else None


def _trained_checkpoint(official: Path) -> Path | None:
    """Where Psi and Phi come from with an official Theta: a ``*.ckpt`` beside the ``.pth`` (the
    newest), else the default run's ``joint``, ``generator`` or ``head_motion`` checkpoint."""
    beside = sorted(official.parent.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime, str(p)))
    if beside:
        return beside[-1]
    for stage in ("joint", "generator", "head_motion"):
        found = default_checkpoint("rhythmic", stage)
        if found is not None:
            return found
    return None


def _discriminator_state(path: Path) -> dict | None:
    """The ``netD.*`` weights of a Lightning checkpoint (generator / joint stages), or None."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    state = {k[len("netD."):]: v for k, v in data.get("state_dict", {}).items() if k.startswith("netD.")}
    return state or None


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[Rhythmic, dict]:
    """A `Rhythmic` (eval mode, on `device`) and a description dict (kind, path, stage, ...,
    ``discriminator``: the checkpoint's netD state or None) from a Lightning checkpoint, or from the
    official ``latest_net_G.pth`` plus a trained checkpoint for Psi / Phi (module docstring)."""
    path = Path(checkpoint)
    official = _official_file(path)
    if official is not None or path.is_dir():
        from talkinghead.methods.rhythmic.official import config_from_state_dict, load_official, read_state_dict

        if official is None:
            raise FileNotFoundError(f"{path}: no latest_net_G.pth in this folder (a Rhythmic Head checkpoint is a "
                                    "Lightning .ckpt, or the official latest_net_G.pth)")
        trained = _trained_checkpoint(official)
        if trained is None:
            raise FileNotFoundError(
                f"{official}: the official Rhythmic Head release holds only the image generator; the expression "
                "learner Psi was never released and the official head-motion model predicts the official RT units, "
                "so Psi and Phi come from a checkpoint trained here: run `make train METHOD=rhythmic` (stages "
                "expression and head_motion at least) or put its .ckpt beside latest_net_G.pth")
        ours, info = load_lightning_weights(trained, "rhythmic", "Rhythmic Head",
                                            lambda values: Rhythmic(RhythmicConfig.from_dict(values)))
        composer_cfg = config_from_state_dict(read_state_dict(official), str(official))
        base = ours.config
        k = composer_cfg.n_shot if composer_cfg.hybrid else 1
        config = RhythmicConfig(image_size=composer_cfg.image_size, tau=base.tau, num_references=k,
                                pca_components=base.pca_components, edge_thickness=2.0 * composer_cfg.image_size / 256,
                                expression=base.expression, head_motion=base.head_motion, composer=composer_cfg,
                                discriminator=base.discriminator)
        model = Rhythmic(config)
        model.expression.load_state_dict(ours.expression.state_dict())
        model.head_motion.load_state_dict(ours.head_motion.state_dict())
        load_official(official, model.generator)
        return model.to(device).eval(), {"kind": "official", "path": str(official), "psi_phi": str(trained),
                                         "stage": info.get("stage"), "discriminator": None}
    model, info = load_lightning_weights(path, "rhythmic", "Rhythmic Head",
                                         lambda values: Rhythmic(RhythmicConfig.from_dict(values)))
    info["discriminator"] = _discriminator_state(path)
    return model.to(device).eval(), info


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def image_reference(image: torch.Tensor) -> ReferenceVideo:
    """A reference image (3, H, W) in [0, 1] (an aligned face) as a 1-frame `ReferenceVideo`
    without audio: landmarks detected on it (dlib), pose estimated. ValueError without a face."""
    from talkinghead.data import faces
    from talkinghead.metrics.image import frames_to_uint8

    points, found = faces.detect_landmarks(frames_to_uint8(image[None]))
    if not bool(np.asarray(found).any()):
        raise ValueError("the reference image shows no face the landmark detector finds")
    lm = np.asarray(points, np.float32)
    pose = faces.estimate_head_pose(lm)
    return ReferenceVideo(image[None], torch.from_numpy(lm), torch.from_numpy(np.asarray(pose, np.float32)))


def source_poses(frames: torch.Tensor, num_frames: int, smoothing: int) -> torch.Tensor:
    """Store-convention head poses (num_frames, 6) of driving frames (T', 3, H, W) in [0, 1] (aligned
    faces): dlib landmarks scaled to 224 px, frames without a face interpolated
    (`data.faces.fill_missing`), `estimate_head_pose`, smoothed with a Hanning window of `smoothing`
    frames (`motion.smooth_sequence`; 0 / 1: none); frame min(t, T' - 1) at t. ValueError when no
    frame has a face."""
    from talkinghead.data import faces
    from talkinghead.methods.rhythmic.motion import smooth_sequence
    from talkinghead.metrics.image import frames_to_uint8

    points, found = faces.detect_landmarks(frames_to_uint8(frames))
    found = np.asarray(found, bool)
    if not found.any():
        raise ValueError("the pose source shows no face the landmark detector finds")
    k = float(faces.ALIGN_SIZE) / float(frames.shape[-1])
    lm = (faces.fill_missing(np.asarray(points, np.float64), found) + 0.5) * k - 0.5
    poses = torch.from_numpy(np.asarray(faces.estimate_head_pose(lm), np.float32))
    if smoothing >= 3 and len(poses) > smoothing // 2:
        poses = smooth_sequence(poses, smoothing, dim=0).float()
    return poses[torch.clamp(torch.arange(num_frames), max=len(poses) - 1)]


def pick_references(poses: torch.Tensor, count: int) -> list[int]:
    """K = `count` reference frames among P with poses (P, 6): i * floor(P / K), i < K (evenly
    spaced, the official fine-tuning choice), with the pick nearest in time to the most frontal frame
    replaced by it (module docstring). Sorted; K <= P."""
    from talkinghead.methods.rhythmic.expression import most_frontal_index

    p = len(poses)
    if not 1 <= count <= p:
        raise ValueError(f"cannot pick {count} references among {p} reference frames")
    step = p // count
    picks = [i * step for i in range(count)]
    frontal = most_frontal_index(poses)
    if frontal not in picks:
        nearest = min(range(count), key=lambda i: (abs(picks[i] - frontal), i))
        picks[nearest] = frontal
    return sorted(picks)


def finetune_parameter_names(composer: torch.nn.Module) -> list[str]:
    """The composer parameters the official fine-tuning trains: name contains one of
    `FINETUNE_NAMES`, and the parameter can affect the output (``requires_grad``)."""
    return [n for n, p in composer.named_parameters() if p.requires_grad and any(s in n for s in FINETUNE_NAMES)]


def finetune_composer(model: Rhythmic, ref_images: torch.Tensor, ref_landmarks: torch.Tensor,
                      ref_poses: torch.Tensor, steps: int, discriminator_state: dict | None = None,
                      lr: float = 2e-4, d_lr: float = 8e-4, seed: int = 0) -> torch.nn.Module:
    """A copy of ``model.generator`` fine-tuned for `steps` steps on K reference frames (module
    docstring): ref_images (K, 3, S, S) in [-1, 1], ref_landmarks (K, 68, 2) S px, ref_poses (K, 6)
    store poses. Returns the tuned copy in eval mode; `model` is not modified. The targets are drawn
    with a generator seeded by `seed` (deterministic)."""
    from talkinghead.methods.rhythmic.config import RhythmicLoss
    from talkinghead.methods.rhythmic.module import face_mask
    from talkinghead.nn.losses import masked_l1
    from talkinghead.nn.losses import (discriminator_hinge_loss, feature_matching_loss, generator_hinge_loss,
                                       mouth_l1_loss)

    weights = RhythmicLoss()
    composer = copy.deepcopy(model.generator).eval()
    names = set(finetune_parameter_names(composer))
    params = []
    for name, p in composer.named_parameters():
        p.requires_grad_(name in names)
        if name in names:
            params.append(p)
    device = ref_images.device
    opt_g = torch.optim.Adam(params, lr=lr, betas=(0.0, 0.999))
    net_d = opt_d = None
    if discriminator_state is not None:
        net_d = build_discriminator(model.config).to(device).eval()
        net_d.load_state_dict(discriminator_state)
        opt_d = torch.optim.Adam(net_d.parameters(), lr=d_lr, betas=(0.0, 0.999))
    vgg = None
    if weights.vgg > 0:
        from talkinghead import weights as weight_files
        from talkinghead.nn.vgg import VGGPerceptualLoss

        try:
            with torch.random.fork_rng(devices=[]):
                vgg = VGGPerceptualLoss(pretrained=True).to(device)
        except weight_files.MissingWeightsError:
            vgg = None  # the VGG term is off without its weight file, as in training
    k = len(ref_images)
    rng = torch.Generator().manual_seed(int(seed))
    thickness = model.config.edge_thickness
    size = ref_images.shape[-1]
    for _ in range(int(steps)):
        idx = int(torch.randint(k, (1,), generator=rng))
        target = ref_images[idx:idx + 1]
        inputs = composer_inputs(ref_landmarks[idx:idx + 1], ref_poses[idx:idx + 1], ref_images, ref_landmarks,
                                 ref_poses, thickness)
        inputs = inputs._replace(warp_ref_label=inputs.ref_labels[:, 0], warp_ref_image=inputs.ref_images[:, 0])
        out = composer(inputs.label, inputs.ref_labels, inputs.ref_images, inputs.warp_ref_label,
                       inputs.warp_ref_image, inputs.ani_label, inputs.ani_image)
        fakes = [out.image] + ([out.raw] if weights.raw and out.raw is not None else [])

        def d_input(image: torch.Tensor) -> torch.Tensor:
            return torch.cat([inputs.warp_ref_label, inputs.warp_ref_image, inputs.label, image], dim=1)

        loss = target.new_zeros(())
        if net_d is not None:
            for p in net_d.parameters():
                p.requires_grad_(False)
            with torch.no_grad():
                pred_real = net_d(d_input(target))
            for fake in fakes:
                pred_fake = net_d(d_input(fake))
                loss = loss + generator_hinge_loss(pred_fake) * weights.gan
                loss = loss + feature_matching_loss(pred_fake, pred_real, first_weight=weights.image) * weights.feat
        if vgg is not None:
            loss = loss + sum(vgg(fake, target) for fake in fakes) * weights.vgg
        if out.warped_ref is not None:
            loss = loss + F.l1_loss(out.warped_ref, target) * weights.warp
        if out.warped_ani is not None:
            loss = loss + F.l1_loss(out.warped_ani, target * inputs.ani_mask) * weights.warp
        lm = ref_landmarks[idx:idx + 1].to(device)
        loss = loss + masked_l1(out.image, target, face_mask(lm, size)) * weights.face_l1
        loss = loss + mouth_l1_loss(out.image, target, lm, weights.mouth_margin) * weights.mouth_l1
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if net_d is not None:
            for p in net_d.parameters():
                p.requires_grad_(True)
            real_total = fake_total = target.new_zeros(())
            pred_real = net_d(d_input(target))
            for fake in fakes:
                d_real, d_fake = discriminator_hinge_loss(pred_real, net_d(d_input(fake.detach())))
                real_total, fake_total = real_total + d_real, fake_total + d_fake
            opt_d.zero_grad(set_to_none=True)
            ((real_total + fake_total) * weights.gan).backward()
            opt_d.step()
    for p in composer.parameters():
        p.requires_grad_(False)
    return composer.eval()


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------
class RhythmicGenerator(Generator):
    """Rhythmic Head: reference video + audio (+ pose source) -> talking-head video with head motion.

    A `Rhythmic` ready to generate (see the module docstring).

    model:        a `Rhythmic` with Psi's PCA and Phi's normaliser fitted.
    pose_mode:    what `generate(request)` uses for the head poses: "audio" (Phi, the request's
                  pose source ignored) or "source" (the request's pose_source, e.g. the clip's own
                  frames: ground-truth poses; Phi when the request has none).
    batch_size:   frames per composer call.
    discriminator: the checkpoint's netD state (fine-tuning's GAN terms), or None.
    finetune_lr:  Theta's fine-tuning learning rate (official TTUR G rate 2e-4; D 4x).
    """

    name = "rhythmic"
    controls = CONTROLS
    reference_video = True
    loop_sources = False

    def __init__(self, model: Rhythmic, *, device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
                 description: str = "", pose_mode: str = "audio", batch_size: int = 8,
                 discriminator: dict | None = None, finetune_lr: float = 2e-4):
        if pose_mode not in POSE_MODES:
            raise ValueError(f"pose_mode must be one of {POSE_MODES}, got {pose_mode!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(device=device, checkpoint=checkpoint, description=description)
        self.model = model.to(self.device).eval()
        self.pose_mode = pose_mode
        self.batch_size = int(batch_size)
        self.discriminator = discriminator
        self.finetune_lr = float(finetune_lr)
        self.max_reference_frames = int(model.config.tau)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | None, device: str | torch.device = "cpu",
                        **kwargs) -> "RhythmicGenerator":
        if checkpoint is None:
            raise FileNotFoundError("Rhythmic Head needs a checkpoint: run `make train METHOD=rhythmic` or pass "
                                    "--checkpoint")
        model, info = load_model(checkpoint, device)
        cfg = model.config
        if info["kind"] == "official":
            description = (f"Rhythmic Head: official latest_net_G.pth ({cfg.image_size} px, K {cfg.num_references}) "
                           f"with Psi / Phi of {info['psi_phi']}")
        else:
            description = (f"Rhythmic Head ({info.get('name')}, {info.get('stage')} stage, step "
                           f"{info.get('global_step')}, {cfg.image_size} px, tau {cfg.tau}, K {cfg.num_references})")
        kwargs.setdefault("discriminator", info.get("discriminator"))
        return cls(model, device=device, checkpoint=checkpoint, description=description, **kwargs)

    # ----------------------------------------------------------------------------- pieces
    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    def _frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, S, S) in [-1, 1] on the device."""
        s = self.image_size
        x = frames.to(self.device, torch.float32)
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=x.shape[-1] > s)
        return x * 2.0 - 1.0

    def _points(self, landmarks: torch.Tensor, width: int) -> torch.Tensor:
        """Landmarks in the pixels of a `width`-px frame -> pixels of the S-px frame (pixel centres)."""
        k = self.image_size / float(width)
        return (landmarks.float() + 0.5) * k - 0.5

    def predicted_poses(self, video: ReferenceVideo, audio: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Phi's (T, 6) store poses for `num_frames` driving frames of `audio` (N,) after the reference
        video (its poses, and its audio or silence; padded to Phi's min_reference, module docstring)."""
        from talkinghead.methods.rhythmic.motion import motion_audio_frames, smooth_sequence

        hcfg = self.model.config.head_motion
        poses = video.poses.float()
        ref_audio = video.audio if video.audio is not None else torch.zeros(len(video) * SAMPLES_PER_FRAME)
        missing = max(0, hcfg.min_reference - len(poses))
        if missing:
            poses = torch.cat([poses[:1].expand(missing, -1), poses])
            ref_audio = torch.cat([torch.zeros(missing * SAMPLES_PER_FRAME), ref_audio])
        p = len(poses)
        if hcfg.pose_smoothing >= 3:
            poses = smooth_sequence(poses, hcfg.pose_smoothing, dim=0).float()
        drive = torch.zeros(num_frames * SAMPLES_PER_FRAME)
        n = min(len(audio), len(drive))
        drive[:n] = audio[:n].float()
        windows = motion_audio_frames(torch.cat([ref_audio.float(), drive]), p + num_frames, hcfg).to(self.device)
        return self.model.extrapolate_poses(poses[None].to(self.device), windows[None, :p],
                                            windows[None, p:])[0].float()

    def predicted_frontal(self, video: ReferenceVideo, audio: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Psi's frontal landmarks (T, 68, 2) (canonical units) of the driving frames: mel of the
        reference audio (when there is one) followed by the driving audio; identity = the most frontal
        reference frame's frontal landmarks."""
        from talkinghead.data.audio import mel_spectrogram
        from talkinghead.methods.rhythmic.expression import expression_mel_windows, most_frontal_index

        ecfg = self.model.config.expression
        t_m = most_frontal_index(video.poses)
        width = int(video.frames.shape[-1])
        identity = frontal_landmarks(self._points(video.landmarks[t_m:t_m + 1], width), video.poses[t_m:t_m + 1],
                                     self.image_size)
        drive = torch.zeros(num_frames * SAMPLES_PER_FRAME)
        n = min(len(audio), len(drive))
        drive[:n] = audio[:n].float()
        if video.audio is not None:
            wav, offset = torch.cat([video.audio.float(), drive]), len(video)
        else:
            wav, offset = drive, 0
        mel = mel_spectrogram(wav)
        windows = expression_mel_windows(mel, offset + num_frames, ecfg.context)[offset:]
        return self.model.predict_frontal(windows[None].to(self.device), identity.to(self.device))[0]

    # ----------------------------------------------------------------------------- generation
    @torch.no_grad()
    def synthesize(self, reference: torch.Tensor, audio: torch.Tensor | np.ndarray, num_frames: int | None = None,
                   pose_source: torch.Tensor | None = None, *, references: int | None = None,
                   finetune_steps: int | None = 0, reference_video: ReferenceVideo | None = None
                   ) -> Iterator[torch.Tensor]:
        """Yield generated frames in chunks of (n, 3, H, W), in [0, 1], on the CPU ((H, W) the
        reference's).

        reference: (3, H, W) aligned face in [0, 1] (the reference video's first frame);
        audio: (N,) 16 kHz in [-1, 1]; num_frames: T (None: `num_frames_for(N)`);
        pose_source: (T', 3, H, W) aligned frames whose poses drive the head (frame min(t, T' - 1) at
        t), None = Phi's poses from the audio; references: K (None: the model's K; 1 or the model's
        K); finetune_steps: fine-tune a copy of Theta first (0: no); reference_video: the reference
        video (None: `reference` as a 1-frame one).
        """
        audio, t_total = audio_and_length(audio, num_frames)
        cfg = self.model.config
        video = reference_video.first(self.max_reference_frames) if reference_video is not None \
            else image_reference(reference)
        k = cfg.num_references if references is None else int(references)
        if k not in (1, cfg.num_references):
            raise ValueError(f"references must be 1 or the model's K = {cfg.num_references}, got {k} (the hybrid "
                             "embedding is built for K references)")
        if k > len(video):
            if references is not None:
                raise ValueError(f"references = {k} but the reference video has {len(video)} frame(s)")
            k = 1  # an image / a short video: one reference
        steps = int(finetune_steps or 0)
        if steps < 0:
            raise ValueError(f"finetune_steps must be >= 0, got {steps}")
        size = tuple(reference.shape[-2:])
        width = int(video.frames.shape[-1])

        # head poses (store convention) and Psi's landmarks of the T driving frames
        if pose_source is not None and len(pose_source):
            poses = source_poses(pose_source, t_total, cfg.head_motion.pose_smoothing).to(self.device)
        else:
            poses = self.predicted_poses(video, audio, t_total)
        frontal = self.predicted_frontal(video, audio, t_total)
        target_lm = image_landmarks(frontal, poses, self.image_size)

        # the K references
        picks = pick_references(video.poses, k)
        ref_images = self._frames(video.frames[picks])
        ref_lm = self._points(video.landmarks[picks], width)
        ref_poses = video.poses[picks].float()
        composer = self.model.generator
        if steps:
            with torch.enable_grad():
                composer = finetune_composer(self.model, ref_images, ref_lm, ref_poses, steps, self.discriminator,
                                             lr=self.finetune_lr, d_lr=4 * self.finetune_lr)
        for start in range(0, t_total, self.batch_size):
            stop = min(t_total, start + self.batch_size)
            inputs: ComposerInputs = composer_inputs(target_lm[start:stop], poses[start:stop].cpu(), ref_images, ref_lm,
                                                     ref_poses, cfg.edge_thickness)
            out = composer(inputs.label, inputs.ref_labels, inputs.ref_images, inputs.warp_ref_label,
                           inputs.warp_ref_image, inputs.ani_label, inputs.ani_image)
            frames = ((out.image.float() + 1.0) * 0.5).clamp(0.0, 1.0)
            if tuple(frames.shape[-2:]) != size:
                frames = F.interpolate(frames, size=size, mode="bicubic", align_corners=False,
                                       antialias=frames.shape[-1] > size[-1])
            yield frames.clamp(0.0, 1.0).cpu()

    def request_sources(self, request) -> dict:
        """`generate(request)`'s keywords: the request's reference video (the protocol's reference
        frames, or None) and, with ``pose_mode="source"``, its pose source (else Phi's poses)."""
        sources = super().request_sources(request)
        if self.pose_mode == "audio":
            sources["pose_source"] = None
        return sources


# ---------------------------------------------------------------------------------------------
# files in, mp4 out
# ---------------------------------------------------------------------------------------------
def generate(checkpoint: str | Path, reference: str | Path, audio: str | Path, out: str | Path, *,
             pose_source: str | Path | None = None, references: int | None = None, finetune_steps: int = 0,
             device: str = "cpu", batch_size: int = 8) -> Path:
    """Write `out` (mp4, 25 fps, 224 px aligned face, with the driving audio); returns its path.

    checkpoint: a Rhythmic Head Lightning checkpoint, or the official latest_net_G.pth (module
    docstring); reference: a video (its first tau frames) or an image; audio: any file ffmpeg reads;
    pose_source: a video whose head poses drive the output; references: K; finetune_steps: N.
    """
    values = {"pose_source": pose_source, "references": references, "finetune_steps": int(finetune_steps)}
    RhythmicGenerator.check_inputs(reference, audio, **values)
    generator = RhythmicGenerator.from_checkpoint(checkpoint, device, batch_size=batch_size)
    return generator.generate_file(reference, audio, out, **values)
