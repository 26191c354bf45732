"""PD-FGC's bench rows (declared in `talkinghead.methods.pdfgc.method`, listed by the registry).

* ``pdfgc``: our PD-FGC from a Lightning checkpoint; without ``--checkpoint`` the final
  expression-stage checkpoint of ``make train METHOD=pdfgc``
  (``runs/pdfgc/expression/checkpoints/last.ckpt``; the runs folder follows ``$TALKINGHEAD_RUNS``).
  Pose, eyes and emotion come from the request's ``pose_source`` / ``eye_source`` /
  ``emotion_source`` (the clip's own frames in the self-driven protocols, another clip's in the
  cross-driven ones). A folder with the official ``*_model.pth`` files given as the checkpoint
  loads the published model instead.
* ``pdfgc_fixed_pose``: the same model and default checkpoint, with ``pose_mode="fixed"``: the
  reference's pose code for every frame, the request's pose source ignored (eyes and emotion still
  from the request). Against ``pdfgc`` on the ``synth-pose`` protocol it shows whether the pose
  code transfers head pose.
"""
from __future__ import annotations

from pathlib import Path

from talkinghead.methods.pdfgc.generate import PDFGCGenerator

__all__ = ["build", "build_fixed_pose"]


def _require(checkpoint: Path | None, row: str) -> Path:
    if checkpoint is None:
        raise FileNotFoundError(f"PD-FGC needs a checkpoint: run `make train METHOD=pdfgc` or pass "
                                f"--checkpoint {row}=PATH")
    return checkpoint


def build(checkpoint: Path | None, device: str) -> PDFGCGenerator:
    """PD-FGC (ours, Lightning)."""
    return PDFGCGenerator.from_checkpoint(_require(checkpoint, "pdfgc"), device)


def build_fixed_pose(checkpoint: Path | None, device: str) -> PDFGCGenerator:
    """PD-FGC (ours), fixed pose."""
    generator = PDFGCGenerator.from_checkpoint(_require(checkpoint, "pdfgc_fixed_pose"), device, pose_mode="fixed")
    generator.name = "pdfgc_fixed_pose"
    generator.description = f"{generator.description}; fixed pose (the reference's pose code for every frame)"
    return generator
