"""PD-FGC's bench rows (declared in `talkinghead.methods.pdfgc.method`, listed by the registry).

* ``pdfgc``: our PD-FGC from a Lightning checkpoint; without ``--checkpoint`` the final
  expression-stage checkpoint of ``make train METHOD=pdfgc``
  (``runs/pdfgc/expression/checkpoints/last.ckpt``; the runs folder follows ``$TALKINGHEAD_RUNS``).
  Pose, eyes and emotion come from the request's ``pose_source`` / ``eye_source`` /
  ``emotion_source`` (the clip's own frames in the self-driven protocols, another clip's in the
  cross-driven ones). A folder with the official ``*_model.pth`` files given as the checkpoint
  loads the published model instead.
* ``pdfgc_fixed_pose`` / ``pdfgc_fixed_eye`` / ``pdfgc_fixed_emotion``: the same model and default
  checkpoint with one factor fixed (`PDFGCGenerator`'s ``fixed``): the reference's own code for
  every frame, the request's source for that factor ignored (the other factors still follow the
  request). Against ``pdfgc`` on the protocol that drives that factor from another clip
  (``synth-pose`` / ``synth-large-pose``, ``synth-eye``, ``synth-emotion``) it shows whether the
  factor's code transfers it: the issue's "control error below the same model with that factor fixed".
"""
from __future__ import annotations

from pathlib import Path

from talkinghead.methods.pdfgc.generate import PDFGCGenerator

__all__ = ["build", "build_fixed_emotion", "build_fixed_eye", "build_fixed_pose"]


def _require(checkpoint: Path | None, row: str) -> Path:
    if checkpoint is None:
        raise FileNotFoundError(f"PD-FGC needs a checkpoint: run `make train METHOD=pdfgc` or pass "
                                f"--checkpoint {row}=PATH")
    return checkpoint


def build(checkpoint: Path | None, device: str) -> PDFGCGenerator:
    """PD-FGC (ours, Lightning)."""
    return PDFGCGenerator.from_checkpoint(_require(checkpoint, "pdfgc"), device)


def _build_fixed(factor: str, checkpoint: Path | None, device: str) -> PDFGCGenerator:
    row = f"pdfgc_fixed_{factor}"
    generator = PDFGCGenerator.from_checkpoint(_require(checkpoint, row), device, fixed=(factor,))
    generator.name = row
    generator.description = f"{generator.description}; fixed {factor} (the reference's {factor} code for every frame)"
    return generator


def build_fixed_pose(checkpoint: Path | None, device: str) -> PDFGCGenerator:
    """PD-FGC (ours), fixed pose."""
    return _build_fixed("pose", checkpoint, device)


def build_fixed_eye(checkpoint: Path | None, device: str) -> PDFGCGenerator:
    """PD-FGC (ours), fixed eyes (blinks and gaze)."""
    return _build_fixed("eye", checkpoint, device)


def build_fixed_emotion(checkpoint: Path | None, device: str) -> PDFGCGenerator:
    """PD-FGC (ours), fixed emotion."""
    return _build_fixed("emotion", checkpoint, device)
