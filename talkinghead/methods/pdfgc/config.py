"""PD-FGC config schema: the keys of experiments/pdfgc/*.yaml, their types and defaults.

Three stages (`talkinghead.methods.pdfgc.module`): ``motion`` (appearance / motion
disentanglement), ``fine`` (lip, eye, pose branches), ``expression`` (emotion branch + the final
generator). ``base.yaml`` holds the paper settings; ``synth.yaml`` (CPU SynthTalk) and ``tiny.yaml``
(tests, smoke runs) inherit it (`talkinghead.config`).

Schema defaults are the *official* training config (reference-facts "PD-FGC official inference,
details"): Adam betas (0, 0.99), lr 1e-4, weight decay 1e-3, StepLR(80k, 0.93), loss weights
feat 10, vgg 10, contrastive 100, L1 1. Where the paper's appendix A.2 gives a stage's own
learning rates and decay, ``base.yaml`` uses those. No ``from __future__ import annotations``:
OmegaConf reads the real annotations.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from talkinghead.config import optional_fields
from talkinghead.training.config import RunConfig, StageConfig

__all__ = ["PDFGCData", "PDFGCLoss", "PDFGCOptim", "PDFGCRunConfig", "PDFGCStage"]


@dataclass
class PDFGCLoss:
    """Loss weights and switches of every stage (a stage uses the ones it needs; paper / official noted)."""

    # -- image synthesis (motion stage: G_0; expression stage: G)
    gan: float = 1.0               # hinge GAN, 2-scale patch discriminator
    feat: float = 10.0             # discriminator feature matching (official x10)
    image: float = 1.0             # weight of FM's first term (the image itself)
    vgg: float = 10.0              # VGG19 perceptual (official x10; paper eq. 7); off without the VGG19 file
    l1: float = 1.0                # pixel L1 (official x1)
    mouth_l1: float = 0.0          # pixel L1 inside the mouth box (in neither paper nor official code;
                                   # the CPU config's aid, as PC-AVS's: see `talkinghead.nn.losses.mouth_l1_loss`)
    mouth_margin: float = 0.35     # mouth box = landmarks 48-67 box grown by this fraction of its width
    eye_l1: float = 0.0            # pixel L1 inside the box of both eyes (the mouth box's twin for blinks and
                                   # gaze; in neither paper nor official code: `talkinghead.nn.losses.eye_l1_loss`)
    eye_margin: float = 0.1        # eye box = landmarks 36-47 box grown by this fraction of its width
    eye_l1_closure: float = 0.0    # each frame's eye-box L1 counts 1 + this x its eye closure (landmark EAR):
                                   # blink frames weighted up (`eye_l1_loss`; in neither paper; k = 10 and 50
                                   # did not make G draw blinks in the CPU budget: README, PD-FGC)
    identity: float = 1.0          # motion stage: cross-entropy of E_app's ``fc`` over the train speakers
    motion_landmarks: float = 0.0  # motion stage: the motion-reconstruction loss L_mot (paper eq. 1) with a
                                   # landmark network in place of EMOCA's 3D reconstruction: squared distance
                                   # (output pixels^2, mean over the 68 points) of its landmarks on G_0's
                                   # output from those on the real frame; no emotion-network term
                                   # (`PDFGCModule`, `talkinghead.nn.landmarks.LandmarkNet`); 0: off
    landmark_fit: float = 1.0      # motion stage, with motion_landmarks: L1 (output pixels) of the landmark
                                   # network on the real frames to the store's landmarks, its own optimiser
    # -- fine stage
    lip: float = 100.0             # audio-visual InfoNCE, both directions (official contrastive x100)
    eye: float = 1.0               # eye-region contrastive InfoNCE (paper eq. 4; no weight given)
    eye_prior: float = 0.0         # L1 of E_eye's dims 0-3 to the frame's measured eye state (closure of the
                                   # left / right eye, gaze x / y: `talkinghead.metrics.factors.eye_state`) for
                                   # the base frame, the donor and the anchor (the donor's state), both as
                                   # changes from their window's mean (`module.window_centred_l1`); in neither
                                   # paper nor official code (paper: the region contrastive alone), the
                                   # landmark substitute for its gaze-estimator prior: 0 in the paper configs
    eye_prior_scale: List[float] = field(default_factory=lambda: [5.0, 5.0, 20.0, 20.0])
                                   # target = eye state x this (closure spreads about 0.2, gaze 0.05 eye widths
                                   # on SynthTalk; the lid brightness about as much as the closure / 5)
    eye_prior_closure: str = "landmarks"  # the eye prior's closure: "landmarks" (1 - EAR / 0.3 on dlib's
                                   # points) or "lid" (`metrics.factors.lid_brightness`, read from the pixels)
    pose: float = 1.0              # L1 to the pose prior (paper eq. 5; no weight given)
    temperature: float = 1.0       # InfoNCE temperature (paper: plain cosine, i.e. 1)
    min_shift: int = 5             # same-clip frames at least this far apart are lip negatives
    lip_other_clips: bool = False  # also use other clips' frames as lip negatives ([77]); paper A.2:
                                   # same-clip, unsynchronised pairs only
    pose_offset: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 112.0, 112.0, 0.0])
    pose_scale: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 0.01, 0.01, 1.0])
                                   # pose prior target = (stored pose - offset) * scale: rotation vector
                                   # (rad), tx, ty (224-px aligned pixels, centred, / 100), log scale
    pose_standardise: bool = False # fine stage: pose_offset / pose_scale = the train split's per-dimension
                                   # pose mean / 1 / std instead (each target dimension of unit variance)
    # -- expression stage
    decorrelation: float = 1.0     # lip-motion decorrelation (paper eq. 6) over the memory banks
    motion: float = 1.0            # motion consistency (paper eq. 8, with the substitutes of the module docstring)


@dataclass
class PDFGCOptim:
    """Optimiser settings of one stage (Adam; one StepLR per optimiser, stepped every batch)."""

    lr: float = 1.0e-4             # every optimiser but the discriminator (official 1e-4)
    d_lr: Optional[float] = None   # discriminator lr (None: lr)
    betas: List[float] = field(default_factory=lambda: [0.0, 0.99])  # official
    weight_decay: float = 1.0e-3   # official
    step_size: int = 80000         # StepLR period in batches (official 80k)
    gamma: float = 0.93            # StepLR factor (official 0.93; paper A.2: 0.5 except the lip branch)
    schedule: Dict[str, List[float]] = field(default_factory=dict)  # optimiser -> [step_size, gamma]
    group_lr: Dict[str, float] = field(default_factory=dict)  # group -> its own lr (e.g. expression 1e-5,
                                   # generator 2e-5 in the paper's expression stage)
    freeze: List[str] = field(default_factory=list)     # groups kept fixed in this stage
    lr_mult: Dict[str, float] = field(default_factory=dict)  # group -> factor on what an earlier stage trained
    expression_steps: Optional[int] = None  # expression stage: E_exp trains for this many batches, then
                                   # stays fixed (paper 40k); None: throughout


@dataclass
class PDFGCData:
    """`TalkingHeadDataModule` arguments shared by the stages."""

    train_split: str = "train"
    window: int = 1                # target frames per sample
    frame_step: int = 1            # frames between them (1: consecutive; fine stage: >= min_shift makes
                                   # every other frame of the window a lip negative, both directions)
    num_references: int = 1
    num_negatives: int = 0         # explicit audio windows of other clips (fine stage)
    num_shifted: int = 0           # explicit time-shifted audio windows of the same clip (fine stage)
    min_shift: int = 5
    augment: str = "none"          # none | pdfgc (colour jitter + perspective of the motion branch's input)
    eye_pairs: bool = False        # fine stage: eye donor / anchor frames
    eye_donor: str = "other_clip"  # fine stage: the eye donor from another clip (paper: another person) or
                                   # from the same clip min_shift+ frames away ("same_clip": same person)
    in_window: int = 0             # expression stage: frames of the in-window average (paper 13)
    num_workers: int = 0
    source: str = "store"          # store | shards


PDFGCDataOverrides = optional_fields(PDFGCData, "PDFGCDataOverrides")


@dataclass
class PDFGCStage(StageConfig):
    data: PDFGCDataOverrides = field(default_factory=PDFGCDataOverrides)  # None = the shared `data` value
    optim: PDFGCOptim = field(default_factory=PDFGCOptim)
    loss: PDFGCLoss = field(default_factory=PDFGCLoss)
    trunk: List[str] = field(default_factory=list)  # fine stage: branches (lip, eye, pose) whose losses
                                   # also train E_mot's trunk (group "trunk", one optimiser "fine");
                                   # paper: none, the trunk is fixed after the motion stage
    generator_init: str = "scratch"  # expression stage: scratch (paper) | stage1 = G starts from the motion
                                   # stage's G_0 (its tensors of G's shapes; the style affines from G_0's
                                   # appearance columns, the codes' columns zero)


@dataclass
class PDFGCRunConfig(RunConfig):
    name: str = "pdfgc"
    model: Dict[str, Any] = field(default_factory=lambda: {"preset": "paper"})  # PDFGCConfig: preset
                                   # paper|tiny plus field overrides
    bank_size: int = 512           # expression stage: memory-bank size M of the lip-motion decorrelation (paper 512)
    data: PDFGCData = field(default_factory=PDFGCData)
    motion: PDFGCStage = field(default_factory=PDFGCStage)
    fine: PDFGCStage = field(default_factory=PDFGCStage)
    expression: PDFGCStage = field(default_factory=PDFGCStage)
