"""Rhythmic Head's bench rows (to be declared in `talkinghead.methods.rhythmic.method`, listed by the
registry).

* ``rhythmic``: our Rhythmic Head from a Lightning checkpoint; without ``--checkpoint`` the final
  ``joint``-stage checkpoint of ``make train METHOD=rhythmic``
  (``runs/rhythmic/joint/checkpoints/last.ckpt``; the runs folder follows ``$TALKINGHEAD_RUNS``).
  Expression (Psi) and head motion (Phi) from the audio; the request's pose source is ignored. On a
  protocol with reference frames (``synth-rhythmic``, ``synth-large-rhythmic``: the paper's setting,
  "the first tau frames are the reference video, scored on the rest") the reference video is the
  clip's first frames; on the other protocols the reference image is a 1-frame reference video (K =
  1, Phi's reference motion that frame's pose held still).
* ``rhythmic_gt_pose``: the same model and default checkpoint with ``pose_mode="source"``: head poses
  estimated from the request's pose source (self-driven: the clip's own frames, i.e. the ground-truth
  head motion; the paper's pose-driven setting), expression still from the audio. Against
  ``rhythmic`` it separates the head-motion learner's error from the generator's.

Head-motion baselines for these protocols are generic (`talkinghead.bench.methods`): ``static`` (no
motion) and ``reference_replay`` (the reference video's own motion replayed).
"""
from __future__ import annotations

from pathlib import Path

from talkinghead.methods.rhythmic.generate import RhythmicGenerator

__all__ = ["build", "build_gt_pose"]


def _require(checkpoint: Path | None, row: str) -> Path:
    if checkpoint is None:
        raise FileNotFoundError(f"Rhythmic Head needs a checkpoint: run `make train METHOD=rhythmic` or pass "
                                f"--checkpoint {row}=PATH")
    return checkpoint


def build(checkpoint: Path | None, device: str) -> RhythmicGenerator:
    """Rhythmic Head (ours, Lightning): head motion and expression from the audio."""
    return RhythmicGenerator.from_checkpoint(_require(checkpoint, "rhythmic"), device, pose_mode="audio")


def build_gt_pose(checkpoint: Path | None, device: str) -> RhythmicGenerator:
    """Rhythmic Head (ours), head poses of the request's pose source (ground truth when self-driven)."""
    generator = RhythmicGenerator.from_checkpoint(_require(checkpoint, "rhythmic_gt_pose"), device,
                                                  pose_mode="source")
    generator.name = "rhythmic_gt_pose"
    generator.description = f"{generator.description}; head poses of the request's pose source (ground truth)"
    return generator
