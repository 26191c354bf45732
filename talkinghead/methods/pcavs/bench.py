"""PC-AVS's bench rows (declared in `talkinghead.methods.pcavs.method`, listed by the registry).

* ``pcavs``: our PC-AVS from a Lightning checkpoint; without ``--checkpoint`` the final full-stage
  checkpoint of ``make train METHOD=pcavs`` (``runs/pcavs/full/checkpoints/last.ckpt``; the
  runs folder follows ``$TALKINGHEAD_RUNS``). A folder with the official
  ``latest_net_{G,V,E,A_sync}.pth`` given as the checkpoint loads the published model instead.
* ``pcavs_fixed_pose``: the same model and default checkpoint as ``pcavs``, with
  ``pose_mode="fixed"``: the reference's pose code for every frame, the request's pose source
  ignored (the paper's "Ours-Fix Pose" row). Against ``pcavs`` on the ``synth-pose`` protocol
  (LMD-pose) it shows whether the pose code transfers head pose.
* ``pcavs_official``: the published checkpoint through `talkinghead.weights`
  (``$TALKINGHEAD_HOME/pcavs/latest_net_*.pth``) with the official preprocessing (loader crop,
  audio feature x 1.2); a folder can be given as its checkpoint.

``pcavs`` and ``pcavs_official`` take the pose from the request's ``pose_source`` (the clip's own
frames in the self-driven protocols), as the paper's "PC-AVS" row.
"""
from __future__ import annotations

from pathlib import Path

from talkinghead.methods.pcavs.generate import PCAVSGenerator

__all__ = ["build", "build_fixed_pose", "build_official"]

def _require(checkpoint: Path | None, row: str) -> Path:
    if checkpoint is None:
        raise FileNotFoundError(f"PC-AVS needs a checkpoint: run `make train METHOD=pcavs` or pass "
                                f"--checkpoint {row}=PATH")
    return checkpoint


def build(checkpoint: Path | None, device: str) -> PCAVSGenerator:
    """PC-AVS (ours, Lightning)."""
    return PCAVSGenerator.from_checkpoint(_require(checkpoint, "pcavs"), device)


def build_fixed_pose(checkpoint: Path | None, device: str) -> PCAVSGenerator:
    """PC-AVS (ours), fixed pose."""
    generator = PCAVSGenerator.from_checkpoint(_require(checkpoint, "pcavs_fixed_pose"), device, pose_mode="fixed")
    generator.name = "pcavs_fixed_pose"
    generator.description = f"{generator.description}; fixed pose (the reference's pose code for every frame)"
    return generator


def build_official(checkpoint: Path | None, device: str) -> PCAVSGenerator:
    """PC-AVS, the published checkpoint."""
    from talkinghead.methods.pcavs.official import load_official

    model = load_official(checkpoint)
    generator = PCAVSGenerator(model, device=device, checkpoint=checkpoint, crop="loader",
                               description="PC-AVS official checkpoint (latest_net_*.pth)")
    generator.name = "pcavs_official"
    return generator
