"""Benchmark hook: registers PC-AVS with `talkinghead.bench` (imported by `build_method("pcavs")`).

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

``pcavs`` and ``pcavs_official`` take the pose from the request's ``pose_source`` (the clip's own frames in the self-driven
protocols), as the paper's "PC-AVS" row; ``pcavs_fixed_pose`` is the paper's "Ours-Fix Pose"
row, `PCAVSGenerator(pose_mode="fixed")`. ``pcavs_fixed_pose`` and ``pcavs_official`` have no
package of their own: `talkinghead.bench.methods` finds them by importing this hook.
"""
from __future__ import annotations

from pathlib import Path

from talkinghead.bench.methods import register_method, runs_root
from talkinghead.methods.pcavs.generate import PCAVSGenerator

__all__ = ["FIXED_POSE_DESCRIPTION", "build", "build_fixed_pose", "build_official", "default_checkpoint"]

FIXED_POSE_DESCRIPTION = ("PC-AVS (ours), fixed pose: the reference's pose code for every frame "
                          "(paper's Ours-Fix Pose)")


def default_checkpoint() -> Path | None:
    """``<runs>/pcavs/full/checkpoints/last.ckpt``, else the newest full-stage ``*.ckpt`` under it."""
    folder = runs_root() / "pcavs" / "full" / "checkpoints"
    last = folder / "last.ckpt"
    if last.is_file():
        return last
    found = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime, str(p))) if folder.is_dir() else []
    return found[-1] if found else None


@register_method("pcavs", needs_checkpoint=True, find_checkpoint=default_checkpoint,
                 description="PC-AVS (ours, Lightning; pose from the pose source)")
def build(checkpoint: Path | None, device: str) -> PCAVSGenerator:
    """PC-AVS (ours, Lightning)."""
    if checkpoint is None:
        raise FileNotFoundError("PC-AVS needs a checkpoint: run `make train METHOD=pcavs` or pass --checkpoint pcavs=PATH")
    return PCAVSGenerator.from_checkpoint(checkpoint, device)


@register_method("pcavs_fixed_pose", needs_checkpoint=True, find_checkpoint=default_checkpoint,
                 description=FIXED_POSE_DESCRIPTION)
def build_fixed_pose(checkpoint: Path | None, device: str) -> PCAVSGenerator:
    """PC-AVS (ours), fixed pose."""
    if checkpoint is None:
        raise FileNotFoundError("PC-AVS needs a checkpoint: run `make train METHOD=pcavs` or pass "
                                "--checkpoint pcavs_fixed_pose=PATH")
    generator = PCAVSGenerator.from_checkpoint(checkpoint, device, pose_mode="fixed")
    generator.name = "pcavs_fixed_pose"
    generator.description = f"{generator.description}; fixed pose (the reference's pose code for every frame)"
    return generator


@register_method("pcavs_official", description="PC-AVS official checkpoint (published weights)")
def build_official(checkpoint: Path | None, device: str) -> PCAVSGenerator:
    """PC-AVS, the published checkpoint."""
    from talkinghead.methods.pcavs.official import load_official

    model = load_official(checkpoint)
    generator = PCAVSGenerator(model, device=device, checkpoint=checkpoint, crop="loader",
                               description="PC-AVS official checkpoint (latest_net_*.pth)")
    generator.name = "pcavs_official"
    return generator
